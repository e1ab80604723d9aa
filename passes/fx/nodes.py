"""Reading and writing FX nodes at either IR level the pass sees.

The pass runs on Dynamo's torch-level graphs (`torch.cat`, `Tensor.transpose` as a method, `operator.getitem`
with slices, ...) and on ATen graphs such as `torch.export`'s (`aten.cat.default`, `aten.slice.Tensor`, ...).
`op_name` folds both into one vocabulary (the ATen packet name), so the rest of the pass asks "is this a cat"
once. New nodes get a fake-tensor `example_value` computed from their inputs' metadata, so later steps can
read shapes of what this pass created exactly like Dynamo's own nodes.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
import torch.fx as fx
from torch.fx.experimental.symbolic_shapes import statically_known_true

_OPERATOR_NAMES = {
    operator.add: "add",
    operator.sub: "sub",
    operator.mul: "mul",
    operator.truediv: "div",
    operator.neg: "neg",
    operator.pow: "pow",
    operator.invert: "bitwise_not",
    operator.and_: "bitwise_and",
    operator.or_: "bitwise_or",
    operator.lt: "lt",
    operator.le: "le",
    operator.gt: "gt",
    operator.ge: "ge",
    operator.eq: "eq",
    operator.ne: "ne",
    operator.getitem: "getitem",
}


def op_name(node: fx.Node) -> str | None:
    """The ATen-style name of what `node` computes ("cat", "transpose", "scaled_dot_product_attention")."""
    if node.op == "call_method":
        return node.target
    if node.op != "call_function":
        return None
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.name.split("::", 1)[1]
    if target in _OPERATOR_NAMES:
        return _OPERATOR_NAMES[target]
    return getattr(target, "__name__", None)


def overload_name(node: fx.Node) -> str | None:
    """The ATen overload (`add.Tensor`, `neg.default`) where the graph has chosen one (ATen graphs), else
    `op_name`'s packet (Dynamo's torch-level calls): the names `passes/positionwise.py` is keyed by."""
    target = node.target
    if node.op == "call_function" and isinstance(target, torch._ops.OpOverload):
        return f"{op_name(node)}.{target._overloadname}"
    return op_name(node)


def val(x):
    """The fake value behind a node (or the literal itself): a FakeTensor, SymInt, tuple, or constant."""
    if isinstance(x, fx.Node):
        return x.meta.get("example_value", x.meta.get("val"))
    return x


def tensor_val(x) -> torch.Tensor | None:
    v = val(x)
    return v if isinstance(v, torch.Tensor) else None


def shape(x) -> tuple:
    t = tensor_val(x)
    return tuple(t.shape) if t is not None else ()


def arg(node: fx.Node, index: int, name: str, default=None):
    """Positional-or-keyword argument `name` at position `index` of a call."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def varargs(node: fx.Node, start: int, name: str) -> list:
    """Sizes/dims given either as one sequence (`x.view((a, b))`, `torch.permute(x, dims)`) or spread out
    (`x.view(a, b)`, `x.permute(0, 2, 1)`)."""
    rest = node.args[start:]
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        return list(rest[0])
    if rest:
        return list(rest)
    value = node.kwargs.get(name)
    return list(value) if isinstance(value, (list, tuple)) else ([] if value is None else [value])


def same(a, b) -> bool:
    """Sizes equal for every value of the symbols (never guesses, never adds a guard)."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    try:
        return statically_known_true(a == b)
    except Exception:
        return False


def normalize_dim(dim: int, rank: int) -> int:
    return dim + rank if dim < 0 else dim


def fake_mode_of(graph: fx.Graph):
    for node in graph.nodes:
        t = tensor_val(node)
        if t is not None and hasattr(t, "fake_mode"):
            return t.fake_mode
    return None


def _meta_arg(x):
    if isinstance(x, fx.Node):
        return val(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_meta_arg(y) for y in x)
    if isinstance(x, slice):
        return slice(_meta_arg(x.start), _meta_arg(x.stop), _meta_arg(x.step))
    return x


def infer_meta(node: fx.Node, fake_mode) -> None:
    """Runs `node` on its inputs' fake values to give it an `example_value` like Dynamo's own nodes."""
    args = _meta_arg(node.args)
    kwargs = {k: _meta_arg(v) for k, v in node.kwargs.items()}
    with fake_mode:
        if node.op == "call_method":
            value = getattr(args[0], node.target)(*args[1:], **kwargs)
        else:
            value = node.target(*args, **kwargs)
    node.meta["example_value"] = value
    node.meta["val"] = value


def latest(graph: fx.Graph, nodes) -> fx.Node:
    """The node of `nodes` that comes last in the graph: a point after which all of them exist."""
    position = {n: i for i, n in enumerate(graph.nodes)}
    return max(nodes, key=position.__getitem__)


class GraphBuilder:
    """Inserts calls (at the graph's current insertion point) with fake metadata, and remembers what it made
    so the pass can remove its own leftovers without touching anything it did not create."""

    def __init__(self, graph: fx.Graph, fake_mode):
        self.graph = graph
        self.fake_mode = fake_mode
        self.created: list[fx.Node] = []

    def call(self, target, args: Sequence, kwargs: dict | None = None, *, method: bool = False) -> fx.Node:
        make = self.graph.call_method if method else self.graph.call_function
        node = make(target, tuple(args), kwargs or {})
        try:
            infer_meta(node, self.fake_mode)
        except Exception:
            self.graph.erase_node(node)  # a call its inputs reject must not stay behind to run
            raise
        self.created.append(node)
        return node

    def clone_with(self, node: fx.Node, args: Sequence, kwargs: dict) -> fx.Node:
        """A copy of `node` calling the same target on new arguments."""
        return self.call(node.target, args, kwargs, method=node.op == "call_method")

    def size(self, tensor: fx.Node, dim: int):
        """The size of `tensor` along `dim`: an int when static, else a node computing the SymInt."""
        size = shape(tensor)[dim]
        if isinstance(size, int):
            return size
        return self.call(torch.ops.aten.sym_size.int, (tensor, dim))

    def add(self, a, b):
        if isinstance(a, int) and isinstance(b, int):
            return a + b
        if isinstance(a, int) and a == 0:
            return b
        return self.call(operator.add, (a, b))
