"""Shared test helpers: an independent float64 ground truth, input factories, op-call counting, and the FX
pass's output graph of a module (for the MLIR suites to import)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile


def joint_inputs(b, nh, n, l, dh, *, dtype=torch.float32, device="cpu", seed=0, requires_grad=False):  # noqa: E741
    """Fresh random q, k, v [b,nh,n,dh] and joint_q, joint_k, joint_v [b,nh,l,dh]."""
    g = torch.Generator().manual_seed(seed)
    make = lambda s: (
        torch.randn(b, nh, s, dh, generator=g).to(device=device, dtype=dtype).requires_grad_(requires_grad)
    )
    return make(n), make(n), make(n), make(l), make(l), make(l)


def valid_mask(lengths, size, b):
    """[b, size] bool: position < length (None: all valid)."""
    if lengths is None:
        return torch.ones(b, size, dtype=torch.bool)
    if isinstance(lengths, int):
        lengths = torch.full((b,), lengths)
    return torch.arange(size)[None, :] < lengths.cpu().reshape(b, 1)


def with_padding_poisoned(t, lengths):
    """A copy of t [b, nh, S, dh] whose rows past each batch element's valid length hold NaN, inf and -inf: what
    padding allocated with torch.empty may hold, and what no fused path may let reach a result."""
    t = t.clone()
    junk = torch.tensor([float("nan"), float("inf"), float("-inf")], dtype=t.dtype, device=t.device)
    for bz, keep in enumerate(valid_mask(lengths, t.shape[2], t.shape[0])):
        padded = ~keep.to(t.device)
        shape = t[bz][:, padded].shape
        t[bz][:, padded] = junk[torch.arange(shape.numel(), device=t.device) % 3].reshape(shape)
    return t


def unfused_float64(q, k, v, joint_q, joint_k, joint_v, *, scale=None, logical_n=None, logical_l=None):
    """The unfused graph in float64: cat -> masked attention -> slice, plus lse. Rows with no valid key: 0, -inf."""
    b, n, l = q.shape[0], q.shape[2], joint_q.shape[2]  # noqa: E741
    qq, kk, vv = (torch.cat([a, c], 2).double() for a, c in ((q, joint_q), (k, joint_k), (v, joint_v)))
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    valid = torch.cat([valid_mask(logical_n, n, b), valid_mask(logical_l, l, b)], 1).to(qq.device)
    s = (qq @ kk.transpose(-1, -2)) * scale
    s = s.masked_fill(~valid[:, None, None, :], float("-inf"))
    lse = torch.logsumexp(s, -1)
    p = torch.softmax(s, -1).nan_to_num(0.0)
    o = p @ vv
    return o[:, :, :n], o[:, :, n:], lse


def rel_err(a, b) -> float:
    a, b = a.double(), b.double()
    finite = torch.isfinite(b)
    if not torch.equal(finite, torch.isfinite(a)):
        return float("inf")
    return ((a[finite] - b[finite]).norm() / b[finite].norm().clamp_min(1e-30)).item()


def count_op_calls(fn, *args, op="jointattn::joint_attention", **kwargs):
    """Runs fn once under the profiler; returns (output, number of `op` calls).

    Call a compiled fn once before: compiling evaluates the op on fake tensors, which the profiler sees too.

    With grad mode on, one call shows up twice (its autograd kernel wraps its CPU kernel): count only the
    outermost event of each call."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = fn(*args, **kwargs)
    return out, sum(
        1 for e in prof.events() if e.name == op and (e.cpu_parent is None or e.cpu_parent.name != op)
    )


def sdpa(q, k, v, **kwargs):
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


class _MasksInTheQueryDtype(torch.overrides.TorchFunctionMode):
    """SDPA with a float mask of another dtype than the query: a float32 mask built inside a module (`torch.where`
    with Python scalars) meets float64 queries once the module is doubled. torch 2.13's CPU SDPA then returns
    wrong values on some CPUs (off by up to 3 on random data; its docs ask for a bool mask or the query's dtype),
    so the float64 reference casts the mask, which is what the float32 module computes."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is F.scaled_dot_product_attention:
            mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
            if mask is not None and mask.is_floating_point() and mask.dtype != args[0].dtype:
                if len(args) > 3:
                    args = (*args[:3], mask.to(args[0].dtype), *args[4:])
                else:
                    kwargs["attn_mask"] = mask.to(args[0].dtype)
        return func(*args, **kwargs)


def float64_eager(module, inputs):
    """The module's outputs as a tuple, in float64 on float64 copies of the floating inputs; the module is put
    back to float32."""
    doubled = [x.double() if x.is_floating_point() else x for x in inputs]
    with torch.no_grad(), _MasksInTheQueryDtype():
        out = module.double()(*doubled)
    module.float()
    return out if isinstance(out, tuple) else (out,)


def fx_fused_graph(module, inputs):
    """Captures `module` with Dynamo and runs the FX pass on the graph; returns (graph module, its example
    inputs in Dynamo's order, the pass's report)."""
    from jointattn.passes.fx import fuse_joint_attention

    captured = []

    def backend(gm, example_inputs):
        captured.append((gm, example_inputs, fuse_joint_attention(gm)))
        return gm.forward

    torch.compile(module, backend=backend)(*inputs)
    return captured[0]
