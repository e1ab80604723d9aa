"""How a position-wise torch-dialect op maps the sequence dim (the MLIR twin of `passes/fx/axes.py`).

Which ops are position-wise, and of what kind, is the shared table `passes/positionwise.py`, keyed by ATen
names (`torch.aten.add.Tensor` is `add.Tensor`, `torch.aten.neg` is `neg.default`); this module reads the ops'
operands, which torch-mlir writes in ATen's argument order.

Entry points:
- `op_kind(op)`: the op's position-wise kind, or None (`is_position_wise(op)`: not None);
- `input_dim(op, seq_dim)`: for a cast, permute, reshape or along-dims op whose result has the sequence at
  `seq_dim`, where it is in the op's data operand; None when the op moves or mixes the sequence dim, or when
  its operands are not known at compile time (elementwise ops align their operands from the right instead:
  `parts.py`);
- `output_dim(op, seq_dim)`: the reverse, for the layout ops the rewrite rebuilds on an op output (permute,
  transpose, view, reshape, flatten, unflatten, contiguous);
- `permutation_of(op, rank)` and `view_keeps_seq_dim(op, seq_dim)`: the two layout facts both directions use.
"""

from __future__ import annotations

from xdsl.ir import Operation

from .. import positionwise
from .dialects.torch_ops import (
    AtenContiguousOp,
    AtenFlattenUsingIntsOp,
    AtenPermuteOp,
    AtenReshapeOp,
    AtenTransposeIntOp,
    AtenUnflattenIntOp,
    AtenUnsqueezeOp,
    AtenViewOp,
    PrimListConstructOp,
)
from .dialects.torch_types import DYNAMIC
from .ir_values import const_bool, const_int, const_int_list, normalize_dim, shape_of

# The non-aten ops the table names (torch-mlir: `torch.prims.convert_element_type`).
_PRIMS = ("convert_element_type",)
# Layout ops a use chain below the SDPA may go through: the rewrite rebuilds them on an op output.
_REBUILT = (
    AtenPermuteOp,
    AtenTransposeIntOp,
    AtenViewOp,
    AtenReshapeOp,
    AtenFlattenUsingIntsOp,
    AtenUnflattenIntOp,
    AtenContiguousOp,
)


def aten_name(op: Operation) -> str | None:
    """The ATen overload name of a torch-mlir op (`add.Tensor`, `neg.default`), or None for other ops (and for
    a block, the owner of a block argument)."""
    if not isinstance(op, Operation):
        return None
    name = op.name
    if name.startswith("torch.aten."):
        name = name.removeprefix("torch.aten.")
    elif name.removeprefix("torch.prims.") in _PRIMS:
        name = name.removeprefix("torch.prims.")
    else:
        return None
    return name if "." in name else f"{name}.default"


def op_kind(op: Operation) -> str | None:
    name = aten_name(op)
    return None if name is None else positionwise.kind_of(name)


def is_position_wise(op: Operation) -> bool:
    """Ops the rewrite may replay per token set, and so may delete once the SDPA no longer reads them."""
    return op_kind(op) is not None


def input_dim(op: Operation, seq_dim: int) -> int | None:
    """Where the sequence dim of `op`'s result (at `seq_dim`) is in its data operand (operand 0)."""
    source, result = shape_of(op.operands[0]), shape_of(op.results[0])
    if source is None or result is None:
        return None
    rank = len(result)
    found = op_kind(op)
    if found == positionwise.CAST:
        return seq_dim
    if found == positionwise.PERMUTE:
        perm = permutation_of(op, rank)
        return None if perm is None else perm[seq_dim]
    if found == positionwise.RESHAPE:
        return _reshaped_dim(op, seq_dim, rank, source)
    if found == positionwise.ALONG_DIMS:
        return _along_dims_source(op, seq_dim, len(source))
    return None


def output_dim(op: Operation, seq_dim: int) -> int | None:
    """Where the sequence dim of `op`'s data operand (at `seq_dim`) is in its result, for the layout ops the
    rewrite rebuilds on an op output; None for any other op or where the op moves or mixes it."""
    result = shape_of(op.results[0]) if isinstance(op, _REBUILT) and op.results else None
    if result is None:
        return None
    return next((d for d in range(len(result)) if input_dim(op, d) == seq_dim), None)


def _reshaped_dim(op: Operation, seq_dim: int, rank: int, source) -> int | None:
    if isinstance(op, (AtenViewOp, AtenReshapeOp)):
        return seq_dim if view_keeps_seq_dim(op, seq_dim) else None
    if isinstance(op, AtenUnsqueezeOp):
        dim = normalize_dim(const_int(op.dim), rank)
        return None if dim is None or dim == seq_dim else (seq_dim - 1 if dim < seq_dim else seq_dim)
    if op.name == "torch.aten.squeeze.dim":
        dim = normalize_dim(const_int(op.operands[1]), len(source))
        if dim is None:
            return None
        if len(source) == rank:  # a dim whose size is not 1: removes nothing
            return seq_dim if dim != seq_dim else None
        return seq_dim + 1 if dim <= seq_dim else seq_dim
    if isinstance(op, AtenFlattenUsingIntsOp):
        start = normalize_dim(const_int(op.start_dim), len(source))
        end = normalize_dim(const_int(op.end_dim), len(source))
        if start is None or end is None:
            return None
        if seq_dim < start:
            return seq_dim
        if seq_dim > start:
            return seq_dim + (end - start)
        return seq_dim if start == end else None
    if isinstance(op, AtenUnflattenIntOp):
        dim, sizes = normalize_dim(const_int(op.dim), len(source)), const_int_list(op.sizes)
        if dim is None or sizes is None:
            return None
        if seq_dim < dim:
            return seq_dim
        if seq_dim >= dim + len(sizes):
            return seq_dim - len(sizes) + 1
        return None
    return None


def _along_dims_source(op: Operation, seq_dim: int, source_rank: int) -> int | None:
    """For an op acting along the dims one operand names (`positionwise.along_dims`): the source dim of
    `seq_dim`, None when it is one of those dims or they are not constants."""
    where = positionwise.along_dims(aten_name(op))
    if where.at >= len(op.operands):
        return None
    dims = const_int_list(op.operands[where.at])
    if dims is None:
        single = const_int(op.operands[where.at])
        dims = None if single is None else [single]
    if dims is None:
        return None
    if where.trailing:  # a normalized_shape: the trailing len(...) dims
        dims = list(range(source_rank - len(dims), source_rank))
    reduced = {normalize_dim(d, source_rank) for d in dims}
    keepdim = where.keeps if where.keepdim_at is None else const_bool(op.operands[where.keepdim_at])
    if None in reduced or keepdim is None:
        return None
    kept = list(range(source_rank)) if keepdim else [d for d in range(source_rank) if d not in reduced]
    if seq_dim >= len(kept):
        return None
    source_dim = kept[seq_dim]
    return None if source_dim in reduced else source_dim


def permutation_of(op: Operation, rank: int) -> list[int] | None:
    """The dims of a permute, or of a transpose as a permutation; None if not known at compile time."""
    if isinstance(op, AtenPermuteOp):
        dims = const_int_list(op.dims)
        if dims is None or len(dims) != rank:
            return None
        dims = [normalize_dim(d, rank) for d in dims]
        return None if None in dims or sorted(dims) != list(range(rank)) else dims
    if not isinstance(op, AtenTransposeIntOp):
        return None
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
