"""The `jointattn` torch.compile backend: `torch.compile(model, backend="jointattn")`.

Entry point: `jointattn_backend(gm, example_inputs, options=...)`, registered through the
`torch_dynamo_backends` entry point (pyproject.toml), so the name works without importing jointattn first.
It runs the FX fusion pass on Dynamo's graph, then hands the graph to inductor (or runs it eagerly, for
bisecting) with one post-grad pass of ours: QK-norm + RoPE prologues become `jointattn::rms_norm_rope`
(`passes/fx/prologue.py`). Options (`torch.compile(..., options={...})`):
- "runtime": the op's runtime for every fused attention: "auto" (default), "reference", "triton", "ttnn", "ttlang";
- "inner": "inductor" (default) or "eager";
- "sparsity": a `jointattn.sparse` pattern, `estimate(keep=... | cdf=...)` or `Sparsity(mask, dense_layers=...,
  layers=...)`: the fused joint attentions (layers, in graph order) it selects become block-sparse
  (`passes/fx/sparsify.py`); each graph's per-layer lines are in `SPARSITY_REPORTS`.
Dynamic shapes: the pass reads symbolic sizes and never specializes them beyond the guards it needs to
prove a slice lines up with the concat boundary, so a recompile for a new shape is correct.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.fx as fx

from ..passes.fx import FusionReport, fuse_joint_attention
from ..runtime.registry import RUNTIME_NAMES

INNER_COMPILERS = ("inductor", "eager")


@dataclass(frozen=True)
class BackendOptions:
    runtime: str = "auto"
    inner: str = "inductor"
    sparsity: object = None

    @classmethod
    def parse(cls, options: dict | None) -> BackendOptions:
        options = dict(options or {})
        unknown = set(options) - {"runtime", "inner", "sparsity"}
        if unknown:
            raise ValueError(
                f"jointattn backend: unknown option(s) {sorted(unknown)}; known: 'runtime', 'inner', 'sparsity'"
            )
        if options.get("sparsity") is not None:
            from ..sparse.plan import Sparsity

            options["sparsity"] = Sparsity.of(options["sparsity"])
        parsed = cls(**options)
        if parsed.runtime not in RUNTIME_NAMES:
            raise ValueError(
                f"jointattn backend: options['runtime'] must be one of {RUNTIME_NAMES}; got {parsed.runtime!r}"
            )
        if parsed.inner not in INNER_COMPILERS:
            raise ValueError(
                f"jointattn backend: options['inner'] must be one of {INNER_COMPILERS}; got {parsed.inner!r}"
            )
        return parsed


# The reports of the graphs compiled so far, newest last (read by tests and `jointattn.explain`).
REPORTS: list[FusionReport] = []
# Per compiled graph with a "sparsity" option: one line per layer (what it became and why).
SPARSITY_REPORTS: list[list[str]] = []


def jointattn_backend(
    gm: fx.GraphModule, example_inputs, *, options: dict | None = None, mode=None
) -> Callable:
    opts = BackendOptions.parse(options)
    REPORTS.append(fuse_joint_attention(gm, runtime=opts.runtime, keep_pytorch_paths=opts.sparsity is None))
    if opts.sparsity is not None:
        from ..passes.fx.sparsify import apply_sparsity

        SPARSITY_REPORTS.append(apply_sparsity(gm, opts.sparsity))
    if opts.inner == "eager":
        return gm.forward
    from torch._inductor.compile_fx import compile_fx

    return compile_fx(gm, example_inputs, config_patches={"post_grad_custom_post_pass": _post_grad_pass()})


def _post_grad_pass():
    """The prologue pass (`passes/fx/prologue.py`), run before a post-grad pass the user configured."""
    from torch._inductor import config

    from ..passes.fx.prologue import PROLOGUE_PASS, ChainedPass

    user_pass = config.post_grad_custom_post_pass
    return PROLOGUE_PASS if user_pass is None else ChainedPass((PROLOGUE_PASS, user_pass))


__all__ = ["jointattn_backend", "BackendOptions", "REPORTS", "SPARSITY_REPORTS"]
