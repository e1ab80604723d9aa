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
"""

from __future__ import annotations

import torch
from torch import Tensor

from .reference import reference_vjp
from .registry import RUNTIME_NAMES, JointCall, select_runtime
from .validation import (
    JointShape,
    as_length_tensor,
    assert_lengths_async,
    check_length_arg,
    check_options,
    check_tensors,
)

OP_NAME = "jointattn::joint_attention"
BACKWARD_OP_NAME = "jointattn::joint_attention_backward"


def _check_call(q, k, v, joint_q, joint_k, joint_v, joint_strategy, scale, logical_n, logical_l, runtime):
    shape = check_tensors(q, k, v, joint_q, joint_k, joint_v)
    check_options(joint_strategy, scale, runtime, RUNTIME_NAMES)
    check_length_arg("logical_n", logical_n, shape, q.device)
    check_length_arg("logical_l", logical_l, shape, q.device)
    return shape


def _make_call(q, k, v, joint_q, joint_k, joint_v, joint_strategy, scale, logical_n, logical_l, runtime):
    shape = _check_call(
        q, k, v, joint_q, joint_k, joint_v, joint_strategy, scale, logical_n, logical_l, runtime
    )
    assert_lengths_async("logical_n", logical_n, shape.n)
    assert_lengths_async("logical_l", logical_l, shape.l)
    resolved = float(scale) if scale is not None else shape.dh**-0.5
    return JointCall(q, k, v, joint_q, joint_k, joint_v, resolved, logical_n, logical_l)


def empty_outputs(q: Tensor, joint_q: Tensor):
    """Outputs as the op lays them out, for code that launches a runtime itself (the MLIR emitter)."""
    b, nh, n, dh = q.shape
    return _empty_outputs(q, JointShape(b, nh, n, joint_q.shape[2], dh))


def _empty_outputs(q: Tensor, shape: JointShape):
    """Outputs in [b, S, nh, dh] memory order, viewed as [b, nh, S, dh]; lse [b, nh, N+L] float32."""
    b, nh, n, l, dh = shape.b, shape.nh, shape.n, shape.l, shape.dh  # noqa: E741
    out = q.new_empty((b, n, nh, dh)).transpose(1, 2)
    joint_out = q.new_empty((b, l, nh, dh)).transpose(1, 2)
    lse = q.new_empty((b, nh, n + l), dtype=torch.float32)
    return out, joint_out, lse


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
    call = _make_call(
        q, k, v, joint_q, joint_k, joint_v, joint_strategy, scale, logical_n, logical_l, runtime
    )
    return _forward(call, runtime)


def _forward(call: JointCall, runtime: str):
    out, joint_out, lse = _empty_outputs(call.q, call.shape)
    select_runtime(runtime, call).forward(call, out, joint_out, lse)
    return out, joint_out, lse


def _plain_eager(tensors) -> bool:
    """Whether a call can skip the dispatcher's custom-op layers (~80 µs of host time per call on an H200's
    host): eager, no autograd to record, and nobody watching the dispatcher (tracing, dispatch or function
    modes, fake tensors, the profiler), who must see `jointattn::joint_attention` as one op."""
    if torch.compiler.is_compiling() or torch.autograd.profiler._is_profiler_enabled:
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    if _get_current_dispatch_mode() is not None or torch._C._is_torch_function_mode_enabled():
        return False
    return all(type(t) is torch.Tensor for t in tensors)


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
    shape = _check_call(
        q, k, v, joint_q, joint_k, joint_v, joint_strategy, scale, logical_n, logical_l, runtime
    )
    return _empty_outputs(q, shape)


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
    call = _make_call(q, k, v, joint_q, joint_k, joint_v, "rear", scale, logical_n, logical_l, runtime)
    grads = select_runtime(runtime, call).backward(
        call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse
    )
    return _laid_out_like_inputs(call.tensors, grads)


def _laid_out_like_inputs(inputs, grads):
    """Gradients as the fake kernel promises them: dtype and strides of the inputs, no two sharing memory.

    A runtime that already returns such tensors (the Triton backward does) is passed through uncopied."""
    result, storages = [], set()
    for t, g in zip(inputs, grads):
        storage = g.untyped_storage().data_ptr()
        if g.dtype != t.dtype or g.stride() != t.stride() or g.shape != t.shape or storage in storages:
            g = torch.empty_like(t).copy_(g)
            storage = g.untyped_storage().data_ptr()
        storages.add(storage)
        result.append(g)
    return tuple(result)


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
        call = _make_call(
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
            "triton" or "ttnn".

    Returns:
        out [b, nh, N, dh], joint_out [b, nh, L, dh] and lse [b, nh, N+L] (float32, natural log).
    """
    shape = _check_call(
        q, k, v, joint_q, joint_k, joint_v, joint_strategy, scale, logical_n, logical_l, runtime
    )
    logical_n = as_length_tensor(logical_n, shape.b, shape.n, q.device)
    logical_l = as_length_tensor(logical_l, shape.b, shape.l, q.device)
    tensors = (q, k, v, joint_q, joint_k, joint_v)
    if _plain_eager(tensors):  # the op's own implementation, already checked: the same result, less host time
        assert_lengths_async("logical_n", logical_n, shape.n)
        assert_lengths_async("logical_l", logical_l, shape.l)
        resolved = float(scale) if scale is not None else shape.dh**-0.5
        return _forward(JointCall(*tensors, resolved, logical_n, logical_l), runtime)
    return torch.ops.jointattn.joint_attention(
        q, k, v, joint_q, joint_k, joint_v, joint_strategy, scale, logical_n, logical_l, runtime
    )
