"""`jointattn::masked_joint_attention`: joint attention under a key-padding mask the compiler could not
prove to be a prefix of each token set.

The fusion pass turns provable prefix masks into valid lengths at compile time. Any other mask that varies
only over batch and keys goes here instead, and is checked when it runs: when, for every batch element, the
keys it lets through form a prefix of each token set (the usual case: padding at the end), the call becomes
`joint_attention` with those lengths; otherwise the exact reference runs with the mask as an additive per-key
bias, which is the unfused graph's function for any such mask. The check costs one device-to-host sync.

A boolean mask lets through True entries. A float mask is additive, as in SDPA; it counts as padding only
when every entry is 0 (key exists) or at most `ABSENT_KEY_BIAS` (-inf or finfo.min: key absent).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .op import _check_call, _empty_outputs
from .reference import reference_backward, reference_forward
from .registry import RUNTIME_NAMES
from .validation import check_options

OP_NAME = "jointattn::masked_joint_attention"
# Additive mask entries at or below this mean "this key does not exist" (covers -inf and finfo(bf16/fp16/fp32).min):
# exp(score + bias) is exactly 0 in float32 for any finite score of attention-sized magnitude.
ABSENT_KEY_BIAS = -1.0e30


def _per_key(mask: Tensor, b: int, size: int, name: str) -> Tensor:
    """A mask broadcastable to [b, 1, 1, size] as [b, size]."""
    if mask.dim() > 4:
        raise ValueError(
            f"masked_joint_attention: {name} must broadcast to [b={b}, 1, 1, {size}]; got {tuple(mask.shape)}"
        )
    padded = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
    if (
        padded.shape[1] != 1
        or padded.shape[2] != 1
        or padded.shape[0] not in (1, b)
        or padded.shape[3] not in (1, size)
    ):
        raise ValueError(
            f"masked_joint_attention: {name} must broadcast to [b={b}, 1, 1, {size}]; got {tuple(mask.shape)}"
        )
    return padded.expand(b, 1, 1, size).reshape(b, size)


def key_mask_analysis(mask: Tensor, b: int, size: int, name: str):
    """(valid lengths [b], is-a-prefix-padding-mask flag (0-d bool tensor), additive bias [b, size] float32)."""
    m = _per_key(mask, b, size, name)
    if m.dtype == torch.bool:
        valid, pure = m, torch.ones((), dtype=torch.bool, device=m.device)
        bias = torch.zeros(m.shape, dtype=torch.float32, device=m.device).masked_fill(~m, float("-inf"))
    else:
        valid = m == 0
        pure = (valid | (m <= ABSENT_KEY_BIAS)).all()
        bias = m.float()
    lengths = valid.sum(-1)
    prefix = (torch.arange(size, device=m.device)[None, :] < lengths[:, None]) == valid
    return lengths, pure & prefix.all(), bias


def _analyse(q, joint_q, key_mask, joint_key_mask):
    b, n, l = q.shape[0], q.shape[2], joint_q.shape[2]  # noqa: E741
    len_n, ok_n, bias_n = key_mask_analysis(key_mask, b, n, "key_mask")
    len_l, ok_l, bias_l = key_mask_analysis(joint_key_mask, b, l, "joint_key_mask")
    use_lengths = bool(ok_n & ok_l)  # the one host sync
    return use_lengths, len_n, len_l, torch.cat([bias_n, bias_l], dim=1)


@torch.library.custom_op(OP_NAME, mutates_args=())
def masked_joint_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    joint_q: Tensor,
    joint_k: Tensor,
    joint_v: Tensor,
    key_mask: Tensor,
    joint_key_mask: Tensor,
    scale: float | None = None,
    runtime: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    shape = _check_call(q, k, v, joint_q, joint_k, joint_v, "rear", scale, None, None, runtime)
    use_lengths, len_n, len_l, bias = _analyse(q, joint_q, key_mask, joint_key_mask)
    if use_lengths:
        return torch.ops.jointattn.joint_attention(
            q, k, v, joint_q, joint_k, joint_v, "rear", scale, len_n, len_l, runtime
        )
    out, joint_out, lse = _empty_outputs(q, shape)
    o, jo, m = reference_forward(
        q, k, v, joint_q, joint_k, joint_v, scale if scale is not None else shape.dh**-0.5, bias
    )
    out.copy_(o)
    joint_out.copy_(jo)
    lse.copy_(m)
    return out, joint_out, lse


@masked_joint_attention.register_fake
def _(q, k, v, joint_q, joint_k, joint_v, key_mask, joint_key_mask, scale=None, runtime="auto"):
    check_options("rear", scale, runtime, RUNTIME_NAMES)
    return _empty_outputs(
        q, _check_call(q, k, v, joint_q, joint_k, joint_v, "rear", scale, None, None, runtime)
    )


def _setup_context(ctx, inputs, output):
    q, k, v, joint_q, joint_k, joint_v, key_mask, joint_key_mask, scale, runtime = inputs
    ctx.save_for_backward(q, k, v, joint_q, joint_k, joint_v, key_mask, joint_key_mask, *output)
    ctx.scale, ctx.runtime = scale, runtime


def _backward(ctx, grad_out, grad_joint_out, grad_lse):
    q, k, v, joint_q, joint_k, joint_v, key_mask, joint_key_mask, out, joint_out, lse = ctx.saved_tensors
    grad_out = grad_out if grad_out is not None else torch.zeros_like(out)
    grad_joint_out = grad_joint_out if grad_joint_out is not None else torch.zeros_like(joint_out)
    use_lengths, len_n, len_l, bias = _analyse(q, joint_q, key_mask, joint_key_mask)
    if use_lengths:
        grads = torch.ops.jointattn.joint_attention_backward(
            grad_out,
            grad_joint_out,
            grad_lse,
            q,
            k,
            v,
            joint_q,
            joint_k,
            joint_v,
            out,
            joint_out,
            lse,
            ctx.scale,
            len_n,
            len_l,
            ctx.runtime,
        )
    else:
        scale = ctx.scale if ctx.scale is not None else q.shape[-1] ** -0.5
        grads = reference_backward(
            grad_out, grad_joint_out, grad_lse, q, k, v, joint_q, joint_k, joint_v, scale, bias
        )
        grads = tuple(g.to(t.dtype) for g, t in zip(grads, (q, k, v, joint_q, joint_k, joint_v)))
    return (*grads, None, None, None, None)


masked_joint_attention.register_autograd(_backward, setup_context=_setup_context)
