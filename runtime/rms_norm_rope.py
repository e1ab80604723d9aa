"""`jointattn::rms_norm_rope`: the QK-norm + rotary-embedding prologue of an attention, as one op.

`rms_norm_rope(x, weight, eps, cos, sin)` on x `[b, S, nh, dh]` computes what diffusers' Mochi attention writes
(`MochiRMSNorm`, then `apply_rotary_emb` on interleaved pairs), rounding where that code rounds:
    y = (x * rsqrt(mean(float(x)^2, -1) + eps) * weight).to(x.dtype)        (skipped when eps is None)
    even, odd = float(y[..., 0::2]), float(y[..., 1::2])
    out[..., 0::2] = (even*cos - odd*sin).to(x.dtype); out[..., 1::2] = (even*sin + odd*cos).to(x.dtype)
                                                                            (skipped when cos is None)
cos/sin broadcast to `[b, S, nh, dh/2]`. The result is a new contiguous tensor.

It exists because inductor compiles this prologue poorly in one graph (see `kernels/rms_norm_rope.py`); the
post-grad pass `passes/fx/prologue.py` puts it where it finds the pattern. On CUDA it runs the Triton kernel;
anywhere else, or for a dtype or head dim the kernel does not take, the reference below (the same torch ops as
the model code). Its backward differentiates the reference.
"""

from __future__ import annotations

import torch
from torch import Tensor

OP_NAME = "jointattn::rms_norm_rope"
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def reference(
    x: Tensor, weight: Tensor | None, eps: float | None, cos: Tensor | None, sin: Tensor | None
) -> Tensor:
    """The model code's own formula (diffusers' MochiRMSNorm and Mochi's apply_rotary_emb).

    It is also what the prologue pass searches for (`passes/fx/prologue.py` traces it to ATen and matches the
    model's graph against that to the letter), so it stays written as the model writes it."""
    y = x
    if eps is not None:
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        y = x * torch.rsqrt(variance + eps)
        if weight is not None:
            y = y * weight
        y = y.to(x.dtype)
    if cos is not None:
        even, odd = y[..., 0::2].float(), y[..., 1::2].float()
        rotated_even = (even * cos - odd * sin).to(x.dtype)
        rotated_odd = (even * sin + odd * cos).to(x.dtype)
        y = torch.stack([rotated_even, rotated_odd], dim=-1).flatten(-2)
    return x.clone(memory_format=torch.contiguous_format) if y is x else y.contiguous()


def check_arguments(
    x: Tensor, weight: Tensor | None, eps: float | None, cos: Tensor | None, sin: Tensor | None
):
    """Raises ValueError naming the argument that does not fit x `[b, S, nh, dh]`."""
    if x.dim() != 4 or x.shape[-1] % 2:
        raise ValueError(f"rms_norm_rope: x must be [b, S, nh, dh] with an even dh; got {tuple(x.shape)}")
    dh = x.shape[-1]
    if weight is not None and tuple(weight.shape) != (dh,):
        raise ValueError(f"rms_norm_rope: weight must be [dh] = [{dh}]; got {tuple(weight.shape)}")
    if weight is not None and eps is None:
        raise ValueError("rms_norm_rope: weight is given without eps (the norm is off when eps is None)")
    if (cos is None) != (sin is None):
        raise ValueError("rms_norm_rope: cos and sin must be given together")
    pairs = (*x.shape[:3], dh // 2)
    for name, table in (("cos", cos), ("sin", sin)):
        if table is not None and not _broadcasts_to(table.shape, pairs):
            raise ValueError(
                f"rms_norm_rope: {name} must broadcast to [b, S, nh, dh/2] = {list(pairs)}; got {tuple(table.shape)}"
            )
        if table is not None and table.device != x.device:
            raise ValueError(f"rms_norm_rope: {name} must be on x's device {x.device}; got {table.device}")


def _broadcasts_to(shape, target) -> bool:
    try:
        return torch.broadcast_shapes(shape, target) == torch.Size(target)
    except RuntimeError:
        return False


def _kernel_takes(x: Tensor, weight: Tensor | None, cos: Tensor | None) -> bool:
    dh = x.shape[-1]
    return (
        x.is_cuda
        and x.dtype in KERNEL_DTYPES
        and dh & (dh - 1) == 0
        and 2 <= dh <= 256
        and x.stride(-1) == 1
        and (weight is None or weight.is_contiguous())
        and (cos is None or cos.is_floating_point())
    )


@torch.library.custom_op(OP_NAME, mutates_args=())
def rms_norm_rope(
    x: Tensor, weight: Tensor | None, eps: float | None, cos: Tensor | None, sin: Tensor | None
) -> Tensor:
    check_arguments(x, weight, eps, cos, sin)
    if _kernel_takes(x, weight, cos):
        from ..kernels.rms_norm_rope import rms_norm_rope as launch

        return launch(x, weight, eps, cos, sin)
    return reference(x, weight, eps, cos, sin)


@rms_norm_rope.register_fake
def _(x, weight, eps, cos, sin):
    check_arguments(x, weight, eps, cos, sin)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def _setup_context(ctx, inputs, output):
    x, weight, eps, cos, sin = inputs
    ctx.save_for_backward(x, weight, cos, sin)
    ctx.eps = eps


def _backward(ctx, grad):
    need_x, need_weight, _, need_cos, need_sin = ctx.needs_input_grad
    saved = zip(ctx.saved_tensors, (need_x, need_weight, need_cos, need_sin), strict=True)
    # Grad mode is on in a backward only for create_graph=True: then the saved inputs themselves (with their
    # history) are differentiated, so that the gradient is differentiable again (double backward).
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        if create_graph:
            leaves = [t if t is not None else None for t, _ in saved]
            flags = [
                t is not None and need for t, need in zip(leaves, (need_x, need_weight, need_cos, need_sin))
            ]
        else:
            leaves = [t.detach().requires_grad_(need) if t is not None else None for t, need in saved]
            flags = [t is not None and t.requires_grad for t in leaves]
        wanted = [t for t, flag in zip(leaves, flags, strict=True) if flag]
        out = reference(leaves[0], leaves[1], ctx.eps, leaves[2], leaves[3])
        grads = iter(torch.autograd.grad(out, wanted, grad, create_graph=create_graph) if wanted else ())
    x_grad, weight_grad, cos_grad, sin_grad = (next(grads) if flag else None for flag in flags)
    return x_grad, weight_grad, None, cos_grad, sin_grad


rms_norm_rope.register_autograd(_backward, setup_context=_setup_context)

__all__ = ["OP_NAME", "rms_norm_rope", "reference", "check_arguments"]
