"""How an SDPA `attn_mask` reaches the joint-attention op: as valid lengths proven at compile time, as a mask
checked at run time, or not at all (refused). The MLIR twin of `passes/fx/masks.py`; the rules of the proof,
shared by both, are `passes/mask_proofs.py`.

Entry point: `key_padding(mask, part_lengths, batch) -> (length_0, length_1) | CheckedMask | reason`, where a
length is `ALL_VALID`, an int, or a `TensorLength` (an integer tensor of per-batch lengths in the IR).

Refused (the SDPA stays): masks that vary over queries or heads, or whose batch does not broadcast
(`rules.refuse_key_mask_shape`), masks that do not vary over keys, and masks whose sizes are not known.

Proven prefixes, after peeling broadcasts (`unsqueeze`, `view`/`reshape`, `expand`, `broadcast_to` that keep
the key dim last) and casts that keep the mask's meaning (`mask_proofs.keeps_mask_meaning`):
- the mask is boolean validity `V` (True = the key exists), or an additive bias built from it:
  `where(V, 0, -inf)`, `where(~V, -inf, 0)` (also with scalar branches), `masked_fill(zeros, ~V, -inf)`,
  where "-inf" is exactly -inf: with a finite "absent" bias (finfo.min) a sample with no valid key averages
  V over every key in SDPA, which valid lengths do not say, so finite biases are checked at run time;
- `V` is a concat along the key dim of one validity per token set, split exactly at the token-set boundary;
- each part's validity is a constant all-True tensor or factory (all valid), `arange(S) < n` with a constant
  `n` (clamped into [0, S]), or `arange(S)[None, :] < lengths[:, None]` / `lengths[:, None] > arange(S)` with
  an integer column of shape [b, 1], one length per sample (a [b] operand is compared position by position, a
  [1, 1] one is shared by every sample: not proven), and an arange whose positions are exact in its dtype and
  in every dtype it is converted to on the way (`mask_proofs.positions_exact`).
Any other key-padding-shaped mask (a function argument, a finite bias, a suffix, lengths of another kind) is a
`CheckedMask`: the pass emits `key_padding_lengths` + `masked_joint_attention`, which check at run time that it
is prefix padding and otherwise take the exact path (as the FX pass does, `passes/fx/masks.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.dialects.builtin import IntegerType
from xdsl.ir import SSAValue

from .. import mask_proofs, positionwise, rules
from .axes import aten_name, op_kind
from .dialects.torch_ops import (
    AtenArangeOp,
    AtenArangeStartOp,
    AtenArangeStartStepOp,
    AtenBitwiseNotOp,
    AtenCatOp,
    AtenGtTensorOp,
    AtenLogicalNotOp,
    AtenLtScalarOp,
    AtenLtTensorOp,
    AtenMaskedFillScalarOp,
    AtenReshapeOp,
    AtenUnsqueezeOp,
    AtenViewOp,
    AtenWhereScalarOp,
    AtenWhereScalarOtherOp,
    AtenWhereScalarSelfOp,
    AtenWhereSelfOp,
    PrimListConstructOp,
    ValueTensorLiteralOp,
)
from .dialects.torch_types import DYNAMIC, torch_dtype
from .ir_values import const_bool, const_float, const_int, normalize_dim, shape_of

ALL_VALID = None


@dataclass(frozen=True)
class TensorLength:
    """Per-batch valid lengths held by an integer tensor in the IR: `value` has shape [b] or [b, 1]."""

    value: SSAValue


Length = int | TensorLength | None


@dataclass(frozen=True)
class CheckedMask:
    """A key-padding mask that is not provably a prefix of each token set: checked when it runs."""

    mask: SSAValue
    key_dim: int  # its last dim
    unproven: str  # why the compile-time proof did not go through


def key_padding(
    mask: SSAValue, part_lengths: tuple[int, int], batch: int
) -> tuple[Length, Length] | CheckedMask | str:
    """Valid lengths per token set (source order), a mask to check at run time, or why the SDPA is refused."""
    mask_shape = shape_of(mask)
    if mask_shape is None:
        return "attn_mask of unknown rank"
    reason = rules.refuse_key_mask_shape(mask_shape, (batch,))
    if reason is not None:
        return reason
    keys = mask_shape[-1]
    reason = rules.refuse_mask_constant_over_keys(keys != 1)
    if reason is not None:
        return reason
    if keys != sum(part_lengths):
        return f"attn_mask has {'an unknown number of' if keys == DYNAMIC else keys} keys, not {sum(part_lengths)}"
    proven = _proven_lengths(mask, part_lengths, batch)
    if isinstance(proven, str):
        return CheckedMask(mask, len(mask_shape) - 1, proven)
    return proven


def _proven_lengths(mask: SSAValue, part_lengths: tuple[int, int], batch: int) -> tuple[Length, Length] | str:
    validity = _validity(_peel_broadcasts(mask))
    if isinstance(validity, str):
        return validity
    validity = _peel_broadcasts(validity)
    cat = validity.owner
    if not isinstance(cat, AtenCatOp) or not isinstance(cat.tensors.owner, PrimListConstructOp):
        return "attn_mask is not a concat of per-token-set key validity (cannot prove it is key padding)"
    rank = len(shape_of(validity))
    if normalize_dim(const_int(cat.dim), rank) != rank - 1:
        return "attn_mask validity is not concatenated along the key dim"
    parts = list(cat.tensors.owner.elements)
    sizes = [(shape_of(p) or (None,))[-1] for p in parts]
    if tuple(sizes) != tuple(part_lengths):
        return f"attn_mask is concatenated from key sets of lengths {sizes}, not at the token-set boundary {list(part_lengths)}"
    lengths = []
    for index, (part, size) in enumerate(zip(parts, sizes, strict=True)):
        length = _prefix_length(_peel_broadcasts(part), size, batch)
        if isinstance(length, str):
            return f"attn_mask part {index}: {length}"
        lengths.append(length)
    return lengths[0], lengths[1]


def _peel_broadcasts(value: SSAValue) -> SSAValue:
    """Walks up through ops that only add or broadcast leading dims, keeping the last (key) dim, and through
    dtype conversions that keep a validity a validity (bool to bool) and a bias a bias (float to float)."""
    while (source := _peeled_once(value)) is not None:
        value = source
    return value


def _peeled_once(value: SSAValue, keeps=mask_proofs.keeps_mask_meaning) -> SSAValue | None:
    """The operand `value` is such a broadcast or conversion of (a conversion that `keeps` the source's meaning
    in the result's dtype), or None."""
    owner = value.owner
    if (
        op_kind(owner) == positionwise.CAST
        and shape_of(owner.operands[0]) == shape_of(value)
        and keeps(_dtype(owner.operands[0]), _dtype(value))
    ):
        return owner.operands[0]
    name = aten_name(owner)
    if (
        name is None
        or name.split(".")[0] not in mask_proofs.BROADCASTS
        or _dtype(owner.operands[0]) != _dtype(value)
    ):
        return None
    source = owner.operands[0]
    src_shape, dst_shape = shape_of(source), shape_of(value)
    if not src_shape or not dst_shape or src_shape[-1] != dst_shape[-1]:
        return None
    if (
        isinstance(owner, AtenUnsqueezeOp)
        and normalize_dim(const_int(owner.dim), len(dst_shape)) == len(dst_shape) - 1
    ):
        return None
    if isinstance(owner, (AtenViewOp, AtenReshapeOp)) and _numel(src_shape) != _numel(dst_shape):
        return None
    return source


def _dtype(value: SSAValue):
    """The torch dtype of a tensor value, or None."""
    try:
        return torch_dtype(getattr(value.type, "element_type", None))
    except ValueError:
        return None


def _numel(shape) -> int | None:
    total = 1
    for s in shape:
        if s < 0:
            return None
        total *= s
    return total


def _is_bool(value: SSAValue) -> bool:
    t = value.type
    return isinstance(getattr(t, "element_type", None), IntegerType) and t.element_type.width.data == 1


def _validity(mask: SSAValue) -> SSAValue | str:
    """The boolean validity a mask is built from (True = key exists), or why it is not one."""
    if _is_bool(mask):
        return mask
    owner = mask.owner
    if isinstance(owner, (AtenWhereSelfOp, AtenWhereScalarOp, AtenWhereScalarOtherOp, AtenWhereScalarSelfOp)):
        when_true, when_false = _scalar_of(owner.self_), _scalar_of(owner.other)
        if when_true == 0.0 and mask_proofs.is_absent_bias(when_false):
            return owner.condition
        if mask_proofs.is_absent_bias(when_true) and when_false == 0.0:
            return _negated(owner.condition)
        return "additive attn_mask is not 0 for valid keys and -inf for padded ones"
    if isinstance(owner, AtenMaskedFillScalarOp):
        if _scalar_of(owner.self_) == 0.0 and mask_proofs.is_absent_bias(const_float(owner.value)):
            return _negated(owner.mask)
        return "masked_fill attn_mask is not zeros filled with -inf"
    return "attn_mask is an arbitrary float tensor (cannot prove it is key padding)"


def _negated(value: SSAValue) -> SSAValue | str:
    if isinstance(value.owner, (AtenBitwiseNotOp, AtenLogicalNotOp)):
        return value.owner.self_
    return "attn_mask marks padded keys with a condition that is not the negation of a validity"


def _scalar_of(value: SSAValue) -> float | None:
    """A constant number, or the single value of a constant splat tensor (`zeros`, `full`, a literal)."""
    owner = value.owner
    if isinstance(owner, ValueTensorLiteralOp):
        return owner.splat_value()
    fill = _factory_fill(owner)
    return const_float(value) if fill is None else fill


def _factory_fill(owner) -> float | bool | None:
    """The value a constant factory (`ones`, `zeros`, `full`, ...: `mask_proofs.factory_fill`) fills with."""
    name = aten_name(owner)
    packet = None if name is None else name.split(".")[0]
    fill_at = mask_proofs.FILL_ARGUMENT.get(packet)
    fill_value = None
    if fill_at is not None and fill_at < len(owner.operands):
        operand = owner.operands[fill_at]
        fill_value = const_bool(operand)
        fill_value = const_float(operand) if fill_value is None else fill_value
    return mask_proofs.factory_fill(packet, fill_value)


def _prefix_length(validity: SSAValue, size: int, batch: int) -> Length | str:
    owner = validity.owner
    if isinstance(owner, ValueTensorLiteralOp):
        value = owner.splat_value()
        if value is None:
            return "a constant validity that is not all True or all False"
        return ALL_VALID if value != 0 else 0
    fill = _factory_fill(owner)
    if fill is not None and mask_proofs.admits_every_key(_dtype(validity), fill):
        return ALL_VALID
    if isinstance(owner, AtenLtScalarOp) and _is_arange(owner.self_, size):
        n = const_int(owner.other)
        if n is None:
            return "the valid length is a run-time scalar (only constants or [b] tensors are taken)"
        return ALL_VALID if n >= size else max(n, 0)
    if isinstance(owner, AtenLtTensorOp) and _is_arange(owner.self_, size):
        return _lengths_tensor(owner.other, batch)
    if isinstance(owner, AtenGtTensorOp) and _is_arange(owner.other, size):
        return _lengths_tensor(owner.self_, batch)
    return "key validity is not a prefix (expected arange(S) < length, or all True)"


def _is_arange(value: SSAValue, size: int) -> bool:
    """`arange(S)` (any of its overloads, start 0, step 1), possibly unsqueezed to [1, S], whose positions
    0..S-1 are exact in its dtype and in every dtype it is converted to on the way (`mask_proofs`)."""
    value = mask_proofs.arange_behind(
        value, size, _dtype, lambda v: _peeled_once(v, keeps=mask_proofs.keeps_positions)
    )
    owner = None if value is None else value.owner
    if isinstance(owner, AtenArangeOp):
        return const_int(owner.end) == size
    if isinstance(owner, AtenArangeStartOp):
        return const_int(owner.start) == 0 and const_int(owner.end) == size
    if isinstance(owner, AtenArangeStartStepOp):
        return const_int(owner.start) == 0 and const_int(owner.end) == size and const_int(owner.step) == 1
    return False


def _lengths_tensor(value: SSAValue, batch: int) -> TensorLength | str:
    """A per-sample lengths column `lengths[:, None]` ([b, 1]: one length per sample, the same for every key;
    FX: `_lengths_column`). A [b] `lengths` is compared position by position with the arange, a [1, 1] one is
    shared by every sample, a [b, k] one varies over keys: none of them is proven."""
    shape = shape_of(value)
    t = value.type
    if not isinstance(getattr(t, "element_type", None), IntegerType) or _is_bool(value):
        return "the valid lengths are not an integer tensor"
    if shape != (batch, 1):
        return f"the valid lengths have shape {list(shape or [])}, not a per-sample column [b={batch}, 1]"
    if isinstance(value.owner, AtenUnsqueezeOp) and shape_of(value.owner.self_) == (batch,):
        return TensorLength(value.owner.self_)
    return TensorLength(value)
