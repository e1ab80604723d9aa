"""Seeing a tensor as its token sets, on both sides of the attention.

Upstream (`PartResolver.resolve`): is this SDPA input a concat of token sets along the sequence axis, perhaps
under position-wise ops (RoPE, casts, transposes)? If so, return one node per token set, building per-part
copies of those ops with the matching slices of their position-dependent operands (cos/sin tables). Nothing
existing is rewired here: if the match later fails, the copies are dead code and vanish.

Downstream (`plan_outputs` / `apply_outputs`): which consumers of the attention output take one token set
back out (slices and splits, possibly after transpose/reshape/to), does every such range line up with the
concat boundary, and — once the op exists — hand each of them the op output it needs.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx

from ..rules import PartRange, locate_range
from .axes import input_axes, output_axis, part_args
from .mutations import mutated_inputs
from .nodes import GraphBuilder, latest, normalize_dim, op_name, same, shape, tensor_val
from .ranges import SPLITS, Range, range_of, split_axis

CAT_NAMES = ("cat", "concat", "concatenate")


@dataclass
class Parts:
    """A tensor seen as token sets along one axis: a node per set (concat order) and their lengths."""

    nodes: list[fx.Node]
    lengths: list


def cat_parts(node: fx.Node, axis: int) -> list[fx.Node] | None:
    if op_name(node) not in CAT_NAMES:
        return None
    tensors = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", node.kwargs.get("axis", 0))
    if not isinstance(tensors, (list, tuple)) or not isinstance(dim, int):
        return None
    if normalize_dim(dim, len(shape(node))) != axis:
        return None
    return list(tensors)


class PartResolver:
    """Memoized upstream resolution; one per graph, shared by every attention in it."""

    def __init__(self, build: GraphBuilder):
        self.build = build
        self.graph = build.graph
        self._memo: dict[tuple[fx.Node, int], Parts | str] = {}
        self._slices: dict[tuple, fx.Node] = {}
        self._tuples: dict[tuple[fx.Node, int], fx.Node] = {}
        self.padding_checks: dict = {}  # (mask part, mask part) -> its run-time check's outputs (fuse.py)

    def resolve(self, node: fx.Node, axis: int) -> Parts | str:
        """The token sets of `node` along `axis`, or a sentence saying why it is not a concat of them."""
        key = (node, axis)
        if key not in self._memo:
            self._memo[key] = self._resolve(node, axis)
        return self._memo[key]

    def _resolve(self, node: fx.Node, axis: int) -> Parts | str:
        if not isinstance(node, fx.Node) or tensor_val(node) is None:
            return "not a tensor computed in this graph"
        tensors = cat_parts(node, axis)
        if tensors is not None:
            return Parts([self._promoted(t, node) for t in tensors], [shape(t)[axis] for t in tensors])
        axes = input_axes(node, axis)
        if axes is None:
            if mutated_inputs(node):
                return f"{node.name} ({op_name(node) or node.op}) is written in place (an in-place call is never replayed)"
            return f"{node.name} ({op_name(node) or node.op}) is neither a concat on the sequence dim nor position-wise"
        full = shape(node)[axis]
        carried, sliced, reasons = {}, {}, []
        for t, a in axes.items():
            if a is None:
                continue
            if not same(shape(t)[a], full):
                return f"{t.name} has {shape(t)[a]} positions where {full} are expected"
            sub = self.resolve(t, a)
            if isinstance(sub, Parts):
                carried[t] = (sub, a)
            else:
                sliced[t] = a
                reasons.append(sub)
        if not carried:
            return reasons[0] if reasons else f"{node.name} has no input that varies along the sequence"
        lengths = next(iter(carried.values()))[0].lengths
        for sub, _ in carried.values():
            if len(sub.lengths) != len(lengths) or not all(same(x, y) for x, y in zip(sub.lengths, lengths)):
                return f"{node.name} combines tensors split into different token sets"
        try:
            nodes = [self._replay(node, axis, p, lengths, carried, sliced) for p in range(len(lengths))]
        except Exception as e:  # noqa: BLE001  any call this table cannot re-express per set: not a match
            return f"{node.name} cannot be applied to each token set: {type(e).__name__}: {e}"
        return Parts(nodes, lengths)

    def _promoted(self, part: fx.Node, cat: fx.Node) -> fx.Node:
        """`part` in the dtype `cat` promotes it to (`torch.cat([half, float])` is float): the same conversion
        the concat applies, so the op sees one dtype."""
        dtype = tensor_val(cat).dtype
        if tensor_val(part).dtype == dtype:
            return part
        with self.graph.inserting_before(cat):
            return self.build.call(torch.ops.aten._to_copy.default, (part,), {"dtype": dtype})

    def slice_like(self, t: fx.Node, axis: int, reference: Parts, ref_axis: int, before: fx.Node) -> Parts:
        """`t` cut along `axis` where `reference`'s token sets are cut (a per-key mask, say), inserted
        before `before` (a point where `t` and the reference parts all exist)."""
        carried = {reference.nodes[0]: (reference, ref_axis)}
        with self.graph.inserting_before(before):
            nodes = [
                self._slice(t, axis, p, reference.lengths, carried) for p in range(len(reference.lengths))
            ]
        return Parts(nodes, reference.lengths)

    def _offsets(self, p: int, lengths, carried) -> tuple:
        """Start and end of part p as ints or SymInt-valued nodes (sizes of the part tensors)."""
        sub, a = next(iter(carried.values()))
        sizes = [self.build.size(sub.nodes[i], a) for i in range(p + 1)]
        start = 0
        for s in sizes[:-1]:
            start = self.build.add(start, s)
        return start, self.build.add(start, sizes[-1]), sizes[-1]

    def _slice(self, t: fx.Node, a: int, p: int, lengths, carried) -> fx.Node:
        """`t[start:end]` along `a` for part p, shared by every replay that cuts `t` at the same bounds. It is
        placed right after the latest of its inputs, so it precedes every consumer, wherever that is."""
        start, end, _ = self._offsets(p, lengths, carried)
        key = (t, a, start, end)
        if key not in self._slices:
            inputs = [t] + [x for x in (start, end) if isinstance(x, fx.Node)]
            with self.graph.inserting_before(latest(self.graph, inputs).next):
                self._slices[key] = self.build.call(torch.ops.aten.slice.Tensor, (t, a, start, end))
        return self._slices[key]

    def _replay(self, node, axis, p, lengths, carried, sliced) -> fx.Node:
        with self.graph.inserting_before(node):
            _, _, part_len = self._offsets(p, lengths, carried)

            def substitute(x):
                if x in carried:
                    return carried[x][0].nodes[p]
                if x in sliced:
                    return self._slice(x, sliced[x], p, lengths, carried)
                return x

            if op_name(node) == "getitem" and tensor_val(node.args[0]) is None:
                return self._replay_tuple_item(node, p, substitute)
            args, kwargs = part_args(node, axis, substitute, part_len)
            return self.build.clone_with(node, args, kwargs)

    def _replay_tuple_item(self, node, p, substitute) -> fx.Node:
        producer, index = node.args
        key = (producer, p)
        if key not in self._tuples:
            with self.graph.inserting_before(producer):
                args = tuple(substitute(a) if isinstance(a, fx.Node) else a for a in producer.args)
                self._tuples[key] = self.build.clone_with(producer, args, dict(producer.kwargs))
        return self.build.call(operator.getitem, (self._tuples[key], index))


@dataclass
class OutputPlan:
    """Where the attention output's token sets are taken back out (see `plan_outputs`)."""

    ranges: dict = field(default_factory=dict)  # node -> [(range node, PartRange)]
    chains: dict = field(default_factory=dict)  # node -> [(position-wise user, its axis)]
    whole_uses: int = 0
    parts_used: set = field(default_factory=set)


def plan_outputs(node: fx.Node, axis: int, lengths) -> OutputPlan | str:
    """Follows `node` (a whole-sequence tensor) through position-wise users down to the ranges taken of it.

    Returns the plan, or the reason to refuse when a range crosses the boundary between token sets.
    """
    plan = OutputPlan()
    reason = _visit(node, axis, lengths, plan)
    return reason if reason is not None else plan


def is_metadata_assert(node: fx.Node) -> bool:
    """`aten._assert_tensor_metadata` (torch.export): checks dtype/device of a value, consumes nothing."""
    return node.target is torch.ops.aten._assert_tensor_metadata.default


def _visit(node, axis, lengths, plan) -> str | None:
    found = []
    for user in list(node.users):
        if is_metadata_assert(user):
            continue
        items = _range_users(user, node, axis)
        if items is not None:
            for item, r in items:
                loc = locate_range(r.start, r.end, lengths)
                if isinstance(loc, str):
                    return loc
                if not _whole_part(loc, lengths) and not (
                    isinstance(loc.start, int) and isinstance(loc.end, int)
                ):
                    return f"slice [{r.start}, {r.end}) is a symbolic sub-range of a token set"
                found.append((item, loc))
                plan.parts_used.add(loc.part)
            continue
        out = output_axis(user, node, axis)
        if out is not None and _replayable(user, out):
            sub = OutputPlan()
            reason = _visit(user, out, lengths, sub)
            if reason is not None:
                return reason
            if sub.ranges:
                plan.chains.setdefault(node, []).append((user, out))
                _merge(plan, sub)
                continue
        plan.whole_uses += 1
    if found:
        plan.ranges[node] = found
    return None


def _replayable(user: fx.Node, axis: int) -> bool:
    """Whether `user` can be re-expressed per token set: checked while planning, so that the rewrite, which
    runs after the op is in the graph, cannot fail half-way. If not, `user` takes the re-joined output."""
    try:
        part_args(user, axis, lambda x: x, 1)
    except Exception:  # noqa: BLE001
        return False
    return True


def _merge(plan: OutputPlan, sub: OutputPlan) -> None:
    plan.ranges.update(sub.ranges)
    for k, v in sub.chains.items():
        plan.chains.setdefault(k, []).extend(v)
    plan.whole_uses += sub.whole_uses
    plan.parts_used |= sub.parts_used


def _range_users(user, source, axis) -> list[tuple[fx.Node, Range]] | None:
    """Range-taking uses of `source` along `axis` through `user`: itself, or each item of a split."""
    r = range_of(user)
    if r is not None and r.source is source and r.axis == axis:
        return [(user, r)]
    if op_name(user) in SPLITS and user.args[0] is source and split_axis(user) == axis:
        items = [(item, range_of(item)) for item in user.users]
        if all(r is not None for _, r in items):
            return items
    return None


def apply_outputs(
    plan: OutputPlan, node: fx.Node, axis: int, part_nodes, resolver: PartResolver
) -> list[fx.Node]:
    """Rewires every range consumer in `plan` below `node` to the part it takes (or a slice of it).

    Returns the consumers it bypassed (now dead unless something else uses them)."""
    bypassed = []
    for item, loc in plan.ranges.get(node, []):
        item.replace_all_uses_with(_part_range(resolver.build, part_nodes, axis, loc, item))
        bypassed.append(item)
    for user, out in plan.chains.get(node, []):
        parts = Parts(part_nodes, [shape(n)[axis] for n in part_nodes])
        user_parts = [_replay_user(user, out, node, parts, p, resolver) for p in range(len(part_nodes))]
        bypassed += apply_outputs(plan, user, out, user_parts, resolver) + [user]
    return bypassed


def fold_concat(cat: fx.Node, axis: int, resolver: PartResolver) -> list[fx.Node]:
    """Hands each range consumer of `cat` (through position-wise ops) the part it takes, when every such
    range lies inside one part. Returns the consumers bypassed; leaves everything as is otherwise."""
    parts = cat_parts(cat, axis)
    if parts is None:
        return []
    plan = plan_outputs(cat, axis, [shape(p)[axis] for p in parts])
    if isinstance(plan, str):
        return []
    return apply_outputs(plan, cat, axis, parts, resolver)


def _whole_part(loc: PartRange, lengths) -> bool:
    return same(loc.start, 0) and same(loc.end, lengths[loc.part])


def _part_range(build: GraphBuilder, part_nodes, axis, loc: PartRange, item: fx.Node) -> fx.Node:
    part = part_nodes[loc.part]
    if _whole_part(loc, [shape(p)[axis] for p in part_nodes]):
        return part
    with build.graph.inserting_before(item):
        return build.call(torch.ops.aten.slice.Tensor, (part, axis, loc.start, loc.end))


def _replay_user(user, out_axis, source, parts: Parts, p, resolver) -> fx.Node:
    axes = input_axes(user, out_axis)
    carried = {source: (parts, axes[source])}
    sliced = {t: a for t, a in axes.items() if a is not None and t is not source}
    return resolver._replay(user, out_axis, p, parts.lengths, carried, sliced)
