"""The eager SDPA shortcut: a plain eager call that the dispatcher sends to PyTorch's SDPA (the forward; with
autograd recording, the step as the unfused graph runs it, `dispatch.choose_training`) skips the op's layers and
runs cat -> SDPA -> slice itself. With autograd: under PyTorch's own autograd (`_library_step`: the kernel PyTorch
would pick and its C++ backward, no Python in the backward); a call large enough for the join kernel as one
autograd node of its own (`_TrainingSdpa`, whose backward keeps our cuDNN graphs apart from the model's own:
`join.py`).

Why: at small sizes a call is host time, and the op's layers (argument checks, the dispatcher's description,
torch.library's Python autograd wrapper, the backward op, output and gradient copies) cost 3-5x what the unfused
graph costs (H200 host: 246 us vs 46 us per forward at (1, 8, 256, 77, 64), 2.3 ms vs 0.7 ms forward+backward).
The shortcut runs what the unfused graph runs, where the dispatcher says the unfused graph is the faster: small
calls, and training steps whose backward would run cuDNN's anyway (the op's sdpa backward would join the token
sets again, which the unfused graph did once in its forward).

What it keeps: the kernels of the op's "sdpa" path (PyTorch's own choice among cuDNN, flash and memory-efficient,
with the log-sum-exp; the flash kernel on CPU); the op's argument checks and the dispatcher's choice, both cached
per call signature (a model repeats its shapes); the gradient through lse (`_lse_gradient`: one more SDPA forward
and backward, paid only when lse is differentiated). What differs from the op's kernel paths is what the unfused
graph does too: out and joint_out are slices of one SDPA output (not each laid out [b, S, nh, dh]), and there is
no double backward (PyTorch's fused SDPA backwards have none).

Valid lengths: taken as the sdpa path runs them (unpad -> SDPA -> pad: every query row against the valid keys,
cut out of both sets), where the whole batch shares one pair of lengths (read on the host once per lengths tensor
and version, `validation.host_lengths`; not inside a CUDA graph capture) and some key is valid; other padded
calls go to the op.

Not taken: with a block mask, a runtime other than "auto", while compiling, tracing or profiling
(they must see `jointattn::joint_attention` as one op), under dispatch or torch-function modes or torch.func
transforms, for tensor subclasses, or when the dispatcher picks another path for the forward or, with autograd
recording, estimates the op faster over forward + backward (`dispatch.choose_training`: the op's per-pass
choices against the unfused graph, which keeps its joins for the backward and has no op layers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .. import dispatch, join, sdpa_runtime
from .contract import check_call, op_is_watched

_MAX_PLANS = 1024
_PLANS: dict = {}


# Query rows appended to the joined q of `_library_step` on a GPU: copies of its first row (`_query_pad`), whose
# outputs and lse are cut off and whose zero output gradient gives them no share of dk or dv. Why: torch 2.11
# caches cuDNN's SDPA backward graph by q, k and v's sizes and strides and bakes the first call's O and dO strides
# into it (`join.py`); a q longer than k by this many rows is a key no self-attention has (a model's
# cross-attention with s_q = s_kv + 8 and packed q, k, v would share it), without a join into `join.py`'s private
# layout (which torch.cat cannot record for autograd).
QUERY_PAD_ROWS = 8


@dataclass(frozen=True)
class Plan:
    """What one call signature needs at run time: the resolved scale and N, and whether the join kernel runs the
    joins (`join.kernel_takes`: large calls on a GPU; then a training call is one autograd node of ours,
    `_TrainingSdpa`, else it runs under PyTorch's own autograd, `_library_step`)."""

    scale: float
    n: int
    joins_by_kernel: bool = False
    # `sdpa_runtime.kernel_order` of this signature's joined tensors per `sdpa_runtime.switches()` and key count
    kernels: dict = field(default_factory=dict, compare=False)


def try_joint_attention(
    tensors, scale, logical_n=None, logical_l=None
) -> tuple[Tensor, Tensor, Tensor] | None:
    """(out, joint_out, lse) of a `runtime="auto"` call if the shortcut takes it, else None (then the op runs
    it). Valid lengths that leave every token valid are passed as None. Invalid arguments raise the op's own
    errors."""
    if op_is_watched():
        return None
    if not (_length_ok(logical_n) and _length_ok(logical_l)):
        return None
    q, k, v, jq, jk, jv = tensors
    if not (
        type(q) is Tensor
        and type(k) is Tensor
        and type(v) is Tensor
        and type(jq) is Tensor
        and type(jk) is Tensor
        and type(jv) is Tensor
    ):
        return None
    grad = torch.is_grad_enabled() and (
        q.requires_grad or k.requires_grad or v.requires_grad or jq.requires_grad or jk.requires_grad
        or jv.requires_grad
    )  # fmt: skip
    key = (
        q.shape, k.shape, v.shape, jq.shape, jk.shape, jv.shape,
        q.dtype, k.dtype, v.dtype, jq.dtype, jk.dtype, jv.dtype,
        q.device, k.device, v.device, jq.device, jk.device, jv.device,
        scale, grad, dispatch.generation(),
        os.environ.get(dispatch.DISPATCH_ENV), os.environ.get(dispatch.HOPPER_ENV),
        _length_key(logical_n), _length_key(logical_l),
    )  # fmt: skip
    plan = _PLANS.get(key, False)
    if plan is False:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        plan = _PLANS[key] = _plan(tensors, scale, grad, logical_n, logical_l)
    if plan is None:
        return None
    cut = None
    if logical_n is not None or logical_l is not None:
        cut = _shared_valid_lengths(tensors, logical_n, logical_l)
        if cut is None:
            return None
    return _run(tensors, plan, grad, cut)


def _length_ok(x) -> bool:
    return x is None or type(x) is int or type(x) is Tensor


def _length_key(x):
    """A length argument as the plan depends on it: its kind, and an int's value (a tensor's values are read per
    call)."""
    return x if x is None or type(x) is int else (x.dtype, x.shape, x.device)


def _shared_valid_lengths(tensors, logical_n, logical_l) -> tuple[int, int] | None:
    """(valid N, valid L) that the whole batch shares (`sdpa_runtime.length_runs`), or None where the op must
    run the call: lengths that differ across the batch (one SDPA per run there), no valid key at all (0 and lse
    -inf), a value out of range (the op raises, or asserts on the device), or lengths on a GPU while a CUDA
    graph is captured (no host read there: the op runs a kernel)."""
    if any(type(x) is Tensor and x.is_cuda for x in (logical_n, logical_l)) and (
        torch.cuda.is_current_stream_capturing()
    ):
        return None
    (b, _, n, _), l = tensors[0].shape, tensors[3].shape[2]  # noqa: E741
    runs = sdpa_runtime.length_runs(b, n, l, logical_n, logical_l)
    if len(runs) != 1:
        return None
    _, n_valid, l_valid = runs[0]
    if not (0 <= n_valid <= n and 0 <= l_valid <= l and n_valid + l_valid > 0):
        return None
    return n_valid, l_valid


def _plan(tensors, scale, grad: bool, logical_n=None, logical_l=None) -> Plan | None:
    """A signature's plan, or None where the dispatcher runs the op (`choose` for the forward; with autograd,
    `choose_training` over the step). Checked once per signature: the choice depends on shapes, dtype and
    device; a real call's layout only narrows the kernels' choice further, and never away from SDPA."""
    q, jq = tensors[0], tensors[3]
    shape = check_call(*tensors, "rear", scale, logical_n, logical_l, "auto")
    padded = logical_n is not None or logical_l is not None
    problem = dispatch.describe_meta(q, jq, padded)
    try:
        # With autograd, over both passes: the op's per-pass choices can each beat SDPA and still lose the step.
        path = dispatch.choose_training(problem).path if grad else dispatch.choose(problem).path
    except ValueError:  # a forced path that cannot run it: the op raises that error
        return None
    if path != "sdpa":
        return None
    scale = float(scale) if scale is not None else shape.dh**-0.5
    return Plan(scale, shape.n, _joins_by_kernel(tensors))


def _pads_query(q) -> bool:
    """Whether `_library_step` pads the joined q: on a GPU (cuDNN's cache), not on the CPU (no cuDNN there)."""
    return q.is_cuda


def _query_pad(q, jq) -> Tensor | None:
    """`QUERY_PAD_ROWS` copies of the first joined query row, as views (no copy, no gradient), or None where there
    is no row. Why a real row and not zeros: its scores are that row's, so the pad's dS is exactly 0 wherever that
    row's P is finite, and NaN only where that row already puts NaN into dk and dv (zero rows would turn a key of
    -inf into 0 * -inf = NaN where the unfused graph stays finite)."""
    rows = q if q.shape[2] else jq
    if rows.shape[2] == 0:
        return None
    return rows.detach().narrow(2, 0, 1).expand(q.shape[0], q.shape[1], QUERY_PAD_ROWS, q.shape[3])


def _joins_by_kernel(tensors) -> bool:
    """Whether the join kernel runs this call's joins (`join.kernel_takes`: large calls on a GPU). Training calls
    of those take `_TrainingSdpa`, whose joins are that one launch (4-5x torch.cat's speed there); smaller ones
    `_library_step`, whose host time is less (no Python in its backward). Asked of the whole sets: the valid keys
    of a padded call are fewer, which only makes the kernel's choice a closer one."""
    q, k, v, jq, jk, jv = tensors
    return join.kernel_takes([(a, c, a.shape[2], c.shape[2]) for a, c in ((q, jq), (k, jk), (v, jv))])


def _run(tensors, plan: Plan, grad: bool, cut: tuple[int, int] | None = None):
    q, k, v, jq, jk, jv = tensors
    if cut is not None:  # the valid keys alone
        k, v, jk, jv = (
            join.first(t, size) for t, size in ((k, cut[0]), (v, cut[0]), (jk, cut[1]), (jv, cut[1]))
        )
    if grad and plan.joins_by_kernel:
        o, lse = _TrainingSdpa.apply(q, jq, k, jk, v, jv, plan.scale)
    elif grad:
        o, lse = _library_step(q, jq, k, jk, v, jv, plan)
    else:
        if plan.joins_by_kernel:
            qq, kk, vv = join.launch_join(
                [(a, c, a.shape[2], c.shape[2]) for a, c in ((q, jq), (k, jk), (v, jv))]
            )
        else:  # what `join.join_pairs` would run, without asking (a small call is host time)
            qq, kk, vv = torch.cat([q, jq], 2), torch.cat([k, jk], 2), torch.cat([v, jv], 2)
        o, lse = sdpa_runtime.attention(qq, kk, vv, plan.scale, _kernels(plan, qq, kk, vv))
    return o.narrow(2, 0, plan.n), o.narrow(2, plan.n, jq.shape[2]), lse


def _kernels(plan: Plan, qq, kk, vv) -> tuple[str, ...] | None:
    """The kernels for this signature's joined tensors (`sdpa_runtime.kernel_order`), asked once per signature,
    setting of PyTorch's switches and number of keys (a padded call's valid keys vary with its lengths' values).
    The joined tensors' strides follow from those for the layouts models hand over; another layout (channels-last
    sets, which torch.cat keeps) may get the order chosen for the first, which is only the first kernel tried.
    Stored under the switches as they are after the choice (PyTorch sets its priority order on its first one)."""
    if not qq.is_cuda:
        return None
    key = (sdpa_runtime.switches(), kk.shape[2])
    order = plan.kernels.get(key)
    if order is None:
        order = sdpa_runtime.kernel_order(qq, kk, vv, plan.scale)
        plan.kernels[sdpa_runtime.switches(), kk.shape[2]] = order
    return order


def _library_step(q, jq, k, jk, v, jv, plan: Plan):
    """(o, lse) of a training call as the unfused graph runs it, under PyTorch's own autograd: torch.cat, the
    SDPA kernel PyTorch's own choice runs (`sdpa_runtime.attention_on`; its backward a C++ autograd node: no Python
    in the backward of a step whose time is the host's), and `_LseGradient` for lse, which the kernels return
    non-differentiable. On a GPU the joined q has `QUERY_PAD_ROWS` rows more than k and v (`_query_pad`: cuDNN's
    backward graphs keyed apart from a model's own calls); lse is cut back to the joined rows, o is not (`_run` slices
    it)."""
    s = q.shape[2] + jq.shape[2]
    pad = _query_pad(q, jq) if _pads_query(q) else None
    qq = torch.cat([q, jq] if pad is None else [q, jq, pad], 2)
    kk, vv = torch.cat([k, jk], 2), torch.cat([v, jv], 2)
    o, lse, _ = sdpa_runtime.attention_on(qq, kk, vv, plan.scale, _kernels(plan, qq, kk, vv))
    return o, _LseGradient.apply(lse, qq, kk, vv, plan.scale, s)


class _LseGradient(torch.autograd.Function):
    """lse as PyTorch's SDPA kernels return it (non-differentiable), made differentiable in the joined q and k by
    `_lse_gradient`; v gets zeros, as from the op, whose gradients always cover all six inputs. Autograd reaches
    its backward only when a loss reads lse. `rows`: the rows of lse returned (the first; the rest are
    `_library_step`'s query pad, whose gradient is zero), cut here rather than by a narrow that autograd records
    as a node of its own. Like any custom Function's output that views an input, lse may not be changed in
    place (as before the pad)."""

    @staticmethod
    def forward(ctx, lse, qq, kk, vv, scale, rows):
        ctx.save_for_backward(qq, kk)
        ctx.v_shape, ctx.scale = vv.shape, scale
        return lse if rows == lse.shape[2] else lse.narrow(2, 0, rows)

    @staticmethod
    def backward(ctx, grad_lse):
        qq, kk = ctx.saved_tensors
        if grad_lse.shape[2] < qq.shape[2]:  # the query pad's rows: no gradient
            grad_lse = torch.nn.functional.pad(grad_lse, (0, qq.shape[2] - grad_lse.shape[2]))
        dq, dk = _lse_gradient(grad_lse, qq, kk, ctx.scale)
        return None, dq, dk, kk.new_zeros(ctx.v_shape), None, None


class _TrainingSdpa(torch.autograd.Function):
    """The shortcut's training call as one autograd node: the joins (one launch where large, `join.join_pairs`),
    SDPA, and a backward through `sdpa_runtime.attention_backward`, each set's gradient its slice of the joined
    one's (as torch.cat's backward gives).

    Why not PyTorch's own autograd over cat -> SDPA: its cuDNN backward would get q, k and v laid out as a model's
    own call has them and a dO laid out as `narrow`'s backward makes it; torch 2.11 caches that backward's graph
    by q, k and v alone, so the model's own calls and ours would run each other's graphs (wrong gradients, no
    error; `join.py`). Here q, k and v are joined in the private layout, and `attention_backward` keeps it.

    lse is differentiable: with P = softmax(scale * q k^T), d lse_i / d q_i = scale * (P k)_i and
    d lse_i / d k_j = scale * P_ij q_i, so dq = scale * dlse * SDPA(q, k, v=k) and dk = the value gradient of that
    SDPA for the output gradient scale * dlse * q (P^T g): one SDPA forward and one backward on PyTorch's kernels,
    paid only when a loss reads lse (ring attention merges partials by it). The values get zeros from it, as from
    the op, whose gradients always cover all six inputs. No double backward (PyTorch's fused SDPA backwards have
    none)."""

    @staticmethod
    def forward(ctx, q, jq, k, jk, v, jv, scale):
        ctx.set_materialize_grads(False)
        pairs = [(a, c, a.shape[2], c.shape[2]) for a, c in ((q, jq), (k, jk), (v, jv))]
        qq, kk, vv = join.join_pairs(pairs, private=frozenset({0, 1, 2}))
        o, lse, ctx.backend = sdpa_runtime.attention_on(qq, kk, vv, scale)
        ctx.save_for_backward(qq, kk, vv, o, lse)
        ctx.scale, ctx.rows = scale, ((q.shape[2], jq.shape[2]), (k.shape[2], jk.shape[2]))
        return o, lse

    @staticmethod
    def backward(ctx, grad_o, grad_lse):
        qq, kk, vv, o, lse = ctx.saved_tensors
        if grad_o is not None:
            dq, dk, dv = sdpa_runtime.attention_backward(grad_o, qq, kk, vv, o, lse, ctx.scale, ctx.backend)
        else:
            dq, dk, dv = torch.zeros_like(qq), torch.zeros_like(kk), torch.zeros_like(vv)
        if grad_lse is not None:
            lse_dq, lse_dk = _lse_gradient(grad_lse, qq, kk, ctx.scale)
            dq, dk = dq + lse_dq, dk + lse_dk
        queries, keys = ctx.rows
        return (*dq.split(queries, 2), *dk.split(keys, 2), *dv.split(keys, 2), None)


def _lse_gradient(grad_lse, qq, kk, scale: float):
    """(dq, dk) of lse for its gradient `grad_lse` (`_TrainingSdpa`'s formula). The kernel's output gradient is in
    q's dtype: weights scaled per (batch, head) by a power of two to at most 1 first (exact in float32), so that
    small ones keep fp16's precision, and dk scaled back after."""
    weight = scale * grad_lse.float()[..., None]
    p_k, lse = sdpa_runtime.attention(qq, kk, kk, scale)  # P k, and the same lse
    dq = (weight * p_k.float()).to(qq.dtype)
    peak = weight.abs().amax(dim=(2, 3), keepdim=True)
    usable = torch.isfinite(peak) & (peak > 0)
    unit = torch.where(usable, torch.exp2(torch.ceil(torch.log2(peak.clamp_min(1e-38)))), 1.0)
    g = (weight / unit * qq.float()).to(qq.dtype)
    dk = sdpa_runtime.attention_backward(g, qq, kk, kk, p_k, lse, scale)[2]
    return dq, (dk.float() * unit).to(kk.dtype)
