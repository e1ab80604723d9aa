"""How a position-wise FX node maps the sequence axis (the FX twin of `passes/mlir/axes.py`).

Which ops are position-wise, and of what kind (elementwise, cast, permute, reshape, along other dims, stack),
is the shared table `passes/positionwise.py`, keyed by ATen names; this module reads the nodes' arguments:
elementwise math with broadcasting (RoPE's `x * cos + rot(x) * sin`), casts, views that leave the axis whole
(transpose, permute, reshape of the other dims), reductions and norms over the other dims (RMSNorm),
stack/cat along other dims, and two FX-only forms: basic indexing of the other dims (`x[..., 0::2]`) and
items of unbind/split along other dims (`getitem`).

Entry point: `handler_for(node)`; a handler answers `input_axes(node, out_axis)` (for each tensor input, the
axis that feeds `out_axis`, or None where the input is broadcast along it; None overall when the op is not
position-wise there) and `part_args(node, out_axis, substitute, part_len)` (the call's arguments for one part).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.fx as fx

from .. import positionwise
from .mutations import mutated_inputs
from .nodes import arg, normalize_dim, op_name, overload_name, same, shape, tensor_val, val, varargs

AxisMap = dict  # fx.Node -> int | None  (None: broadcast along the axis)


def _substitute_all(x, substitute):
    if isinstance(x, fx.Node):
        return substitute(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_substitute_all(y, substitute) for y in x)
    if isinstance(x, dict):
        return {k: _substitute_all(v, substitute) for k, v in x.items()}
    return x


def _tensor_inputs(node: fx.Node) -> list[fx.Node]:
    found = []

    def visit(x):
        if isinstance(x, fx.Node):
            if tensor_val(x) is not None and x not in found:
                found.append(x)
        elif isinstance(x, (list, tuple)):
            for y in x:
                visit(y)
        elif isinstance(x, dict):
            for y in x.values():
                visit(y)

    visit(node.args)
    visit(node.kwargs)
    return found


class Handler:
    """Default: same call on substituted tensor inputs."""

    def input_axes(self, node: fx.Node, out_axis: int) -> AxisMap | None:
        raise NotImplementedError

    def part_args(self, node: fx.Node, out_axis: int, substitute: Callable, part_len):
        return _substitute_all(node.args, substitute), _substitute_all(node.kwargs, substitute)


class Pointwise(Handler):
    """Elementwise ops: inputs aligned from the right, as broadcasting is."""

    def input_axes(self, node, out_axis):
        out = shape(node)
        inputs = _tensor_inputs(node)
        if not inputs or not _is_broadcast_of(out, [shape(t) for t in inputs]):
            return None
        axes = {}
        for t in inputs:
            a = out_axis - (len(out) - len(shape(t)))
            axes[t] = a if a >= 0 and not same(shape(t)[a], 1) else None
        return axes


class Cast(Pointwise):
    """`.to(dtype)`, `.float()`, `.type_as(other)`, `contiguous()`...: the first argument is the data."""

    def input_axes(self, node, out_axis):
        data = node.args[0] if node.args else None
        if not isinstance(data, fx.Node) or not same_shape(shape(data), shape(node)):
            return None
        axes = {t: None for t in _tensor_inputs(node)}  # e.g. type_as's `other` only lends its dtype
        axes[data] = out_axis
        return axes


class Permute(Handler):
    def _perm(self, node):
        rank = len(shape(node))
        name = op_name(node)
        if name in ("transpose", "swapaxes", "swapdims"):
            d0 = normalize_dim(arg(node, 1, "dim0"), rank)
            d1 = normalize_dim(arg(node, 2, "dim1"), rank)
            perm = list(range(rank))
            perm[d0], perm[d1] = perm[d1], perm[d0]
            return perm
        if name == "t":
            return list(reversed(range(rank)))
        if name == "permute":
            return [normalize_dim(d, rank) for d in varargs(node, 1, "dims")]
        if name == "movedim":
            src, dst = arg(node, 1, "source"), arg(node, 2, "destination")
            src = [src] if isinstance(src, int) else list(src)
            dst = [dst] if isinstance(dst, int) else list(dst)
            src = [normalize_dim(d, rank) for d in src]
            dst = [normalize_dim(d, rank) for d in dst]
            perm = [None] * rank
            for s, d in zip(src, dst):
                perm[d] = s
            rest = iter(d for d in range(rank) if d not in src)
            return [p if p is not None else next(rest) for p in perm]
        return None

    def input_axes(self, node, out_axis):
        perm = self._perm(node)
        if perm is None or any(not isinstance(p, int) for p in perm):
            return None
        return {node.args[0]: perm[out_axis]}


def same_shape(a, b) -> bool:
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))


def _is_broadcast_of(out, shapes) -> bool:
    rank = max(len(s) for s in shapes)
    if len(out) != rank:
        return False
    for i in range(1, rank + 1):
        sizes = [s[-i] for s in shapes if len(s) >= i]
        non_one = [s for s in sizes if not same(s, 1)]
        expected = non_one[0] if non_one else 1
        if not same(out[-i], expected) or any(not same(s, expected) for s in non_one):
            return False
    return True


def _prod(sizes):
    return math.prod(sizes) if sizes else 1


def reshape_input_axis(in_shape, out_shape, out_axis) -> int | None:
    """The input axis that a row-major reshape keeps whole as `out_axis`: same size and the same number
    of elements before it (so every position keeps its index along the axis), or None."""
    before = _prod(out_shape[:out_axis])
    for a, size in enumerate(in_shape):
        if same(size, out_shape[out_axis]) and same(_prod(in_shape[:a]), before):
            return a
    return None


class Reshape(Handler):
    """view/reshape/flatten/unflatten/unsqueeze/squeeze: any row-major reinterpretation."""

    SIZED = ("view", "reshape", "_unsafe_view")

    def input_axes(self, node, out_axis):
        data = node.args[0]
        if not isinstance(data, fx.Node):
            return None
        a = reshape_input_axis(shape(data), shape(node), out_axis)
        if a is None or (
            op_name(node) == "unflatten" and normalize_dim(arg(node, 1, "dim"), len(shape(data))) == a
        ):
            return None
        if op_name(node) == "squeeze" and not self._squeezes_only_other_dims(node, a):
            return None
        return {data: a}

    @staticmethod
    def _squeezes_only_other_dims(node, axis) -> bool:
        """`squeeze()` or `squeeze(axis)` would drop the traced axis from a token set of length 1 (the whole
        sequence keeps it), so replaying it per set is only right with explicit dims that exclude it."""
        dims = varargs(node, 1, "dim")
        rank = len(shape(node.args[0]))
        return (
            bool(dims)
            and all(isinstance(d, int) for d in dims)
            and axis not in [normalize_dim(d, rank) for d in dims]
        )

    def part_args(self, node, out_axis, substitute, part_len):
        if op_name(node) not in self.SIZED:
            return super().part_args(node, out_axis, substitute, part_len)
        sizes = varargs(node, 1, "size" if node.op == "call_function" else "shape")
        sizes = list(sizes)
        sizes[out_axis] = part_len
        if any(isinstance(s, int) and s == -1 for i, s in enumerate(sizes) if i != out_axis):
            sizes = [shape(node)[i] if isinstance(s, int) and s == -1 else s for i, s in enumerate(sizes)]
            if any(not isinstance(s, (int, fx.Node)) for s in sizes):
                raise CannotReplay("a -1 size that stands for a symbolic dim")
        return (substitute(node.args[0]), sizes), {}


class CannotReplay(Exception):
    pass


def _index_components(index):
    return index if isinstance(index, tuple) else (index,)


def _is_full_slice(s, size) -> bool:
    if not isinstance(s, slice) or s.step not in (None, 1):
        return False
    start_ok = s.start is None or (isinstance(s.start, int) and s.start == 0)
    stop = val(s.stop)
    stop_ok = (
        s.stop is None
        or (isinstance(stop, int) and isinstance(size, int) and stop >= size)
        or (isinstance(stop, int) and stop >= 2**62)
    )
    return start_ok and stop_ok


class BasicIndex(Handler):
    """`x[..., 0::2]`, `x[:, None]`, `x[0]`: basic indexing that leaves the traced axis whole."""

    def _layout(self, node):
        """For each output dim, the input dim it comes from (None for a new axis); plus per-input-dim index."""
        data, index = node.args
        in_shape = shape(data)
        comps = list(_index_components(index))
        if any(isinstance(c, (fx.Node, torch.Tensor, list)) and not _is_symint_node(c) for c in comps):
            return None
        if sum(c is Ellipsis for c in comps) > 1:
            return None
        consumed = sum(1 for c in comps if c is not None and c is not Ellipsis)
        if Ellipsis in comps:
            i = comps.index(Ellipsis)
            comps[i : i + 1] = [slice(None)] * (len(in_shape) - consumed)
        comps += [slice(None)] * (len(in_shape) - sum(1 for c in comps if c is not None))
        out_from, per_input, d = [], {}, 0
        for c in comps:
            if c is None:
                out_from.append(None)
            elif isinstance(c, slice):
                per_input[d] = c
                out_from.append(d)
                d += 1
            else:  # an integer index drops the dim
                per_input[d] = c
                d += 1
        return out_from, per_input, in_shape

    def input_axes(self, node, out_axis):
        if not isinstance(val(node.args[0]), torch.Tensor):
            return None
        layout = self._layout(node)
        if layout is None:
            return None
        out_from, per_input, in_shape = layout
        a = out_from[out_axis]
        if a is None:
            return {node.args[0]: None}
        if not _is_full_slice(per_input[a], in_shape[a]):
            return None  # a range along the traced axis: a split point, not position-wise
        return {node.args[0]: a}


def _is_symint_node(x) -> bool:
    return isinstance(x, fx.Node) and isinstance(val(x), (int, torch.SymInt))


class DimOp(Handler):
    """Ops that act along dims that must not be the traced axis (`positionwise.along_dims` says which
    argument names them): select, narrow/slice of other dims, softmax and reductions over other dims, norms
    over trailing dims."""

    def _dims(self, node, rank):
        where = positionwise.along_dims(overload_name(node))
        dim = arg(node, where.at, where.name, where.default)
        if dim is None:
            return None, True
        if where.trailing:  # a normalized_shape
            count = 1 if isinstance(dim, int) else len(dim)
            return list(range(rank - count, rank)), True
        dims = [dim] if isinstance(dim, int) else list(dim)
        keep = (
            where.keeps if where.keepdim_at is None else bool(arg(node, where.keepdim_at, "keepdim", False))
        )
        return [normalize_dim(d, rank) for d in dims], keep

    def input_axes(self, node, out_axis):
        data = node.args[0]
        if not isinstance(data, fx.Node) or tensor_val(data) is None:
            return None
        rank = len(shape(data))
        dims, keep = self._dims(node, rank)
        if dims is None:
            return None
        kept = list(range(rank)) if keep else [d for d in range(rank) if d not in dims]
        a = kept[out_axis]
        if a in dims:
            return None
        axes = {t: None for t in _tensor_inputs(node)}  # norm weights/bias: trailing dims only
        axes[data] = a
        return axes


class StackCat(Handler):
    """stack/cat of several tensors along a dim other than the traced one (RoPE's rotate-half)."""

    def input_axes(self, node, out_axis):
        tensors = arg(node, 0, "tensors")
        if not isinstance(tensors, (list, tuple)) or not tensors:
            return None
        out_rank = len(shape(node))
        dim = normalize_dim(arg(node, 1, "dim", 0), out_rank)
        if out_axis == dim:
            return None
        a = out_axis if op_name(node) == "cat" or out_axis < dim else out_axis - 1
        return {t: a for t in tensors if isinstance(t, fx.Node)}


class TupleItem(Handler):
    """`getitem(unbind(x, d), i)`, `getitem(split(x, n, d), i)` with d not the traced axis."""

    def input_axes(self, node, out_axis):
        producer, index = node.args
        if not isinstance(producer, fx.Node) or not isinstance(index, int):
            return None
        name = op_name(producer)
        data = producer.args[0] if producer.args else None
        if name not in TUPLE_PRODUCERS or not isinstance(data, fx.Node):
            return None
        rank = len(shape(data))
        dim = normalize_dim(arg(producer, 2 if name != "unbind" else 1, "dim", 0), rank)
        if name == "unbind":
            a = out_axis if out_axis < dim else out_axis + 1
        else:
            a = out_axis
        if a == dim:
            return None
        return {data: a}


TUPLE_PRODUCERS = ("unbind", "split", "split_with_sizes", "chunk", "tensor_split")
_HANDLERS: dict[str, Handler] = {
    positionwise.ELEMENTWISE: Pointwise(),
    positionwise.CAST: Cast(),
    positionwise.PERMUTE: Permute(),
    positionwise.RESHAPE: Reshape(),
    positionwise.ALONG_DIMS: DimOp(),
    positionwise.STACK: StackCat(),
}
_GETITEM_INDEX = BasicIndex()
_GETITEM_TUPLE = TupleItem()


def handler_for(node: fx.Node) -> Handler | None:
    name = op_name(node)
    if name is None:
        return None
    if name == "getitem":
        source = val(node.args[0])
        return _GETITEM_INDEX if isinstance(source, torch.Tensor) else _GETITEM_TUPLE
    return _HANDLERS.get(positionwise.kind_of(overload_name(node)))


def input_axes(node: fx.Node, out_axis: int) -> AxisMap | None:
    """See the module docstring; None when `node` is not position-wise along `out_axis`."""
    handler = handler_for(node)
    if handler is None or tensor_val(node) is None or mutated_inputs(node):
        return None  # an in-place call (`relu(x, inplace=True)`) is never replayed per token set
    try:
        return handler.input_axes(node, out_axis)
    except (TypeError, ValueError, IndexError, KeyError, AttributeError):
        return None  # an argument form this table does not model: not position-wise as far as we know


def output_axis(node: fx.Node, source: fx.Node, in_axis: int) -> int | None:
    """The output axis that `source`'s `in_axis` feeds through position-wise `node`, or None."""
    for out_axis in range(len(shape(node))):
        axes = input_axes(node, out_axis)
        if axes is not None and axes.get(source) == in_axis:
            return out_axis
    return None


def part_args(node: fx.Node, out_axis: int, substitute: Callable, part_len):
    """Arguments of `node` for one part; raises `CannotReplay` when the call cannot be re-expressed."""
    return handler_for(node).part_args(node, out_axis, substitute, part_len)
