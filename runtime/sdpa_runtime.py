"""The "sdpa" runtime: joint attention as the unfused graph computes it, cat -> PyTorch's SDPA -> slice.

The dispatcher (`dispatch.py`) takes this path wherever a PyTorch attention kernel measured faster than ours
(small calls, where a few large library launches beat ours; head sizes our kernels are not tuned for; the
backward, where cuDNN's is faster than our Triton one). It keeps the op's contract: out, joint_out, lse (float32,
natural log) and gradients through out and joint_out.

Forward: the three concats, one SDPA kernel that also returns the log-sum-exp (on CUDA the one PyTorch's own
choice would run for those tensors, `torch._fused_sdp_choice`: cuDNN, flash or memory-efficient; the flash
kernel on CPU), its output copied into the op's outputs (the slices of the unfused graph).
Backward: an SDPA backward on the concatenated tensors with the op's lse. It needs only what every runtime's
forward leaves behind (out, joint_out and the natural-log lse), so it can follow any forward. A kernel that
refuses a call (a size or layout it does not take) is skipped for the next, which computes the same function.

Limits (`unsupported`, which the dispatcher asks): no padding (SDPA would need a mask, and a row without keys
differs), no gradient through lse in the backward, and a backend for the device and dtype.
"""

from __future__ import annotations

import torch

aten = torch.ops.aten


# PyTorch's SDPBackend values, as `torch._fused_sdp_choice` returns them.
_CHOICE = {1: "flash", 2: "efficient", 3: "cudnn"}
_GPU_ORDER = ("cudnn", "flash", "efficient")
# PyTorch's choice -> the kernels to try, its choice first (a choice without a fused kernel: ours, in order).
_ORDERS = {value: (first, *(b for b in _GPU_ORDER if b != first)) for value, first in _CHOICE.items()}
_BROKEN: set = set()  # (backend, pass, dtype, dh) that raised here: skipped from then on


def backend_for(device: torch.device, dtype: torch.dtype) -> str | None:
    """Whether this path has an SDPA kernel with a log-sum-exp for `dtype` on `device`: "gpu" (cuDNN, flash
    or memory-efficient, chosen per call as PyTorch would), "cpu_flash", or None."""
    if device.type == "cpu":
        # Not float64: the backward would read the op's float32 lse and lose float64's precision.
        return "cpu_flash" if dtype in (torch.float32, torch.bfloat16, torch.float16) else None
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        return "gpu"
    return None


def unsupported(call, *, backward: bool = False, grad_lse=None) -> str | None:
    """Why this path cannot run `call` (its forward, or with `backward` its backward), or None: asked of the
    dispatcher, which states every path's limits."""
    from .dispatch import describe
    from .dispatch import unsupported as path_unsupported

    return path_unsupported("sdpa", describe(call, backward=backward, grad_lse=grad_lse))


def _joined(call):
    return tuple(
        torch.cat(pair, dim=2)
        for pair in ((call.q, call.joint_q), (call.k, call.joint_k), (call.v, call.joint_v))
    )


def _gpu_backends(q, k, v, scale: float, pass_: str) -> tuple[str, ...]:
    """PyTorch's own choice for these tensors first (what cat -> SDPA -> slice runs), then the others."""
    order = _ORDERS.get(int(torch._fused_sdp_choice(q, k, v, None, 0.0, False, scale=scale)), _GPU_ORDER)
    if not _BROKEN:  # the common case, on the host's hot path
        return order
    return tuple(b for b in order if _key(b, pass_, q) not in _BROKEN)


def _key(backend: str, pass_: str, q) -> tuple:
    return (backend, pass_, q.dtype, q.shape[-1])


def _refused(backend: str, pass_: str, q, error: RuntimeError) -> None:
    """A kernel that refused these tensors (a size or layout it does not take) is skipped for them from now on;
    running out of memory is not a refusal."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        raise error
    _BROKEN.add(_key(backend, pass_, q))


def attention(q, k, v, scale: float):
    """(out [b, nh, S, dh], lse [b, nh, S] float32, natural log)."""
    if q.device.type == "cpu":
        return aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, scale=scale)
    s = q.shape[2]
    for backend in _gpu_backends(q, k, v, scale, "forward"):
        try:
            if backend == "cudnn":
                out, lse = aten._scaled_dot_product_cudnn_attention(
                    q, k, v, None, True, 0.0, False, False, scale=scale
                )[:2]
            elif backend == "flash":
                out, lse = aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)[
                    :2
                ]
            else:
                out, lse = aten._scaled_dot_product_efficient_attention(
                    q, k, v, None, True, 0.0, False, scale=scale
                )[:2]
            return out, lse.reshape(*lse.shape[:2], -1)[:, :, :s]
        except RuntimeError as error:  # a refusal: the next kernel computes the same function
            _refused(backend, "forward", q, error)
    raise RuntimeError("joint_attention: no PyTorch SDPA kernel took this call")


def _attention_backward(grad, q, k, v, out, lse, scale: float):
    """(dq, dk, dv) of SDPA on the joined tensors, from its output and the op's natural-log lse."""
    if q.device.type == "cpu":
        return aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad, q, k, v, out, lse, 0.0, False, scale=scale
        )
    b, nh, s, _ = q.shape
    for backend in _gpu_backends(q, k, v, scale, "backward"):
        try:
            if backend == "cudnn":
                return aten._scaled_dot_product_cudnn_attention_backward(
                    grad,
                    q,
                    k,
                    v,
                    out,
                    lse.reshape(b, nh, s, 1),
                    None,
                    None,
                    None,
                    None,
                    None,
                    s,
                    s,
                    0.0,
                    False,
                    scale=scale,
                )
            if backend == "flash":
                return aten._scaled_dot_product_flash_attention_backward(
                    grad, q, k, v, out, lse, None, None, s, s, 0.0, False, None, None, scale=scale
                )
            padded = lse.new_zeros(b, nh, -(-s // 32) * 32)  # the efficient kernel's lse rows come in 32s
            padded[:, :, :s] = lse
            return aten._scaled_dot_product_efficient_attention_backward(
                grad,
                q,
                k,
                v,
                None,
                out,
                padded,
                None,
                None,
                0.0,
                [True, True, True, False],
                False,
                scale=scale,
            )[:3]
        except RuntimeError as error:
            _refused(backend, "backward", q, error)
    raise RuntimeError("joint_attention: no PyTorch SDPA backward took this call")


class SdpaRuntime:
    name = "sdpa"

    def unsupported(self, call) -> str | None:
        return unsupported(call)

    def forward(self, call, out, joint_out, lse) -> None:
        q, k, v = _joined(call)
        o, m = attention(q, k, v, call.scale)
        n = call.q.shape[2]
        out.copy_(o[:, :, :n])
        joint_out.copy_(o[:, :, n:])
        lse.copy_(m)

    def backward(self, call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse):
        reason = unsupported(call, backward=True, grad_lse=grad_lse)
        if reason is not None:
            raise ValueError(f"joint_attention: the sdpa path cannot run this backward: {reason}")
        q, k, v = _joined(call)
        o = torch.cat([out, joint_out], dim=2)
        d_o = torch.cat([grad_out, grad_joint_out], dim=2)
        dq, dk, dv = _attention_backward(d_o, q, k, v, o, lse, call.scale)
        n = call.q.shape[2]
        return (*(g[:, :, :n] for g in (dq, dk, dv)), *(g[:, :, n:] for g in (dq, dk, dv)))
