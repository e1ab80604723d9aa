"""Post-grad pass: the QK-norm + RoPE prologue of an attention becomes one `jointattn::rms_norm_rope` call.

Entry points: `fuse_prologues(graph) -> int` (how many it replaced) and `PROLOGUE_PASS`, the `CustomGraphPass`
the backend hands inductor as `post_grad_custom_post_pass`.

How: inductor's pattern matcher, used as its `fx_passes/fuse_attention.py` uses it. The search functions are
the op's own formula (`runtime.rms_norm_rope.reference`: Mochi's code, every cast where that code puts it),
the replacements call the op, and `_register_patterns` traces them once, as inductor sees the model by now
(`_trace`). The matcher finds candidates with sizes, dims, dtypes and scalars left open, then traces the
formula again on each candidate's own inputs and requires that graph to the letter: a cast, slice, dim (`-1`,
not `3`), exponent or operand order other than the formula's is refused (another spelling would be another
variant). `_fits` checks what a formula cannot say: CUDA tensors of the kernel's dtypes, an even head dim, a
weight `[dh]`, cos/sin of at most float32 (so every product is float32) that broadcast to `[b, S, nh, dh/2]`
without growing it, a constant eps, and no keyword (`alpha`) the matcher skips. Variants, tried in this order
at each candidate output: norm + RoPE, norm without weight + RoPE, RoPE alone, each traced with float32 x (no
casts) and bfloat16 x (casts; float16 matches the same pattern).

Why post-grad: at ATen level, after AOT autograd, the prologue is one fixed sequence of ATen ops, whether the
model code calls functions or methods. In a training graph the norm's intermediates are saved for the
backward: they have users outside the match, which the matcher refuses, and RoPE alone is not taken after a
norm of the formula (`NORMS` finds it whatever else reads its intermediates). So nothing is replaced there:
inductor's code stays, and the op never needs a backward here. Why at all: inductor compiles Mochi's form
poorly (`kernels/rms_norm_rope.py`; timings in `benchmarks/NOTES-models.md`).
"""

from __future__ import annotations

import inspect

import torch
import torch.fx as fx
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files
from torch._inductor.fx_passes.post_grad import view_to_reshape
from torch._inductor.pattern_matcher import (
    MULTIPLE,
    CallFunction,
    Match,
    PatternExpr,
    PatternMatcherPass,
    fwd_only,
    fx_to_pattern,
    init_once_fakemode,
    is_match,
    register_replacement,
)

from ...runtime import rms_norm_rope as op_module
from ...runtime.rms_norm_rope import KERNEL_DTYPES, reference
from .nodes import same, tensor_val

# Devices whose tensors the op runs its Triton kernel on; elsewhere inductor's own code is kept (tests widen
# this).
DEVICES = {"cuda"}
# Stands for eps while tracing: inductor's `scalar_workaround` turns the constant equal to it into an
# argument, so it must differ from every other constant of the formula.
TRACE_EPS = 1e-6

PATTERNS = PatternMatcherPass(pass_name="jointattn_rms_norm_rope")
# The norms alone, exact and with users anywhere: never replaced (inductor keeps a norm without RoPE), they
# tell RoPE alone where a norm precedes it.
NORMS: list[PatternExpr] = []


def norm_rope(x, weight, cos, sin, eps):
    return reference(x, weight, eps, cos, sin)


def norm_rope_fused(x, weight, cos, sin, eps):
    return torch.ops.jointattn.rms_norm_rope(x, weight, eps, cos, sin)


def unweighted_norm_rope(x, cos, sin, eps):
    return reference(x, None, eps, cos, sin)


def unweighted_norm_rope_fused(x, cos, sin, eps):
    return torch.ops.jointattn.rms_norm_rope(x, None, eps, cos, sin)


def rope(x, cos, sin):
    return reference(x, None, None, cos, sin)


def rope_fused(x, cos, sin):
    return torch.ops.jointattn.rms_norm_rope(x, None, None, cos, sin)


def norm(x, weight, eps):
    return reference(x, weight, eps, None, None)


def unweighted_norm(x, eps):
    return reference(x, None, eps, None, None)


def fuse_prologues(graph: fx.Graph) -> int:
    """Replaces every matched prologue with the op; returns how many."""
    _register_patterns()
    return PATTERNS.apply(graph)


@init_once_fakemode  # once, on fake inputs, outside the graph being compiled (as inductor's own inits)
def _register_patterns(*_ignored, **_ignored_too) -> None:
    """Traces every variant, in the order they are tried at a node, and the norms. (torch 2.11's
    `init_once_fakemode` passes the input device, 2.13's only the arguments the function names.)"""
    for dtype in (torch.float32, torch.bfloat16):  # float16 takes bfloat16's patterns: dtypes are open there
        x, weight, cos, sin = _examples(dtype)
        for search, replace, inputs, check in (
            (norm_rope, norm_rope_fused, (x, weight, cos, sin), _fits),
            (unweighted_norm_rope, unweighted_norm_rope_fused, (x, cos, sin), _fits),
            (rope, rope_fused, (x, cos, sin), _fits_rope_alone),
        ):
            register_replacement(
                search, replace, inputs, _trace, PATTERNS, check, scalar_workaround={"eps": TRACE_EPS}
            )
    for dtype in KERNEL_DTYPES:  # NORMS are exact, casts included
        x, weight, _, _ = _examples(dtype)
        NORMS.extend(
            (_exact_pattern(norm, (x, weight, TRACE_EPS)), _exact_pattern(unweighted_norm, (x, TRACE_EPS)))
        )


def _examples(dtype: torch.dtype):
    """x, weight, cos, sin to trace with (their sizes are open in the patterns)."""
    x, weight = torch.empty(2, 3, 2, 8, dtype=dtype), torch.empty(8, dtype=dtype)
    return x, weight, torch.empty(3, 2, 4), torch.empty(3, 2, 4)


def _exact_pattern(fn, args) -> PatternExpr:
    """fn's trace with every constant as traced, eps open, and users anywhere: it matches where fn is
    computed, whatever else reads its intermediates (a training graph saves some for the backward)."""
    names = [*inspect.signature(fn).parameters]
    pattern = fx_to_pattern(_trace(fn, args), argnames=names, scalar_workaround={"eps": TRACE_EPS})
    pending = [pattern]
    while pending:
        node = pending.pop()
        if isinstance(node, CallFunction):
            node.users = MULTIPLE
            pending.extend(node.args)
    return pattern


def _trace(fn, args, **kwargs) -> fx.GraphModule:
    """`fn` as an ATen graph the way the post-grad passes see the model: `fwd_only`'s decompositions, and
    views turned into reshapes as inductor turns them before its post-grad passes."""
    gm = fwd_only(fn, args, **kwargs)
    view_to_reshape(gm)
    gm.recompile()
    return gm


def _fits(match: Match) -> bool:
    """What the formula cannot say (module docstring): the kernel takes the inputs, eps is a constant."""
    x = tensor_val(match.kwargs["x"])
    if x is None or x.device.type not in DEVICES or x.dtype not in KERNEL_DTYPES or x.dim() != 4:
        return False
    if any(node.kwargs for node in match.nodes):  # the matcher skips keywords the formula lacks (alpha)
        return False
    if "eps" in match.kwargs and not isinstance(match.kwargs["eps"], float):  # a tensor, say
        return False
    dh = x.shape[-1]
    pairs = (*x.shape[:3], dh // 2)
    weights = [tensor_val(match.kwargs["weight"])] if "weight" in match.kwargs else []
    tables = [tensor_val(match.kwargs[name]) for name in ("cos", "sin") if name in match.kwargs]
    return (
        same(dh % 2, 0)
        and all(_on(w, x.device) and _same_shape(w.shape, (dh,)) for w in weights)
        and all(_on(t, x.device) and t.dtype in KERNEL_DTYPES and _broadcasts(t.shape, pairs) for t in tables)
    )


def _fits_rope_alone(match: Match) -> bool:
    """`_fits`, and x is not the output of a norm of the formula (one not taken with its RoPE because its
    intermediates are used elsewhere, as in a training graph)."""
    return _fits(match) and not _is_norm(match.kwargs["x"])


def _is_norm(node) -> bool:
    """node is the output of a norm the op would take, whatever else reads the norm's intermediates."""
    return isinstance(node, fx.Node) and any(is_match(m := p.match(node)) and _fits(m) for p in NORMS)


def _on(t: torch.Tensor | None, device: torch.device) -> bool:
    return t is not None and t.device == device


def _same_shape(a, b) -> bool:
    return len(a) == len(b) and all(same(m, n) for m, n in zip(a, b, strict=True))


def _broadcasts(size, target) -> bool:
    """size broadcasts to target without growing it."""
    try:
        return _same_shape(torch.broadcast_shapes(size, target), target)
    except RuntimeError:
        return False


class ProloguePass(CustomGraphPass):
    """`fuse_prologues` as inductor's post-grad custom pass (hashable for inductor's FX graph cache)."""

    def __call__(self, graph: fx.Graph) -> None:
        fuse_prologues(graph)

    def uuid(self):
        return (get_hash_for_files((__file__, op_module.__file__)), tuple(sorted(DEVICES)))


class ChainedPass(CustomGraphPass):
    """Several post-grad passes in order (ours, then one the user configured)."""

    def __init__(self, passes):
        self.passes = tuple(passes)

    def __call__(self, graph: fx.Graph) -> None:
        for graph_pass in self.passes:
            graph_pass(graph)

    def uuid(self):
        uuids = [p.uuid() if isinstance(p, CustomGraphPass) else None for p in self.passes]
        return None if None in uuids else tuple(uuids)


PROLOGUE_PASS = ProloguePass()

__all__ = ["fuse_prologues", "ProloguePass", "ChainedPass", "PROLOGUE_PASS", "DEVICES"]
