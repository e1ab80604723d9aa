"""Reading compile-time facts off torch-dialect SSA values: constants, int lists, static shapes, dims.

Entry points: `const_int`, `const_float`, `const_bool`, `is_none`, `const_int_list`, `shape_of`,
`normalize_dim`, `normalize_bound`, and two facts about layout ops: `permutation_of` (a permute or transpose
as a permutation) and `view_keeps_seq_dim` (a view/reshape that leaves the sequence dim in place). Each
returns None (or False) when the fact is not known at compile time, so matchers can refuse instead of
guessing.
"""

from __future__ import annotations

from xdsl.ir import Operation, SSAValue

from .dialects.torch_ops import (
    AtenPermuteOp,
    ConstantBoolOp,
    ConstantFloatOp,
    ConstantIntOp,
    ConstantNoneOp,
    PrimListConstructOp,
    ValueTensorLiteralOp,
)
from .dialects.torch_types import DYNAMIC, ValueTensorType


def const_int(value: SSAValue) -> int | None:
    owner = value.owner
    return owner.value.value.data if isinstance(owner, ConstantIntOp) else None


def const_float(value: SSAValue) -> float | None:
    owner = value.owner
    if isinstance(owner, ConstantFloatOp):
        return owner.value.value.data
    if isinstance(owner, ConstantIntOp):
        return float(owner.value.value.data)
    if isinstance(owner, ValueTensorLiteralOp) and owner.result.type.shape == ():
        return owner.splat_value()
    return None


def const_bool(value: SSAValue) -> bool | None:
    owner = value.owner
    return owner.bool_value if isinstance(owner, ConstantBoolOp) else None


def is_none(value: SSAValue) -> bool:
    return isinstance(value.owner, ConstantNoneOp)


def const_int_list(value: SSAValue) -> list[int] | None:
    owner = value.owner
    if not isinstance(owner, PrimListConstructOp):
        return None
    ints = [const_int(e) for e in owner.elements]
    return None if any(i is None for i in ints) else ints


def shape_of(value: SSAValue) -> tuple[int, ...] | None:
    """Sizes of a `!torch.vtensor` (-1 where unknown), or None for non-tensors and unranked tensors."""
    t = value.type
    return t.shape if isinstance(t, ValueTensorType) else None


def normalize_dim(dim: int | None, rank: int) -> int | None:
    if dim is None or not -rank <= dim < rank:
        return None
    return dim % rank


def normalize_bound(bound: int | None, size: int, default: int) -> int:
    """A slice start/end as Python slicing reads it: None -> default, negative counts from the end, clamped."""
    if bound is None:
        return default
    if bound < 0:
        bound += size
    return min(max(bound, 0), size)


def permutation_of(op: Operation, rank: int) -> list[int] | None:
    """The dims of a permute, or of a transpose as a permutation; None if not known at compile time."""
    if isinstance(op, AtenPermuteOp):
        dims = const_int_list(op.dims)
        if dims is None or len(dims) != rank:
            return None
        dims = [normalize_dim(d, rank) for d in dims]
        return None if None in dims or sorted(dims) != list(range(rank)) else dims
    a, b = normalize_dim(const_int(op.dim0), rank), normalize_dim(const_int(op.dim1), rank)
    if a is None or b is None:
        return None
    perm = list(range(rank))
    perm[a], perm[b] = perm[b], perm[a]
    return perm


def view_keeps_seq_dim(op: Operation, seq_dim: int) -> bool:
    """A view/reshape that keeps every dim up to the sequence dim (so the sequence stays at `seq_dim`), with a
    size list the rewrite can edit per token set (`TorchBuilder.sizes_with`): built in the IR, its sequence
    entry the sequence size or -1."""
    source, result = shape_of(op.operands[0]), shape_of(op.results[0])
    if source is None or result is None or len(result) <= seq_dim:
        return False
    if source[: seq_dim + 1] != result[: seq_dim + 1] or DYNAMIC in source[: seq_dim + 1]:
        return False
    sizes = op.operands[1].owner
    return (
        isinstance(sizes, PrimListConstructOp)
        and len(sizes.elements) == len(result)
        and const_int(sizes.elements[seq_dim]) in (result[seq_dim], -1)
    )
