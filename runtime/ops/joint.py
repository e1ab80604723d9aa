"""`jointattn::joint_attention`: the op every lowering of joint attention goes through.

Entry point: `joint_attention(q, k, v, joint_q, joint_k, joint_v, *, joint_strategy, scale, logical_n,
logical_l, runtime)`, the interface of ttnn's `joint_scaled_dot_product_attention`. It computes the same
function as `cat` on the sequence dim -> `scaled_dot_product_attention` -> slice, with keys at or past a valid
length treated as absent, and returns (out, joint_out, lse).

Internals: two `torch.library.custom_op`s, the forward and its backward, each with a fake kernel so that
Dynamo, AOTAutograd, inductor and `torch.export` trace through them; the backward is registered as the
forward's autograd formula. Both allocate their outputs and hand them to a runtime (see `registry.py`).

Outputs are laid out [b, N, nh, dh] in memory (viewed as [b, nh, N, dh]), the layout flash attention
returns, so the `transpose(1, 2).reshape(b, N, nh * dh)` that model code applies next is a free view.

Eager calls that the dispatcher sends to PyTorch's SDPA for every pass skip both custom ops
(`eager_sdpa.py`: the unfused graph itself, under PyTorch's autograd; its outputs are slices of one SDPA
output). Other eager calls run the op's implementation directly: without autograd to record, as is; with it,
in the op's own autograd node without torch.library's layer (`eager_autograd.py`). Compiled and traced code
always sees the op.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..call import JointCall
from ..reference import reference_vjp
from ..registry import select_runtime
from ..validation import as_length_tensor
from . import eager_sdpa
from .contract import check_call, checked_call, empty_outputs_of, make_call, outputs_like_inputs
from .eager_autograd import eager_autograd, plain_and_unwatched, takes_eager_autograd

OP_NAME = "jointattn::joint_attention"
BACKWARD_OP_NAME = "jointattn::joint_attention_backward"


@torch.library.custom_op(OP_NAME, mutates_args=())
def _joint_attention_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    joint_q: Tensor,
    joint_k: Tensor,
    joint_v: Tensor,
    joint_strategy: str = "rear",
    scale: float | None = None,
    logical_n: Tensor | None = None,
    logical_l: Tensor | None = None,
    runtime: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    return _implementation(
        q, k, v, joint_q, joint_k, joint_v, joint_strategy, scale, logical_n, logical_l, runtime
    )


def _implementation(q, k, v, joint_q, joint_k, joint_v, joint_strategy, scale, logical_n, logical_l, runtime):
    call = make_call(q, k, v, joint_q, joint_k, joint_v, joint_strategy, scale, logical_n, logical_l, runtime)
    return _forward(call, runtime)


def _checked_implementation(
    q, k, v, joint_q, joint_k, joint_v, joint_strategy, scale, logical_n, logical_l, runtime
):
    """`_implementation` of arguments `joint_attention` already checked (eager calls)."""
    return _forward(checked_call((q, k, v, joint_q, joint_k, joint_v), scale, logical_n, logical_l), runtime)


def _forward(call: JointCall, runtime: str):
    out, joint_out, lse = empty_outputs_of(call.q, call.shape)
    select_runtime(runtime, call).forward(call, out, joint_out, lse)
    return out, joint_out, lse


def _all_valid(length, t, dim: int) -> bool:
    """A valid-length argument that leaves every token valid: None, or an int equal to the set's length."""
    return length is None or (
        type(length) is int and isinstance(t, Tensor) and t.dim() > dim and length == t.shape[dim]
    )


def _plain_eager(tensors, autograd: bool = True) -> bool:
    """Whether a call can skip the dispatcher's custom-op layers (~80 µs of host time per call on an H200's
    host): eager, no autograd to record (with `autograd`), plain tensors, and nobody watching
    (`contract.op_is_watched`), who must see `jointattn::joint_attention` (and its backward) as one op."""
    if autograd and torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return plain_and_unwatched(tensors)


@_joint_attention_op.register_fake
def _(
    q,
    k,
    v,
    joint_q,
    joint_k,
    joint_v,
    joint_strategy="rear",
    scale=None,
    logical_n=None,
    logical_l=None,
    runtime="auto",
):
    shape = check_call(
        q, k, v, joint_q, joint_k, joint_v, joint_strategy, scale, logical_n, logical_l, runtime
    )
    return empty_outputs_of(q, shape)


@torch.library.custom_op(BACKWARD_OP_NAME, mutates_args=())
def _joint_attention_backward_op(
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
    scale: float | None,
    logical_n: Tensor | None,
    logical_l: Tensor | None,
    runtime: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    call = make_call(q, k, v, joint_q, joint_k, joint_v, "rear", scale, logical_n, logical_l, runtime)
    grads = _runtime_backward(call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse, runtime)
    return outputs_like_inputs(call.tensors, grads)


def _runtime_backward(call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse, runtime):
    """The six gradients from the runtime, as it returns them (the backward op makes them its contract's)."""
    return select_runtime(runtime, call).backward(
        call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse
    )


@_joint_attention_backward_op.register_fake
def _(
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
    logical_n,
    logical_l,
    runtime,
):
    return tuple(torch.empty_like(t) for t in (q, k, v, joint_q, joint_k, joint_v))


def _setup_context(ctx, inputs, output):
    q, k, v, joint_q, joint_k, joint_v, _strategy, scale, logical_n, logical_l, runtime = inputs
    out, joint_out, lse = output
    ctx.save_for_backward(q, k, v, joint_q, joint_k, joint_v, out, joint_out, lse, logical_n, logical_l)
    ctx.scale = scale
    ctx.runtime = runtime
    # An output nobody differentiates (lse, most of the time) then arrives as None, not as a tensor of zeros:
    # the backward skips it, and paths that take no gradient through lse stay open.
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_out, grad_joint_out, grad_lse):
    q, k, v, joint_q, joint_k, joint_v, out, joint_out, lse, logical_n, logical_l = ctx.saved_tensors
    if torch.is_grad_enabled():
        # Autograd runs a backward with grad mode on only for create_graph=True: the gradients must be
        # differentiable again (double backward). The runtimes' kernels are not, so the exact reference
        # computes them through autograd.
        call = make_call(
            q, k, v, joint_q, joint_k, joint_v, "rear", ctx.scale, logical_n, logical_l, "reference"
        )
        grads = reference_vjp(
            call.tensors,
            call.scale,
            call.key_bias(),
            (grad_out, grad_joint_out, grad_lse),
            ctx.needs_input_grad[:6],
        )
        return (*grads, None, None, None, None, None)
    grad_out = grad_out if grad_out is not None else torch.zeros_like(out)
    grad_joint_out = grad_joint_out if grad_joint_out is not None else torch.zeros_like(joint_out)
    if _plain_eager((q, out, grad_out, grad_joint_out), autograd=False):
        # Eager, nobody watching: the runtime's gradients as they come (the sdpa path's are slices of its joined
        # gradients), without the layout copies the backward op's contract needs for compiled graphs.
        # The saved tensors passed the forward's checks: not checked again.
        call = checked_call((q, k, v, joint_q, joint_k, joint_v), ctx.scale, logical_n, logical_l)
        grads = _runtime_backward(call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse, ctx.runtime)
        return (*grads, None, None, None, None, None)
    grads = _joint_attention_backward_op(
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
        logical_n,
        logical_l,
        ctx.runtime,
    )
    return (*grads, None, None, None, None, None)


_joint_attention_op.register_autograd(_backward, setup_context=_setup_context)
_eager_op = eager_autograd("JointAttention", _checked_implementation, _setup_context, _backward)


def joint_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    joint_q: Tensor,
    joint_k: Tensor,
    joint_v: Tensor,
    *,
    joint_strategy: str = "rear",
    scale: float | None = None,
    logical_n: int | Tensor | None = None,
    logical_l: int | Tensor | None = None,
    runtime: str = "auto",
    block_mask=None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Joint attention of two token sets without concatenating them.

    Args:
        q, k, v: spatial tokens, [b, nh, N, dh], any strides.
        joint_q, joint_k, joint_v: joint (text) tokens, [b, nh, L, dh], same dtype and device.
        joint_strategy: where the joint tokens sit in the virtual concatenation; "rear" (ttnn's only one).
        scale: softmax scale; None means 1/sqrt(dh), as in SDPA.
        logical_n, logical_l: valid lengths: None (all valid), an int, or an int tensor [b]. Keys at or
            past a valid length do not exist; query rows there are still computed.
        runtime: "auto" (fastest that supports the inputs, else the exact reference), "reference",
            "triton" or "ttnn" (with a block_mask: "auto", "reference" or "triton").
        block_mask: None, or a flex_attention `BlockMask` over the N spatial tokens (Q_LEN = KV_LEN = N; or its
            `SpatialLayout`): spatial queries then attend the spatial keys it allows plus every valid text key,
            text queries every valid key (`jointattn::block_sparse_joint_attention`).

    Returns:
        out [b, nh, N, dh], joint_out [b, nh, L, dh] and lse [b, nh, N+L] (float32, natural log).
    """
    tensors = (q, k, v, joint_q, joint_k, joint_v)
    if runtime == "auto" and joint_strategy == "rear" and block_mask is None:
        # Eager, and the dispatcher runs every pass on PyTorch's SDPA: as the unfused graph does, no op layers.
        result = eager_sdpa.try_joint_attention(
            tensors,
            scale,
            None if _all_valid(logical_n, q, 2) else logical_n,
            None if _all_valid(logical_l, joint_q, 2) else logical_l,
        )
        if result is not None:
            return result
    shape = check_call(
        q, k, v, joint_q, joint_k, joint_v, joint_strategy, scale, logical_n, logical_l, runtime
    )
    logical_n = as_length_tensor(logical_n, shape.b, shape.n, q.device)
    logical_l = as_length_tensor(logical_l, shape.b, shape.l, q.device)
    if block_mask is not None:
        from ..sparse_layout import spatial_layout
        from .sparse import sparse_joint_attention

        layout = spatial_layout(block_mask, shape.n, q.device)
        return sparse_joint_attention(
            q, k, v, joint_q, joint_k, joint_v, layout,
            scale=scale, logical_n=logical_n, logical_l=logical_l, runtime=runtime,
        )  # fmt: skip
    if _plain_eager(tensors):  # the op's own implementation, already checked: the same result, less host time
        return _forward(checked_call(tensors, scale, logical_n, logical_l), runtime)
    if takes_eager_autograd(tensors):  # the same node as the op's, without torch.library's autograd layer
        return _eager_op(
            q, k, v, joint_q, joint_k, joint_v, joint_strategy, scale, logical_n, logical_l, runtime
        )
    return torch.ops.jointattn.joint_attention(
        q, k, v, joint_q, joint_k, joint_v, joint_strategy, scale, logical_n, logical_l, runtime
    )
