"""Seeing a whole-sequence tensor as the concat of its token sets, through position-wise ops, and rebuilding
it per token set: the general rewrite that moves a concat below position-wise ops (Flux applies RoPE to the
whole concatenated q and k), the MLIR twin of the FX pass's part resolver.

Entry points:
- `resolve(value, seq_dim) -> PartsPlan | str`: how `value` is, along `seq_dim`, the concat of two token sets;
  a `torch.aten.cat` of them is a leaf, a position-wise op of resolvable operands a node.
- `PartsBuilder(builder).part(plan, index)`: the token set `index` of `value`, rebuilt by replaying each
  node's op on the parts (memoized per value, sequence dim and part).

Position-wise ops are those of the shared table (`passes/positionwise.py`, read through `axes.py`), as in the
FX pass:
- elementwise ops (arithmetic, activations, comparisons): every tensor operand is either resolvable along the
  aligned dim, broadcast along it (size 1 or absent), or a whole-sequence tensor that is not resolvable (a
  position-dependent operand such as RoPE's cos/sin table, or `k.flip(2)`): that one is sliced per token set,
  which is exact since it is computed whole anyway;
- casts, and layout ops that do not mix positions of the sequence dim: permute/transpose (the sequence dim
  moves), view/reshape keeping every dim up to the sequence dim, unsqueeze, squeeze/select/slice of another dim
  (a `squeeze.dim` of a dim whose size is not 1 removes nothing: the sequence dim stays where it is),
  flatten/unflatten of other dims, and cat along another dim of resolvable operands (stack);
- reductions and normalizations over other dims (`sum`/`mean`/`amax` over the head dim, softmax, layer norm):
  the norms of q and k (RMS norm, layer norm) applied after the concat.
Matrix products are never split.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.ir import Operation, SSAValue

from .. import positionwise
from .axes import input_dim, op_kind
from .dialects.torch_ops import AtenCatOp, AtenReshapeOp, AtenViewOp, PrimListConstructOp
from .dialects.torch_types import DYNAMIC
from .ir_values import const_int, normalize_dim, shape_of
from .torch_builder import TorchBuilder


@dataclass(frozen=True)
class PartsPlan:
    """`value` along `seq_dim` is the concat of its token sets: a leaf `cat`, or `op` replayed per set."""

    value: SSAValue
    seq_dim: int
    lengths: tuple[int, ...]
    cat_parts: tuple[SSAValue, ...] | None = None  # leaf: the concatenated values
    operands: tuple[
        tuple[str, object], ...
    ] = ()  # node: per operand ("parts", plan) | ("slice", dim) | ("same", None)

    @property
    def leaves(self) -> list[PartsPlan]:
        if self.cat_parts is not None:
            return [self]
        return [leaf for kind, sub in self.operands if kind == "parts" for leaf in sub.leaves]

    @property
    def ops(self) -> list[Operation]:
        """The ops this plan reads through, users before producers (for deleting the dead ones)."""
        found = [self.value.owner]
        if self.cat_parts is not None:
            return found
        for kind, sub in self.operands:
            if kind == "parts":
                found += sub.ops
        return found


def resolve(value: SSAValue, seq_dim: int) -> PartsPlan | str:
    """The plan of `value` as a concat along `seq_dim`, or why it is not one."""
    shape = shape_of(value)
    if shape is None or not 0 <= seq_dim < len(shape):
        return "a tensor of unknown rank"
    owner = value.owner
    if isinstance(owner, AtenCatOp):
        return _resolve_cat(owner, value, seq_dim, shape)
    if not isinstance(owner, Operation):
        return "is not a concat of token sets (it is a function argument)"
    found = op_kind(owner)
    if found is None:
        return f"is not a concat of token sets (it is computed by {owner.name})"
    if found == positionwise.ELEMENTWISE:
        return _resolve_elementwise(owner, value, seq_dim, shape)
    return _resolve_layout(owner, value, seq_dim)


def _resolve_cat(cat: AtenCatOp, value: SSAValue, seq_dim: int, shape) -> PartsPlan | str:
    dim = normalize_dim(const_int(cat.dim), len(shape))
    if not isinstance(cat.tensors.owner, PrimListConstructOp):
        return "is a concat of a list not built in the IR"
    parts = tuple(cat.tensors.owner.elements)
    if dim != seq_dim:
        # A concat along another dim (a stack) is position-wise when every piece is resolvable.
        found = _resolve_node(cat, value, seq_dim, [(p, seq_dim) for p in parts])
        return (
            f"is a concat along dim {dim}, not along the sequence dim {seq_dim}" if found is None else found
        )
    lengths = tuple(shape_of(p)[seq_dim] for p in parts)
    if DYNAMIC in lengths:
        return "concatenates token sets of lengths not known at compile time"
    return PartsPlan(value, seq_dim, lengths, cat_parts=parts)


def _resolve_node(op, value, seq_dim, tensor_operands) -> PartsPlan | None:
    """A node whose listed operands must all be resolvable, with the same token sets, at the given dims."""
    operands, lengths = [], None
    for operand, dim in tensor_operands:
        sub = resolve(operand, dim)
        if isinstance(sub, str) or (lengths is not None and sub.lengths != lengths):
            return None
        lengths = sub.lengths
        operands.append(("parts", sub))
    return PartsPlan(value, seq_dim, lengths, operands=tuple(operands))


def _resolve_elementwise(op: Operation, value: SSAValue, seq_dim: int, shape) -> PartsPlan | str:
    total = shape[seq_dim]
    operands, lengths = [], None
    for operand in op.operands:
        operand_shape = shape_of(operand)
        if operand_shape is None:  # scalars, dtypes, none
            operands.append(("same", None))
            continue
        aligned = seq_dim - (len(shape) - len(operand_shape))
        if aligned < 0 or operand_shape[aligned] == 1:
            operands.append(("same", None))
            continue
        sub = resolve(operand, aligned)
        if not isinstance(sub, str):
            if lengths is not None and sub.lengths != lengths:
                return f"{op.name} of token sets of different lengths"
            lengths = sub.lengths
            operands.append(("parts", sub))
        elif operand_shape[aligned] == total:
            operands.append(("slice", aligned))
        else:
            return f"{op.name} with an operand of sequence size {operand_shape[aligned]}, not {total}"
    if lengths is None:
        return f"is computed by {op.name} of tensors none of which is a concat of token sets"
    return PartsPlan(value, seq_dim, lengths, operands=tuple(operands))


def _resolve_layout(op: Operation, value: SSAValue, seq_dim: int) -> PartsPlan | str:
    source_dim = input_dim(op, seq_dim)
    if source_dim is None:
        return f"is computed by {op.name}, which moves or mixes the sequence dim"
    sub = resolve(op.operands[0], source_dim)
    if isinstance(sub, str):
        return sub
    rest = tuple(("same", None) for _ in op.operands[1:])
    return PartsPlan(value, seq_dim, sub.lengths, operands=(("parts", sub), *rest))


class PartsBuilder:
    """Rebuilds resolved values per token set, inserting each replayed op before the op it copies."""

    def __init__(self, build: TorchBuilder):
        self.build = build
        self._built: dict[tuple[SSAValue, int, int], SSAValue] = {}

    def part(self, plan: PartsPlan, index: int) -> SSAValue:
        # By sequence dim too: one value can be split along two dims (rows for q, columns for k).
        key = (plan.value, plan.seq_dim, index)
        if key not in self._built:
            self._built[key] = self._make(plan, index)
        return self._built[key]

    def _make(self, plan: PartsPlan, index: int) -> SSAValue:
        if plan.cat_parts is not None:
            return plan.cat_parts[index]
        op = plan.value.owner
        start = sum(plan.lengths[:index])
        size = plan.lengths[index]
        shape = list(shape_of(plan.value))
        shape[plan.seq_dim] = size
        result_type = plan.value.type.with_shape(shape)
        if isinstance(op, AtenCatOp):  # a concat along another dim (stack): concat the parts of its pieces
            pieces = [self.part(sub, index) for _, sub in plan.operands]
            self.build.at(op)
            listed = self.build.insert(PrimListConstructOp(pieces, op.tensors.type)).results[0]
            return self.build.insert(AtenCatOp.build([listed, op.dim], result_type)).results[0]
        operands = []
        for operand, (kind, detail) in zip(op.operands, plan.operands, strict=True):
            if kind == "parts":
                operands.append(self.part(detail, index))
            elif kind == "slice":
                operands.append(self.build.at(op).slice(operand, detail, start, start + size))
            else:
                operands.append(operand)
        self.build.at(op)
        if isinstance(op, (AtenViewOp, AtenReshapeOp)):
            operands[1] = self.build.sizes_with(op.operands[1], plan.seq_dim, size)
        replayed = self.build.insert(
            type(op).create(operands=operands, result_types=[result_type], attributes=dict(op.attributes))
        )
        return replayed.results[0]
