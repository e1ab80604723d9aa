"""Recognizing where the IR takes a contiguous range of the sequence back out of a tensor (the MLIR twin of
`passes/fx/ranges.py`).

`slice`, `narrow`, and each piece of `split`, `split_with_sizes` or `chunk` (listed by a `prim.ListUnpack`) are
all "the range [start, end) along `dim`". `joint_match.py` compares those ranges with the concat boundary
(`rules.locate_range`) to hand each use the op output it needs, or to refuse a misaligned split.

Entry points: `CUT_OPS` (`SPLIT_OPS`: the ones with a list of pieces), `cut_dim(op, rank)`, and
`cut_ranges(op, total) -> [(start, end), ...] | None` (None where the bounds are not known at compile time).
"""

from __future__ import annotations

from xdsl.ir import Operation

from .dialects.torch_ops import (
    AtenChunkOp,
    AtenNarrowOp,
    AtenSliceTensorOp,
    AtenSplitSizesOp,
    AtenSplitTensorOp,
    AtenSplitWithSizesOp,
)
from .ir_values import const_int, const_int_list, is_none, normalize_bound, normalize_dim

SPLIT_OPS = (AtenSplitTensorOp, AtenSplitWithSizesOp, AtenSplitSizesOp, AtenChunkOp)
CUT_OPS = (AtenSliceTensorOp, AtenNarrowOp, *SPLIT_OPS)


def cut_dim(op: Operation, rank: int) -> int | None:
    return normalize_dim(const_int(op.dim), rank)


def cut_ranges(op, total: int) -> list[tuple[int, int]] | None:
    """The [start, end) ranges a cut takes along its dim (of size `total`); None if not known at compile time."""
    if isinstance(op, AtenSliceTensorOp):
        if const_int(op.step) != 1:
            return None
        bounds = []
        for bound, default in ((op.start, 0), (op.end, total)):
            value = None if is_none(bound) else const_int(bound)
            if value is None and not is_none(bound):
                return None
            bounds.append(normalize_bound(value, total, default))
        return [(bounds[0], max(bounds))]
    if isinstance(op, AtenNarrowOp):
        start, length = const_int(op.start), const_int(op.length)
        if start is None or length is None:
            return None
        start = start + total if start < 0 else start
        return [(start, start + length)]
    if isinstance(op, (AtenChunkOp, AtenSplitTensorOp)):
        size = _piece_size(op, total)
        if size is None:
            return None
        sizes = [size] * (total // size) + ([total % size] if total % size else [])
    else:
        sizes = const_int_list(op.operands[1])
        if sizes is None:
            return None
    ranges, offset = [], 0
    for size in sizes:
        ranges.append((offset, offset + size))
        offset += size
    return ranges


def _piece_size(op: AtenChunkOp | AtenSplitTensorOp, total: int) -> int | None:
    """The size of each piece of a `chunk` (ceil(total / chunks), as torch cuts them) or `split.Tensor`; the
    last piece takes the rest."""
    if isinstance(op, AtenChunkOp):
        chunks = const_int(op.chunks)
        size = -(-total // chunks) if chunks and chunks > 0 else None
    else:
        size = const_int(op.split_size)
    return size if size and size > 0 else None
