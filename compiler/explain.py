"""`jointattn.explain(model, *inputs)`: what the backend would fuse in a model, and why not elsewhere.

Compiles `model` with the fusion pass in front of an eager run, executes it once on `inputs`, and collects
every graph's decisions plus Dynamo's graph breaks, and, for each fused op, the path the dispatcher
(`runtime/dispatch.py`) plans for its forward (and backward, where an input requires grad) on the device it runs
on. Modeled on `torch._dynamo.explain`.
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
    dispatch: list[str] = field(default_factory=list)  # per fused op: the planned path of each pass, and why
    sparsity: list[str] = field(default_factory=list)  # per layer, with a sparsity plan: what it became, why

    @property
    def fused(self) -> int:
        return sum(d.fused for d in self.decisions)

    def __str__(self) -> str:
        lines = [
            f"graphs: {self.graphs}, graph breaks: {len(self.graph_breaks)}",
            f"attention calls: {len(self.decisions)}, fused into jointattn::joint_attention: {self.fused}",
        ]
        lines += [f"  {d}" for d in self.decisions]
        lines += [f"  dispatch {p}" for p in self.dispatch]
        lines += [f"  sparsity {s}" for s in self.sparsity]
        lines += [f"  break: {b}" for b in self.graph_breaks]
        return "\n".join(lines)


def explain(model, *inputs, runtime: str = "auto", sparsity=None, **kwargs) -> ExplainOutput:
    """Runs `model(*inputs, **kwargs)` once under the fusion pass and reports each attention's fate; with
    `sparsity` (the backend option's value), also what the sparsity pass makes of each layer.

    Resets Dynamo's caches first (as `torch._dynamo.explain` does) so every graph is traced afresh.
    """
    torch._dynamo.reset()
    decisions: list[Decision] = []
    plans: list[str] = []
    layers: list[str] = []
    graphs = 0

    def backend(gm, example_inputs):
        nonlocal graphs
        graphs += 1
        report = fuse_joint_attention(gm, runtime=runtime, keep_pytorch_paths=sparsity is None)
        decisions.extend(report.decisions)
        if sparsity is not None:  # before the dispatch lines: a layer made sparse no longer runs the dense op
            from ..passes.fx.sparsify import apply_sparsity

            layers.extend(apply_sparsity(gm, sparsity))
        plans.extend(dispatch_plans(gm, runtime))
        return gm.forward

    torch.compile(model, backend=backend)(*inputs, **kwargs)
    torch._dynamo.reset()
    breaks = [str(b.reason) for b in torch._dynamo.explain(model)(*inputs, **kwargs).break_reasons]
    torch._dynamo.reset()
    return ExplainOutput(graphs, decisions, breaks, plans, layers)


def dispatch_plans(gm, runtime: str) -> list[str]:
    """For each fused op in `gm`: the path each pass takes under `runtime`, as the dispatcher plans it."""
    from ..runtime import ops
    from ..runtime.dispatch import choose, describe_meta

    found = []
    for node in gm.graph.nodes:
        if node.target is ops.BLOCK_SPARSE_JOINT_ATTENTION:
            found.append(_sparse_plan(node, runtime))
            continue
        masked = node.target is ops.MASKED_JOINT_ATTENTION
        if node.target is not ops.JOINT_ATTENTION and not masked:
            continue
        q, joint_q = (n.meta.get("example_value", n.meta.get("val")) for n in (node.args[0], node.args[3]))
        if runtime != "auto":
            found.append(f"{node.name}: runtime={runtime!r}, as named")
            continue
        padded = masked or node.args[8] is not None or node.args[9] is not None
        plan = f"{node.name}: forward -> {choose(describe_meta(q, joint_q, padded))}"
        tensors = [n.meta.get("example_value", n.meta.get("val")) for n in node.args[:6]]
        if any(getattr(t, "requires_grad", False) for t in tensors):
            plan += f"; backward -> {choose(describe_meta(q, joint_q, padded, backward=True))}"
        if masked:
            plan += " (when the key mask is a prefix; otherwise the exact reference)"
        found.append(plan)
    return found


def _sparse_plan(node, runtime: str) -> str:
    """A block-sparse op's kernels, as `runtime/sparse_runtime.py` picks them (`dispatch.choose_sparse`)."""
    from ..runtime.dispatch import choose_sparse, describe_meta

    args = node.args
    named = args[16] if len(args) > 16 else runtime
    if named == "reference":
        return f"{node.name}: block-sparse, runtime='reference', as named"
    q, joint_q = (n.meta.get("example_value", n.meta.get("val")) for n in (args[0], args[3]))
    if q.device.type != "cuda":
        return f"{node.name}: block-sparse -> reference (off CUDA the sparse op runs its exact reference)"
    q_block, kv_block, spatial_padded = args[11], args[12], args[14] is not None
    padded = spatial_padded or args[15] is not None

    def plan_for(problem) -> str:
        choice = choose_sparse(problem, q_block, kv_block, spatial_padded)
        whole = choose_sparse(problem, q_block, kv_block, False) if spatial_padded else choice
        if whole.path == choice.path:
            return str(choice)
        # spatial lengths that are N for every batch entry at run time are dropped (Mochi's checked masks)
        return f"{whole} where every spatial length is N at run time, else {choice}"

    plan = f"{node.name}: block-sparse forward -> {plan_for(describe_meta(q, joint_q, padded))}"
    tensors = [n.meta.get("example_value", n.meta.get("val")) for n in args[:6]]
    if any(getattr(t, "requires_grad", False) for t in tensors):
        plan += f"; backward -> {plan_for(describe_meta(q, joint_q, padded, backward=True))}"
    return plan
