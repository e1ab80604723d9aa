"""Joint attention under a key-padding mask the compiler could not prove to be a prefix of each token set.

The fusion pass turns provable prefix masks into valid lengths at compile time. Any other mask that varies
only over batch and keys is checked when it runs, by two ops:

- `jointattn::key_padding_lengths(key_mask, joint_key_mask, b, n, l) -> (lengths_n, lengths_l, is_prefix)`
  counts the valid keys per batch element on the device and decides, with one device-to-host sync, whether
  every mask is a prefix padding mask. `is_prefix` is a CPU bool tensor. The pass emits one such check per
  distinct mask, so a model whose layers share one mask (Mochi: 48 layers) syncs once per forward.
- `jointattn::masked_joint_attention(q, k, v, joint_q, joint_k, joint_v, key_mask, joint_key_mask, lengths_n,
  lengths_l, is_prefix, scale, runtime)` reads the CPU flag (free): when the masks are prefixes it runs
  `joint_attention` with the lengths, otherwise the exact reference with the masks as an additive per-key
  bias, which is the unfused graph's function for any such mask.

A boolean mask lets through True entries. A float mask is additive, as in SDPA; it counts as padding only
when every entry is 0 (key exists) or at most `ABSENT_KEY_BIAS` (-inf or finfo.min: key absent).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .op import _check_call, _empty_outputs, _laid_out_like_inputs, _make_call
from .reference import reference_vjp
from .reference_runtime import backward_with, forward_into

# Additive mask entries at or below this mean "this key does not exist": -inf and finfo(bf16/fp32).min, for
# which exp(score + bias) is exactly 0 in float32 at any finite score. (finfo(fp16).min = -65504 is above it:
# such masks take the exact path.)
ABSENT_KEY_BIAS = -1.0e30


def _per_key(mask: Tensor, b: int, size: int, name: str) -> Tensor:
    """A mask broadcastable to [b, 1, 1, size] as [b, size]."""
    expected = f"{name} must broadcast to [b={b}, 1, 1, {size}]; got {tuple(mask.shape)}"
    if mask.dim() > 4:
        raise ValueError(f"masked_joint_attention: {expected}")
    padded = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
    if (
        padded.shape[1] != 1
        or padded.shape[2] != 1
        or padded.shape[0] not in (1, b)
        or padded.shape[3] not in (1, size)
    ):
        raise ValueError(f"masked_joint_attention: {expected}")
    return padded.expand(b, 1, 1, size).reshape(b, size)


def _validity(mask: Tensor, b: int, size: int, name: str):
    """(valid [b, size] bool, whether the mask is pure padding (0-d bool), additive bias [b, size] float32)."""
    m = _per_key(mask, b, size, name)
    if m.dtype == torch.bool:
        bias = torch.zeros(m.shape, dtype=torch.float32, device=m.device).masked_fill(~m, float("-inf"))
        return m, torch.ones((), dtype=torch.bool, device=m.device), bias
    valid = m == 0
    return valid, (valid | (m <= ABSENT_KEY_BIAS)).all(), m.float()


def _prefix_lengths(mask: Tensor, b: int, size: int, name: str):
    valid, pure = _validity(mask, b, size, name)[:2]
    lengths = valid.sum(-1)
    prefix = (torch.arange(size, device=valid.device)[None, :] < lengths[:, None]) == valid
    return lengths, pure & prefix.all()


@torch.library.custom_op("jointattn::key_padding_lengths", mutates_args=())
def key_padding_lengths(
    key_mask: Tensor,
    joint_key_mask: Tensor,
    b: int,
    n: int,
    l: int,  # noqa: E741
) -> tuple[Tensor, Tensor, Tensor]:
    lengths_n, ok_n = _prefix_lengths(key_mask, b, n, "key_mask")
    lengths_l, ok_l = _prefix_lengths(joint_key_mask, b, l, "joint_key_mask")
    # A sample with no valid key at all: with finite "absent" biases (finfo.min) SDPA averages V over all
    # keys, which only the exact path reproduces. (With -inf or False everywhere, SDPA and the op both give 0.)
    someone_sees_keys = ((lengths_n + lengths_l) > 0).all()
    return lengths_n, lengths_l, (ok_n & ok_l & someone_sees_keys).cpu()  # the one host sync


@key_padding_lengths.register_fake
def _(key_mask, joint_key_mask, b, n, l):  # noqa: E741
    return (
        key_mask.new_empty((b,), dtype=torch.int64),
        key_mask.new_empty((b,), dtype=torch.int64),
        torch.empty((), dtype=torch.bool, device="cpu"),
    )


def key_bias_from_masks(q, joint_q, key_mask, joint_key_mask) -> Tensor:
    """The two mask parts as one additive per-key bias [b, N+L] (what the exact path adds to the scores)."""
    b, n, l = q.shape[0], q.shape[2], joint_q.shape[2]  # noqa: E741
    return torch.cat(
        [_validity(key_mask, b, n, "key_mask")[2], _validity(joint_key_mask, b, l, "joint_key_mask")[2]], 1
    )


@torch.library.custom_op("jointattn::masked_joint_attention", mutates_args=())
def masked_joint_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    joint_q: Tensor,
    joint_k: Tensor,
    joint_v: Tensor,
    key_mask: Tensor,
    joint_key_mask: Tensor,
    lengths_n: Tensor,
    lengths_l: Tensor,
    is_prefix: Tensor,
    scale: float | None = None,
    runtime: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    call = _make_call(q, k, v, joint_q, joint_k, joint_v, "rear", scale, lengths_n, lengths_l, runtime)
    if bool(is_prefix):  # a CPU tensor: no sync
        return torch.ops.jointattn.joint_attention(
            q, k, v, joint_q, joint_k, joint_v, "rear", scale, lengths_n, lengths_l, runtime
        )
    return masked_exact_forward(call, key_mask, joint_key_mask)


def masked_exact_forward(call, key_mask: Tensor, joint_key_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The exact path for any key mask: the masks as an additive per-key bias, into outputs laid out as the
    op's (shared with the MLIR emitter's `jointattn.masked_reference`)."""
    out, joint_out, lse = _empty_outputs(call.q, call.shape)
    forward_into(
        call, out, joint_out, lse, key_bias_from_masks(call.q, call.joint_q, key_mask, joint_key_mask)
    )
    return out, joint_out, lse


@masked_joint_attention.register_fake
def _(
    q,
    k,
    v,
    joint_q,
    joint_k,
    joint_v,
    key_mask,
    joint_key_mask,
    lengths_n,
    lengths_l,
    is_prefix,
    scale=None,
    runtime="auto",
):
    return _empty_outputs(
        q, _check_call(q, k, v, joint_q, joint_k, joint_v, "rear", scale, lengths_n, lengths_l, runtime)
    )


@torch.library.custom_op("jointattn::masked_joint_attention_backward", mutates_args=())
def masked_joint_attention_backward(
    grad_out: Tensor,
    grad_joint_out: Tensor,
    grad_lse: Tensor | None,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    joint_q: Tensor,
    joint_k: Tensor,
    joint_v: Tensor,
    key_mask: Tensor,
    joint_key_mask: Tensor,
    lengths_n: Tensor,
    lengths_l: Tensor,
    is_prefix: Tensor,
    out: Tensor,
    joint_out: Tensor,
    lse: Tensor,
    scale: float | None,
    runtime: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The forward's branch, taken again on the same CPU flag (an op, so tracing never reads the flag)."""
    if bool(is_prefix):
        return torch.ops.jointattn.joint_attention_backward(
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
            scale,
            lengths_n,
            lengths_l,
            runtime,
        )
    call = _make_call(q, k, v, joint_q, joint_k, joint_v, "rear", scale, lengths_n, lengths_l, runtime)
    bias = key_bias_from_masks(q, joint_q, key_mask, joint_key_mask)
    return _laid_out_like_inputs(call.tensors, backward_with(call, grad_out, grad_joint_out, grad_lse, bias))


@masked_joint_attention_backward.register_fake
def _(grad_out, grad_joint_out, grad_lse, q, k, v, joint_q, joint_k, joint_v, *rest):
    return tuple(torch.empty_like(t) for t in (q, k, v, joint_q, joint_k, joint_v))


def _setup_context(ctx, inputs, output):
    (
        q,
        k,
        v,
        joint_q,
        joint_k,
        joint_v,
        key_mask,
        joint_key_mask,
        lengths_n,
        lengths_l,
        is_prefix,
        scale,
        runtime,
    ) = inputs
    ctx.save_for_backward(
        q, k, v, joint_q, joint_k, joint_v, key_mask, joint_key_mask, lengths_n, lengths_l, is_prefix, *output
    )
    ctx.scale, ctx.runtime = scale, runtime
    # An output nobody differentiates (lse, most of the time) then arrives as None, not as a tensor of zeros:
    # the backward skips it, and paths that take no gradient through lse stay open.
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_out, grad_joint_out, grad_lse):
    if ctx.needs_input_grad[6] or ctx.needs_input_grad[7]:
        raise NotImplementedError(
            "masked_joint_attention: no gradient w.r.t. key_mask/joint_key_mask (they are padding masks); "
            "the fusion pass leaves learned attention biases to SDPA"
        )
    *inputs, out, joint_out, lse = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: differentiable gradients (see op._backward)
        tensors, (key_mask, joint_key_mask) = inputs[:6], inputs[6:8]
        call = _make_call(*tensors, "rear", ctx.scale, None, None, "reference")
        bias = key_bias_from_masks(call.q, call.joint_q, key_mask, joint_key_mask)
        grads = reference_vjp(
            call.tensors, call.scale, bias, (grad_out, grad_joint_out, grad_lse), ctx.needs_input_grad[:6]
        )
        return (*grads, None, None, None, None, None, None, None)
    grad_out = grad_out if grad_out is not None else torch.zeros_like(out)
    grad_joint_out = grad_joint_out if grad_joint_out is not None else torch.zeros_like(joint_out)
    grads = masked_joint_attention_backward(
        grad_out, grad_joint_out, grad_lse, *inputs, out, joint_out, lse, ctx.scale, ctx.runtime
    )
    return (*grads, None, None, None, None, None, None, None)


masked_joint_attention.register_autograd(_backward, setup_context=_setup_context)
