"""`jointattn::block_sparse_joint_attention`: joint attention with a block-sparse mask over the spatial tokens.

Spatial queries attend the spatial keys a `SpatialLayout` (a flex_attention BlockMask over the N spatial
tokens, as tensors: `runtime/sparse_layout.py`) allows, plus every valid text key; text queries attend every
valid key. Padding (`logical_n`/`logical_l`), outputs, lse and gradients follow `jointattn::joint_attention`'s
contract; a row that sees no key gets 0 and lse -inf. Users reach it through
`jointattn.joint_attention(..., block_mask=bm)`.

The layout's five tensors and two block sizes are the op's arguments (a BlockMask is not a tensor). Like the
dense op: a forward and a backward custom op, each with a fake kernel; the backward is the forward's autograd
formula, and a double backward runs the exact reference through autograd.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..reference import reference_vjp
from ..registry import select_runtime
from ..sparse_layout import SpatialLayout
from ..sparse_reference import sparse_reference_forward
from ..sparse_runtime import SPARSE_RUNTIMES, select_sparse_runtime
from ..validation import check_length_arg, check_options, check_tensors
from .contract import empty_outputs_of, make_call, outputs_like_inputs
from .eager_autograd import eager_autograd, plain_and_unwatched, takes_eager_autograd

OP_NAME = "jointattn::block_sparse_joint_attention"
BACKWARD_OP_NAME = "jointattn::block_sparse_joint_attention_backward"


def check_sparse_call(q, k, v, joint_q, joint_k, joint_v, scale, logical_n, logical_l, runtime, layout):
    shape = check_tensors(q, k, v, joint_q, joint_k, joint_v)
    check_options("rear", scale, runtime, SPARSE_RUNTIMES)
    check_length_arg("logical_n", logical_n, shape, q.device)
    check_length_arg("logical_l", logical_l, shape, q.device)
    check_layout(layout, shape.b, shape.nh, shape.n, q.device)
    return shape


def check_layout(layout: SpatialLayout, b: int, nh: int, n: int, device) -> None:
    """The layout's tensors against the call: ranks, leading dims (1 or b, 1 or nh, >= the query blocks N
    needs), int32, q's device. Block contents are trusted (they come from a BlockMask or our builders)."""
    if layout.q_block < 1 or layout.kv_block < 1:
        raise ValueError(
            f"joint_attention: block_mask block sizes must be positive; got {layout.q_block}x{layout.kv_block}"
        )
    qbn = layout.kv_num_blocks.shape[2] if layout.kv_num_blocks.dim() == 3 else -1
    words = -(-layout.kv_block // 32)
    names = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices", "partial_bits")
    for name, t, rank in zip(names, layout.tensors, (3, 4, 3, 4, 6)):
        if t.dtype != torch.int32:
            raise TypeError(f"joint_attention: block_mask {name} must be int32; got {t.dtype}")
        if t.device != device:
            raise ValueError(
                f"joint_attention: block_mask {name} must be on device {device} like q; got {t.device}"
            )
        if t.dim() != rank or t.shape[0] not in (1, b) or t.shape[1] not in (1, nh) or t.shape[2] != qbn:
            raise ValueError(
                f"joint_attention: block_mask {name} must be a {rank}-D tensor [1 or b={b}, 1 or nh={nh}, "
                f"query blocks, ...]; got shape {tuple(t.shape)}"
            )
    if qbn < -(-n // layout.q_block):
        raise ValueError(
            f"joint_attention: block_mask has {qbn} query blocks; N={n} with {layout.q_block}-row blocks needs "
            f"{-(-n // layout.q_block)}"
        )
    if tuple(layout.partial_bits.shape[4:]) != (layout.q_block, words):
        raise ValueError(
            f"joint_attention: block_mask partial_bits must end in [{layout.q_block}, {words}]; "
            f"got {tuple(layout.partial_bits.shape)}"
        )


def _layout(kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices, partial_bits, q_block, kv_block):
    return SpatialLayout(
        kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices, partial_bits, q_block, kv_block
    )


@torch.library.custom_op(OP_NAME, mutates_args=())
def block_sparse_joint_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    joint_q: Tensor,
    joint_k: Tensor,
    joint_v: Tensor,
    kv_num_blocks: Tensor,
    kv_indices: Tensor,
    full_kv_num_blocks: Tensor,
    full_kv_indices: Tensor,
    partial_bits: Tensor,
    q_block: int,
    kv_block: int,
    scale: float | None = None,
    logical_n: Tensor | None = None,
    logical_l: Tensor | None = None,
    runtime: str = "auto",
    dense: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """`dense`: None, or a CPU bool scalar (`dense_calls_flag`): when true this call ignores the mask and runs the
    dense op's runtime (a layer's first denoising steps dense, as the video methods run them)."""
    return _implementation(
        q, k, v, joint_q, joint_k, joint_v, kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices,
        partial_bits, q_block, kv_block, scale, logical_n, logical_l, runtime, dense,
    )  # fmt: skip


def _implementation(
    q, k, v, joint_q, joint_k, joint_v, kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices,
    partial_bits, q_block, kv_block, scale, logical_n, logical_l, runtime, dense,
):  # fmt: skip
    layout = _layout(
        kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices, partial_bits, q_block, kv_block
    )
    check_layout(layout, q.shape[0], q.shape[1], q.shape[2], q.device)
    call = make_call(q, k, v, joint_q, joint_k, joint_v, "rear", scale, logical_n, logical_l, "reference")
    out, joint_out, lse = empty_outputs_of(call.q, call.shape)
    if _runs_dense(dense):
        select_runtime(runtime, call).forward(call, out, joint_out, lse)
    else:
        select_sparse_runtime(runtime, call, layout, backward=False).forward(
            call, layout, out, joint_out, lse
        )
    return out, joint_out, lse


def _runs_dense(dense: Tensor | None) -> bool:
    return dense is not None and bool(dense)  # a CPU scalar: no device sync


@block_sparse_joint_attention.register_fake
def _(q, k, v, joint_q, joint_k, joint_v, kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices,
      partial_bits, q_block, kv_block, scale=None, logical_n=None, logical_l=None, runtime="auto",
      dense=None):  # fmt: skip
    layout = _layout(
        kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices, partial_bits, q_block, kv_block
    )
    shape = check_sparse_call(
        q, k, v, joint_q, joint_k, joint_v, scale, logical_n, logical_l, runtime, layout
    )
    return empty_outputs_of(q, shape)


@torch.library.custom_op(BACKWARD_OP_NAME, mutates_args=())
def block_sparse_joint_attention_backward(
    grad_out: Tensor,
    grad_joint_out: Tensor,
    grad_lse: Tensor | None,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    joint_q: Tensor,
    joint_k: Tensor,
    joint_v: Tensor,
    out: Tensor,
    joint_out: Tensor,
    lse: Tensor,
    kv_num_blocks: Tensor,
    kv_indices: Tensor,
    full_kv_num_blocks: Tensor,
    full_kv_indices: Tensor,
    partial_bits: Tensor,
    q_block: int,
    kv_block: int,
    scale: float | None,
    logical_n: Tensor | None,
    logical_l: Tensor | None,
    runtime: str,
    dense: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _backward_implementation(
        grad_out, grad_joint_out, grad_lse, q, k, v, joint_q, joint_k, joint_v, out, joint_out, lse,
        kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices, partial_bits, q_block, kv_block, scale,
        logical_n, logical_l, runtime, dense,
    )  # fmt: skip


def _backward_implementation(
    grad_out, grad_joint_out, grad_lse, q, k, v, joint_q, joint_k, joint_v, out, joint_out, lse, kv_num_blocks,
    kv_indices, full_kv_num_blocks, full_kv_indices, partial_bits, q_block, kv_block, scale, logical_n,
    logical_l, runtime, dense,
):  # fmt: skip
    layout = _layout(
        kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices, partial_bits, q_block, kv_block
    )
    call = make_call(q, k, v, joint_q, joint_k, joint_v, "rear", scale, logical_n, logical_l, "reference")
    if _runs_dense(dense):
        grads = select_runtime(runtime, call).backward(
            call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse
        )
    else:
        runtime_ = select_sparse_runtime(runtime, call, layout, backward=True, grad_lse=grad_lse)
        grads = runtime_.backward(call, layout, out, joint_out, lse, grad_out, grad_joint_out, grad_lse)
    return outputs_like_inputs(call.tensors, grads)


@block_sparse_joint_attention_backward.register_fake
def _(grad_out, grad_joint_out, grad_lse, q, k, v, joint_q, joint_k, joint_v, *rest):
    return tuple(torch.empty_like(t) for t in (q, k, v, joint_q, joint_k, joint_v))


def _setup_context(ctx, inputs, output):
    tensors, layout_args = inputs[:6], inputs[6:13]
    scale, logical_n, logical_l, runtime = inputs[13:17]
    dense = inputs[17] if len(inputs) > 17 else None
    ctx.save_for_backward(*tensors, *output, *layout_args[:5], logical_n, logical_l, dense)
    ctx.blocks = layout_args[5:]
    ctx.scale, ctx.runtime = scale, runtime
    ctx.set_materialize_grads(False)  # an unused output (lse, mostly) arrives as None: see joint.py


def _backward(ctx, grad_out, grad_joint_out, grad_lse):
    saved = ctx.saved_tensors
    tensors, (out, joint_out, lse), layout_tensors, (logical_n, logical_l, dense) = (
        saved[:6], saved[6:9], saved[9:14], saved[14:]
    )  # fmt: skip
    none_for_rest = (None,) * 12
    if torch.is_grad_enabled():  # create_graph=True: differentiable gradients through the exact reference
        call = make_call(*tensors, "rear", ctx.scale, logical_n, logical_l, "reference")
        cotangents, needs = (grad_out, grad_joint_out, grad_lse), ctx.needs_input_grad[:6]
        if _runs_dense(dense):
            grads = reference_vjp(call.tensors, call.scale, call.key_bias(), cotangents, needs)
        else:
            grads = _sparse_vjp(call, _layout(*layout_tensors, *ctx.blocks), cotangents, needs)
        return (*grads, *none_for_rest)
    grad_out = grad_out if grad_out is not None else torch.zeros_like(out)
    grad_joint_out = grad_joint_out if grad_joint_out is not None else torch.zeros_like(joint_out)
    # Eager and unwatched (`eager_autograd.py`): the backward op's implementation without its dispatch.
    backward = (
        _backward_implementation if plain_and_unwatched(tensors) else block_sparse_joint_attention_backward
    )
    grads = backward(
        grad_out, grad_joint_out, grad_lse, *tensors, out, joint_out, lse, *layout_tensors, *ctx.blocks,
        ctx.scale, logical_n, logical_l, ctx.runtime, dense,
    )  # fmt: skip
    return (*grads, *none_for_rest)


def _sparse_vjp(call, layout, cotangents, needs):
    if not any(needs):
        return (None,) * 6
    with torch.enable_grad():
        outputs = sparse_reference_forward(*call.tensors, call.scale, call.key_bias(), layout)
        used = [(o, g.to(o.dtype)) for o, g in zip(outputs, cotangents) if g is not None]
        wanted = [t for t, need in zip(call.tensors, needs) if need]
        found = iter(
            torch.autograd.grad(
                [o for o, _ in used], wanted, [g for _, g in used], create_graph=True, allow_unused=True
            )
        )
    grads = []
    for t, need in zip(call.tensors, needs):
        g = next(found) if need else None
        if need and g is None:
            g = torch.zeros_like(t)
        grads.append(g.to(t.dtype) if g is not None else None)
    return tuple(grads)


block_sparse_joint_attention.register_autograd(_backward, setup_context=_setup_context)
_eager_op = eager_autograd("BlockSparseJointAttention", _implementation, _setup_context, _backward)


def sparse_joint_attention(
    q, k, v, joint_q, joint_k, joint_v, layout: SpatialLayout, *, scale, logical_n, logical_l, runtime
):
    """The op called with a layout (what `jointattn.joint_attention(..., block_mask=...)` calls); an eager call
    that records autograd as the op's own node without torch.library's autograd layer (`eager_autograd.py`)."""
    args = (q, k, v, joint_q, joint_k, joint_v, *layout.tensors, layout.q_block, layout.kv_block, scale,
            logical_n, logical_l, runtime)  # fmt: skip
    if takes_eager_autograd((q, k, v, joint_q, joint_k, joint_v, *layout.tensors)):
        return _eager_op(*args, None)
    return torch.ops.jointattn.block_sparse_joint_attention(*args)


@torch.library.custom_op("jointattn::estimate_kv_blocks", mutates_args=())
def estimate_kv_blocks(
    q: Tensor,
    k: Tensor,
    keep: float | None,
    cdf: float | None,
    q_block: int,
    kv_block: int,
    scale: float | None = None,
    valid_n: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The estimator's kept key blocks per query block (`runtime/sparse_estimate.py`): (count [b, nh, QBn],
    indices [b, nh, QBn, KBn]) int32, what the compile pass feeds the sparse op as its full-block lists; keys
    past `valid_n` ([b]) weigh nothing."""
    from ..sparse_estimate import estimate_kv_blocks as estimate

    return estimate(q.detach(), k.detach(), keep, cdf, q_block, kv_block, scale, valid_n)


@estimate_kv_blocks.register_fake
def _(q, k, keep, cdf, q_block, kv_block, scale=None, valid_n=None):
    return estimate_outputs(q, q_block, kv_block)


def estimate_outputs(q: Tensor, q_block: int, kv_block: int) -> tuple[Tensor, Tensor]:
    """Empty (count [b, nh, QBn], indices [b, nh, QBn, KBn]) int32, as the estimator ops return them."""
    b, nh, n, _ = q.shape
    qbn, kbn = -(-n // q_block), -(-n // kv_block)
    return q.new_empty((b, nh, qbn), dtype=torch.int32), q.new_empty((b, nh, qbn, kbn), dtype=torch.int32)


# Layouts built at compile time (a pattern's mask for a layer's static N), by key: graphs fetch them with
# `jointattn::layout_constant` instead of holding tensor constants, which AOTAutograd's fake tracing rejects.
_LAYOUTS: dict[int, SpatialLayout] = {}


def register_layout(layout: SpatialLayout) -> int:
    key = len(_LAYOUTS)
    _LAYOUTS[key] = layout
    return key


@torch.library.custom_op("jointattn::layout_constant", mutates_args=())
def layout_constant(key: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The five tensors of registered layout `key`, on `like`'s device (copies: an op's outputs are its own;
    a few MB at most, next to the attention they steer)."""
    return tuple(t.to(like.device, copy=True) for t in _LAYOUTS[key].tensors)


@layout_constant.register_fake
def _(key, like):
    return tuple(torch.empty(t.shape, dtype=t.dtype, device=like.device) for t in _LAYOUTS[key].tensors)


@torch.library.custom_op("jointattn::prefix_lengths", mutates_args=())
def prefix_lengths(lengths_n: Tensor, lengths_l: Tensor, is_prefix: Tensor) -> tuple[Tensor, Tensor]:
    """The valid lengths of a run-time-checked key mask (`key_padding_lengths`) for a sparse layer, which takes
    padding as valid lengths only: a mask that is not prefix padding is refused here (the flag is on the CPU:
    no sync), never run as something else."""
    if not bool(is_prefix):
        raise ValueError(
            "joint_attention: a sparse layer got a key mask that is not prefix padding (or hides every key of a "
            "sample); sparse layers take padding as valid lengths only. Leave this layer dense."
        )
    return lengths_n.clone(), lengths_l.clone()


@prefix_lengths.register_fake
def _(lengths_n, lengths_l, is_prefix):
    return torch.empty_like(lengths_n), torch.empty_like(lengths_l)
