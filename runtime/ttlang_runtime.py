"""The "ttlang" runtime of `joint_attention`: the op as TT-Lang kernels (`jointattn.kernels.ttlang`).

Forward: `jointattn.runtime.ttlang.lowering.joint_attention`: one launch of the joint-attention operation, or
with `jointattn.runtime.ttlang.config.set_defaults(ring_size=R)` ring attention over R devices; on a Tenstorrent
device through the TT-Lang compiler, or on tt-lang-sim with `JOINTATTN_TTLANG=sim` (`ttlang/backend.py`).
Backward: the kernels have none, so the gradients are the exact reference backward (`reference.reference_backward`)
on the host, as the ttnn runtime does.
Never picked by runtime="auto": it would move CPU tensors to a device, or to a simulator, behind the user's back.
"""

from __future__ import annotations

from .reference_runtime import ReferenceRuntime
from .ttlang import backend, config


class TtlangRuntime:
    name = "ttlang"

    def unsupported(self, call) -> str | None:
        reason = backend.unavailable_reason(config.current().ring_size)
        if reason is not None:
            return reason
        if call.q.device.type != "cpu":
            return f"the ttlang runtime takes CPU tensors (it uploads them itself); got {call.q.device}"
        s = call.shape
        try:
            from .ttlang import lowering

            lowering.plan(
                s.b, s.nh, s.n, s.l, s.dh,
                valid_n=lowering.lengths(call.logical_n, s.b, s.n),
                valid_l=lowering.lengths(call.logical_l, s.b, s.l),
                dtype=config.device_dtype(call.q.dtype),
            )  # fmt: skip
        except ValueError as error:
            return str(error)
        return None

    def forward(self, call, out, joint_out, lse) -> None:
        from .ttlang import lowering

        o, jo, m = lowering.joint_attention(
            *call.tensors, scale=call.scale, logical_n=call.logical_n, logical_l=call.logical_l
        )
        out.copy_(o)
        joint_out.copy_(jo)
        lse.copy_(m)

    def backward(self, call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse):
        # The TT-Lang kernels have no backward: the exact reference gradients, on the host.
        return ReferenceRuntime().backward(call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse)
