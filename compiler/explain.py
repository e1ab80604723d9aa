"""`jointattn.explain(model, *inputs)`: what the backend would fuse in a model, and why not elsewhere.

Compiles `model` with the fusion pass in front of an eager run, executes it once on `inputs`, and collects
every graph's decisions plus Dynamo's graph breaks. Modeled on `torch._dynamo.explain`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..passes.fx import Decision, fuse_joint_attention


@dataclass
class ExplainOutput:
    graphs: int
    decisions: list[Decision] = field(default_factory=list)
    graph_breaks: list[str] = field(default_factory=list)

    @property
    def fused(self) -> int:
        return sum(d.fused for d in self.decisions)

    def __str__(self) -> str:
        lines = [
            f"graphs: {self.graphs}, graph breaks: {len(self.graph_breaks)}",
            f"attention calls: {len(self.decisions)}, fused into jointattn::joint_attention: {self.fused}",
        ]
        lines += [f"  {d}" for d in self.decisions]
        lines += [f"  break: {b}" for b in self.graph_breaks]
        return "\n".join(lines)


def explain(model, *inputs, runtime: str = "auto", **kwargs) -> ExplainOutput:
    """Runs `model(*inputs, **kwargs)` once under the fusion pass and reports each attention's fate.

    Resets Dynamo's caches first (as `torch._dynamo.explain` does) so every graph is traced afresh.
    """
    torch._dynamo.reset()
    decisions: list[Decision] = []
    graphs = 0

    def backend(gm, example_inputs):
        nonlocal graphs
        graphs += 1
        decisions.extend(fuse_joint_attention(gm, runtime=runtime).decisions)
        return gm.forward

    torch.compile(model, backend=backend)(*inputs, **kwargs)
    torch._dynamo.reset()
    breaks = [str(b.reason) for b in torch._dynamo.explain(model)(*inputs, **kwargs).break_reasons]
    torch._dynamo.reset()
    return ExplainOutput(graphs, decisions, breaks)
