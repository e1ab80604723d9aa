"""Recognizing where model code takes a contiguous range of the sequence back out of a tensor.

`x[:, :n]`, `x[:, n:]`, `x.narrow(1, n, m)`, `aten.slice`, and each item of `split`, `split_with_sizes`,
`chunk` or `tensor_split` are all "the range [start, end) of `x` along `axis`". The pass compares those ranges
with the concat boundary to hand each consumer the op output it needs, or to refuse a misaligned split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx

from .nodes import arg, normalize_dim, op_name, shape, val

_INT_MAX = 2**62


@dataclass(frozen=True)
class Range:
    source: fx.Node
    axis: int
    start: object  # int or SymInt
    end: object


def _clamp_end(end, size):
    if end is None:
        return size
    if isinstance(end, int) and isinstance(size, int):
        return min(end if end >= 0 else size + end, size)
    if isinstance(end, int) and end >= _INT_MAX:
        return size
    return end


def _start(start, size):
    if start is None:
        return 0
    if isinstance(start, int) and start < 0:
        return size + start
    return start


def _from_getitem_index(node: fx.Node) -> Range | None:
    source, index = node.args
    if not isinstance(val(source), torch.Tensor):
        return None
    comps = list(index) if isinstance(index, tuple) else [index]
    rank = len(shape(source))
    if not all(isinstance(c, slice) or c is Ellipsis for c in comps):
        return None
    if sum(c is Ellipsis for c in comps) > 1:
        return None
    if Ellipsis in comps:
        i = comps.index(Ellipsis)
        comps[i : i + 1] = [slice(None)] * (rank - (len(comps) - 1))
    found = None
    for axis, c in enumerate(comps):
        if not isinstance(c, slice) or c.step not in (None, 1):
            return None
        if c.start is None and c.stop is None:
            continue
        if found is not None:
            return None  # ranges on two dims at once
        size = shape(source)[axis]
        found = Range(source, axis, _start(val(c.start), size), _clamp_end(val(c.stop), size))
    return found


def range_of(node: fx.Node) -> Range | None:
    """The range `node` takes of its source, or None if it is not a range-taking node."""
    name = op_name(node)
    if name == "getitem":
        source = node.args[0]
        if isinstance(val(source), torch.Tensor):
            return _from_getitem_index(node)
        if isinstance(source, fx.Node) and op_name(source) in SPLITS and isinstance(node.args[1], int):
            return _split_item(source, node.args[1])
        return None
    if name == "narrow":
        source = node.args[0]
        axis = normalize_dim(arg(node, 1, "dim"), len(shape(source)))
        start = val(arg(node, 2, "start"))
        length = val(arg(node, 3, "length"))
        start = _start(start, shape(source)[axis])
        return Range(source, axis, start, start + length)
    if name == "slice" and isinstance(node.target, torch._ops.OpOverload):
        source = node.args[0]
        axis = normalize_dim(arg(node, 1, "dim", 0), len(shape(source)))
        if arg(node, 4, "step", 1) != 1:
            return None
        size = shape(source)[axis]
        return Range(
            source, axis, _start(val(arg(node, 2, "start")), size), _clamp_end(val(arg(node, 3, "end")), size)
        )
    return None


SPLITS = ("split", "split_with_sizes", "chunk", "tensor_split")


def split_axis(node: fx.Node) -> int:
    return normalize_dim(arg(node, 2, "dim", 0), len(shape(node.args[0])))


def _split_item(producer: fx.Node, index: int) -> Range | None:
    pieces = val(producer)
    if not isinstance(pieces, (tuple, list)) or index >= len(pieces):
        return None
    axis = split_axis(producer)
    start = 0
    for piece in pieces[:index]:
        start = start + piece.shape[axis]
    return Range(producer.args[0], axis, start, start + pieces[index].shape[axis])
