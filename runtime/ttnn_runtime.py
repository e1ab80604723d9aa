"""The "ttnn" runtime of `joint_attention`: the op on Tenstorrent devices through ttnn (see `runtime/ttnn/`).

Forward: `jointattn.runtime.ttnn.lowering.joint_sdpa` on one device, or `ring_joint_sdpa` when
`jointattn.runtime.ttnn.config` has ring_size >= 2; both write out, joint_out and lse. ttnn's joint SDPA returns
no log-sum-exp: the lowering gets it, exactly and in the same device call, from two extra value channels and
sink tokens (`runtime/ttnn/packing.py`), on one device and on a ring alike.
Backward: ttnn has no backward for these ops, so the gradients are the exact reference backward
(`reference.reference_backward`), computed on the host from the saved inputs.

`JOINTATTN_TTNN=emulate` runs all of it on the CPU emulation of ttnn (`jointattn.testing.ttnn_emulation`);
without it the real `ttnn` module is imported, and when that fails the runtime says why instead of running
anything else.
"""

from __future__ import annotations

from .reference_runtime import ReferenceRuntime
from .ttnn import config
from .ttnn.module import load_ttnn, unavailable_reason


class TtnnRuntime:
    name = "ttnn"

    def unsupported(self, call) -> str | None:
        reason = unavailable_reason()
        if reason is not None:
            return reason
        if call.q.device.type != "cpu":
            return f"the ttnn runtime takes CPU tensors (it uploads them with ttnn.from_torch); got {call.q.device}"
        if call.scale <= 0:
            return f"ttnn's kernels fold the scale into exp((s - max) * scale) with the max of unscaled scores; scale {call.scale} <= 0"
        settings = config.current()
        available = load_ttnn().get_num_devices()
        if available < settings.ring_size:
            what = "no Tenstorrent device" if available == 0 else f"{available} Tenstorrent device(s)"
            return f"{what} (ttnn.get_num_devices() is {available}); the call needs {settings.ring_size}"
        s = call.shape
        try:
            config.sdpa_chunk_sizes(s.n, s.l, s.dh, b=s.b, nh=s.nh)
        except ValueError as error:
            return str(error)
        return None

    def forward(self, call, out, joint_out, lse) -> None:
        from .ttnn import lowering

        ring = config.current().ring_size
        kwargs = dict(scale=call.scale, logical_n=call.logical_n, logical_l=call.logical_l)
        if ring > 1:
            o, jo, m = lowering.ring_joint_sdpa(*call.tensors, ring_size=ring, **kwargs)
        else:
            o, jo, m = lowering.joint_sdpa(*call.tensors, **kwargs)
        out.copy_(o)
        joint_out.copy_(jo)
        lse.copy_(m)

    def backward(self, call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse):
        # ttnn has no backward for these ops: the exact reference gradients, on the host.
        return ReferenceRuntime().backward(call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse)
