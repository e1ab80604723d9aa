"""In-place work in an FX graph, and whether a rewrite would change what it observes.

The fusion pass reads graphs before functionalization: Dynamo's torch-level graph (`setitem`, `x.mul_()`,
`operator.imul`, `relu(x, inplace=True)`) and torch.export's training IR (`aten.copy_`, `aten.fill_` on a
`slice`). Rewiring SDPA to the concat's inputs moves the point where the token sets are read and separates
outputs that were views of one tensor, so a mutation on that path can change a result. This module proves the
absence of such a mutation or names it.

Entry point: `MutationGuard(graph)`, built once per graph before any rewrite, answers
- `input_hazard(reads, replaced, at)`: the rewrite reads the original nodes `reads` at node `at` instead of
  the eager path that ends in `replaced` (the concats and what lies between them and the attention);
- `output_hazard(result, chain, rejoined)`: the attention output `result` is handed out per token set.
Each returns None when the rewrite is safe, else the sentence `jointattn.explain` shows.

Internals: nodes that may share memory are put in one alias family (union-find). What may alias what comes
from ATen's schemas (`Tensor(a)` returns, `Tensor(a!)` writes), keyed by the op's ATen name, so torch-level
calls and ATen overloads read the same facts. Where the schema cannot be trusted (ops that return their input
itself, like `dropout` in eval mode or `type_as` to the same dtype) or no ATen op of that name exists, a result
is assumed to alias every tensor input: a guess can only refuse a fusion, never allow a wrong one.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import torch
import torch.fx as fx

from .nodes import op_name, tensor_val, val

# Python's in-place operators; on a tensor each one mutates its first operand.
_INPLACE_OPERATORS = {
    operator.setitem,
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    operator.ifloordiv,
    operator.imod,
    operator.ipow,
    operator.iand,
    operator.ior,
    operator.ixor,
    operator.ilshift,
    operator.irshift,
    operator.imatmul,
}
# Ops whose schema promises a new tensor but which return their input itself in some cases.
_RETURNS_INPUT = ("dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "type_as")
# Ops that alias their input in some cases and copy it in others: never a view to rely on.
_MAYBE_COPY = ("reshape", "reshape_as", "flatten", "contiguous", "to", "type", "type_as", *_RETURNS_INPUT)


@dataclass(frozen=True)
class _SchemaFacts:
    may_alias_first: bool  # some overload returns a view of (or the same tensor as) its first argument
    always_views: bool  # every overload does


@functools.cache
def _facts(name: str) -> _SchemaFacts | None:
    """Alias facts of the ATen op `name` over its functional overloads (out= variants left out), or None when
    ATen has no op of that name."""
    packet = getattr(torch.ops.aten, name, None) if name and not name.startswith("__") else None
    if packet is None or not hasattr(packet, "overloads"):
        return None
    views = []
    for overload in packet.overloads():
        schema = getattr(packet, overload)._schema
        if any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments):
            continue  # an out= variant, or the in-place op itself
        first = schema.arguments[0].alias_info if schema.arguments else None
        views.append(
            first is not None
            and any(
                r.alias_info is not None and r.alias_info.before_set & first.before_set
                for r in schema.returns
            )
        )
    if not views:
        return _SchemaFacts(False, False)
    return _SchemaFacts(any(views), all(views))


def is_definite_view(node: fx.Node) -> bool:
    """`node` returns a view of its first argument whatever its inputs' layout (transpose, view, slicing)."""
    name = op_name(node)
    if name == "getitem":  # basic indexing only: a tensor index gathers a copy
        index = node.args[1] if len(node.args) > 1 else None
        comps = index if isinstance(index, tuple) else (index,)
        return not any(isinstance(c, (fx.Node, torch.Tensor, list)) for c in comps)
    if name in _MAYBE_COPY:
        return False
    if isinstance(node.target, torch._ops.OpOverload):
        return _overload_aliases_first(node.target._schema)
    facts = _facts(name) if name else None
    return facts is not None and facts.always_views


def _overload_aliases_first(schema) -> bool:
    first = schema.arguments[0].alias_info if schema.arguments else None
    return first is not None and any(
        r.alias_info is not None and r.alias_info.before_set & first.before_set for r in schema.returns
    )


def _tensor_inputs(node: fx.Node) -> list[fx.Node]:
    return [n for n in node.all_input_nodes if _holds_tensors(n)]


def _holds_tensors(node: fx.Node) -> bool:
    v = val(node)
    if isinstance(v, torch.Tensor):
        return True
    return isinstance(v, (tuple, list)) and any(isinstance(x, torch.Tensor) for x in v)


def mutated_inputs(node: fx.Node) -> list[fx.Node]:
    """The tensor nodes `node` writes to in place (empty for a functional call)."""
    if node.op not in ("call_function", "call_method", "call_module"):
        return []
    written: list = []
    first = node.args[0] if node.args else None
    target = node.target
    if node.op == "call_module":
        module = node.graph.owning_module.get_submodule(target) if node.graph.owning_module else None
        if getattr(module, "inplace", False):
            written.append(first)
    elif isinstance(target, torch._ops.OpOverload):
        schema = target._schema
        for i, a in enumerate(schema.arguments):
            if a.alias_info is not None and a.alias_info.is_write:
                written.append(node.args[i] if i < len(node.args) else node.kwargs.get(a.name))
    else:
        name = node.target if node.op == "call_method" else getattr(target, "__name__", "")
        if target in _INPLACE_OPERATORS or (
            isinstance(name, str) and name.endswith("_") and not name.endswith("__") and name != "_"
        ):
            written.append(first)
        elif isinstance(name, str) and name.startswith("__i") and name.endswith("__"):  # x.__iadd__(y)
            written.append(first)
        if node.kwargs.get("inplace") is True:
            written.append(first)
    out = node.kwargs.get("out")
    written += list(out) if isinstance(out, (list, tuple)) else [out]
    found = []
    for w in written:
        for n in w if isinstance(w, (list, tuple)) else [w]:
            if isinstance(n, fx.Node) and _holds_tensors(n) and n not in found:
                found.append(n)
    return found


def _aliased_inputs(node: fx.Node) -> list[fx.Node]:
    """The inputs whose memory the result of `node` may share."""
    if node.op not in ("call_function", "call_method", "call_module") or not _holds_tensors(node):
        return []
    inputs = _tensor_inputs(node)
    written = mutated_inputs(node)
    if written:
        return written  # an in-place op returns the tensor it wrote
    if node.op == "call_module":
        return inputs  # a module of unknown behaviour (nn.Identity returns its input)
    first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    if isinstance(node.target, torch._ops.OpOverload):
        return [first] if first is not None and _overload_aliases_first(node.target._schema) else []
    name = op_name(node)
    if name == "getitem":
        return [first] if first is not None else []
    if name in _RETURNS_INPUT:
        return inputs
    facts = _facts(name) if name else None
    if facts is None:
        return inputs  # not an ATen op: assume the worst
    return [first] if facts.may_alias_first and first is not None else []


@dataclass(frozen=True)
class Mutation:
    node: fx.Node  # the in-place call
    target: fx.Node  # the tensor it writes

    def describe(self, seen_from: fx.Node | None = None) -> str:
        """What is written and by which call; `seen_from` names the tensor whose memory the write reaches."""
        op = op_name(self.node) or self.node.op
        what = op if op == self.node.name else f"{op} ({self.node.name})"
        if seen_from is None or seen_from is self.target:
            return f"{self.target.name} is written in place by {what}"
        return f"{seen_from.name} is written in place by {what} (through {self.target.name}, which shares its memory)"


class MutationGuard:
    """Alias families and in-place writes of one graph, as it is before the pass changes it."""

    def __init__(self, graph: fx.Graph):
        self._parent: dict[fx.Node, fx.Node] = {}
        self._position = {n: i for i, n in enumerate(graph.nodes)}
        self._mutations: dict[fx.Node, list[tuple[int, Mutation]]] = {}
        for node in graph.nodes:
            for source in _aliased_inputs(node):
                self._union(node, source)
        for node in graph.nodes:
            for target in mutated_inputs(node):
                self._mutations.setdefault(self._find(target), []).append(
                    (self._position[node], Mutation(node, target))
                )

    @property
    def has_mutations(self) -> bool:
        return bool(self._mutations)

    def _find(self, node: fx.Node) -> fx.Node:
        root = node
        while self._parent.get(root, root) is not root:
            root = self._parent[root]
        while node is not root:
            node, self._parent[node] = self._parent.get(node, node), root
        return root

    def _union(self, a: fx.Node, b: fx.Node) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra is not rb:
            self._parent[ra] = rb

    def writes_to_family(
        self, node: fx.Node, after: float = -1, before: float = float("inf")
    ) -> Mutation | None:
        """The first in-place write, strictly between positions `after` and `before`, to memory `node` may share."""
        for position, mutation in self._mutations.get(self._find(node), []):
            if after < position < before:
                return mutation
        return None

    def position(self, node: fx.Node) -> int | None:
        return self._position.get(node)

    def input_hazard(self, reads, replaced, at: fx.Node) -> str | None:
        """Why reading the original nodes `reads` at `at`, instead of running the eager path that computes
        `replaced` from them, could see other values, or None.

        The eager path is every node between `reads` and `replaced`. Its own tensors must not be written
        between their creation and `at`; and no node of `reads` may be written after the eager path first
        reads it (before `at` the rewrite would see a later value; after it, autograd would have saved a
        tensor that then changes)."""
        if not self._mutations:
            return None
        reads = set(reads)
        eager = self._eager_path(replaced, reads)
        at_position = self._position.get(at, float("inf"))
        for node in eager:
            mutation = self.writes_to_family(node, self._position[node], at_position)
            if mutation is not None:
                return f"{mutation.describe(node)} before the attention reads it"
        first_read = {}
        for node in eager:
            for source in node.all_input_nodes:
                if source in reads:
                    first_read[source] = min(first_read.get(source, at_position), self._position[node])
        for node in sorted(reads, key=lambda n: self._position.get(n, -1)):
            if node not in self._position:
                continue
            mutation = self.writes_to_family(node, first_read.get(node, at_position))
            if mutation is not None:
                return f"{mutation.describe(node)} after the unfused graph reads it (the fused op would read it later)"
        return None

    def _eager_path(self, replaced, reads: set) -> list[fx.Node]:
        """Tensor-valued original nodes reachable backwards from `replaced` without passing through `reads`
        (nodes the pass created, which have no position, are looked through)."""
        found, work = [], [n for n in replaced if isinstance(n, fx.Node)]
        seen = set()
        while work:
            node = work.pop()
            if node in seen or node in reads or not _holds_tensors(node):
                continue
            seen.add(node)
            if node in self._position:
                found.append(node)
            work.extend(node.all_input_nodes)
        return found

    def output_hazard(self, result: fx.Node, chain, rejoined: bool) -> str | None:
        """Why handing out the attention output `result` per token set could show its users other values
        than one shared tensor does, or None.

        Per-set outputs keep the aliasing of eager's views exactly when every step from `result` to a range
        taken of it is a view in both graphs, and no user needs the whole sequence (it gets a copy)."""
        mutation = self.writes_to_family(result)
        if mutation is None:
            return None
        where = mutation.describe(result)
        if rejoined:
            return f"{where}, and a user of the whole output would read a copy of it in the fused graph"
        for user in chain:
            if not is_definite_view(user):
                return f"{where}, and {user.name} ({op_name(user)}) on the way may copy in one graph and view in the other"
        return None


def original_inputs(node: fx.Node, created: set) -> set[fx.Node]:
    """The nodes of the original graph that `node` reads, looking through the nodes in `created`."""
    found, work, seen = set(), list(node.all_input_nodes), set()
    while work:
        n = work.pop()
        if n in seen:
            continue
        seen.add(n)
        if n in created:
            work.extend(n.all_input_nodes)
        elif tensor_val(n) is not None or _holds_tensors(n):
            found.add(n)
    return found
