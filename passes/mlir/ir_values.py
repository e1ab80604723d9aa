"""Reading compile-time facts off torch-dialect SSA values: constants, int lists, static shapes, dims.

Entry points: `const_int`, `const_float`, `const_bool`, `is_none`, `const_int_list`, `shape_of`,
`normalize_dim`, `normalize_bound` (facts about layout ops: `axes.py`). Each returns None when the fact is
not known at compile time, so matchers can refuse instead of guessing.
"""

from __future__ import annotations

from xdsl.ir import SSAValue

from .dialects.torch_ops import (
    ConstantBoolOp,
    ConstantFloatOp,
    ConstantIntOp,
    ConstantNoneOp,
    PrimListConstructOp,
    ValueTensorLiteralOp,
)
from .dialects.torch_types import ValueTensorType


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
