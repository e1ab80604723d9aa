"""How an SDPA `attn_mask` reaches the joint-attention op: as valid lengths proven at compile time, as a mask
checked at run time, or not at all (refused).

Entry point: `key_padding(mask, part_lengths, batch) -> (length_0, length_1) | CheckedMask | reason`, where a
length is `ALL_VALID`, an int, or a `TensorLength` (an integer tensor of per-batch lengths in the IR).

Refused (the SDPA stays): masks that vary over queries or heads, or whose batch does not broadcast
(`rules.refuse_key_mask_shape`), masks that do not vary over keys, and masks whose sizes are not known.

Proven prefixes, after peeling broadcasts (`unsqueeze`, `view`/`reshape`, `expand`, `broadcast_to` that keep
the key dim last) and dtype conversions that keep bool as bool and float as float:
- the mask is boolean validity `V` (True = the key exists), or an additive bias built from it:
  `where(V, 0, -inf)`, `where(~V, -inf, 0)` (also with scalar branches), `masked_fill(zeros, ~V, -inf)`,
  where "-inf" is exactly -inf: with a finite "absent" bias (finfo.min) a sample with no valid key averages
  V over every key in SDPA, which valid lengths do not say, so finite biases are checked at run time;
- `V` is a concat along the key dim of one validity per token set, split exactly at the token-set boundary;
- each part's validity is a constant all-True tensor (all valid), `arange(S) < n` with a constant `n`
  (clamped into [0, S]), or `arange(S)[None, :] < lengths[:, None]` / `lengths[:, None] > arange(S)` with an
  integer column of shape [b, 1], one length per sample (a [b] operand is compared position by position, a
  [1, 1] one is shared by every sample: not proven), and an arange exact in its dtype (an integer type wide
  enough; float32 up to 2^24 positions, float64 up to 2^53; never float16 or bfloat16).
Any other key-padding-shaped mask (a function argument, a finite bias, a suffix, lengths of another kind) is a
`CheckedMask`: the pass emits `key_padding_lengths` + `masked_joint_attention`, which check at run time that it
is prefix padding and otherwise take the exact path (as the FX pass does, `passes/fx/masks.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jointattn.passes import rules
from xdsl.dialects.builtin import Float32Type, Float64Type, IntegerType, Signedness
from xdsl.ir import SSAValue

from .dialects.torch_ops import (
    AtenArangeOp,
    AtenArangeStartOp,
    AtenArangeStartStepOp,
    AtenBitwiseNotOp,
    AtenBroadcastToOp,
    AtenCatOp,
    AtenExpandOp,
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
    GenericTorchOp,
    PrimListConstructOp,
    ValueTensorLiteralOp,
)
from .dialects.torch_types import DYNAMIC
from .ir_values import const_float, const_int, normalize_dim, shape_of

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
    if keys == 1:
        return "attn_mask does not vary over keys"
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


_CONVERSIONS = ("torch.aten.to.dtype", "torch.aten._to_copy", "torch.prims.convert_element_type")


def _peel_broadcasts(value: SSAValue) -> SSAValue:
    """Walks up through ops that only add or broadcast leading dims, keeping the last (key) dim, and through
    dtype conversions that keep a validity a validity (bool to bool) and a bias a bias (float to float)."""
    while (source := _peeled_once(value)) is not None:
        value = source
    return value


def _peeled_once(value: SSAValue) -> SSAValue | None:
    """The operand `value` is such a broadcast or conversion of, or None."""
    owner = value.owner
    if (
        isinstance(owner, GenericTorchOp)
        and owner.name in _CONVERSIONS
        and _same_kind(owner.operands[0], value)
    ):
        return owner.operands[0]
    if not isinstance(owner, (AtenUnsqueezeOp, AtenViewOp, AtenReshapeOp, AtenExpandOp, AtenBroadcastToOp)):
        return None
    source = owner.self_
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


def _same_kind(source: SSAValue, result: SSAValue) -> bool:
    kinds = [getattr(v.type, "element_type", None) for v in (source, result)]
    if any(k is None for k in kinds):
        return False
    if _is_bool(source) or _is_bool(result):
        return _is_bool(source) and _is_bool(result)
    return all(not isinstance(k, IntegerType) for k in kinds)


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


def _absent(value: float | None) -> bool:
    """Only -inf proves a key absent (as in `passes/fx/masks.py`): finite biases go to the run-time check."""
    return value == -math.inf


def _validity(mask: SSAValue) -> SSAValue | str:
    """The boolean validity a mask is built from (True = key exists), or why it is not one."""
    if _is_bool(mask):
        return mask
    owner = mask.owner
    if isinstance(owner, (AtenWhereSelfOp, AtenWhereScalarOp, AtenWhereScalarOtherOp, AtenWhereScalarSelfOp)):
        when_true, when_false = _scalar_of(owner.self_), _scalar_of(owner.other)
        if when_true == 0.0 and _absent(when_false):
            return owner.condition
        if _absent(when_true) and when_false == 0.0:
            return _negated(owner.condition)
        return "additive attn_mask is not 0 for valid keys and -inf for padded ones"
    if isinstance(owner, AtenMaskedFillScalarOp):
        if _scalar_of(owner.self_) == 0.0 and _absent(const_float(owner.value)):
            return _negated(owner.mask)
        return "masked_fill attn_mask is not zeros filled with -inf"
    return "attn_mask is an arbitrary float tensor (cannot prove it is key padding)"


def _negated(value: SSAValue) -> SSAValue | str:
    if isinstance(value.owner, (AtenBitwiseNotOp, AtenLogicalNotOp)):
        return value.owner.self_
    return "attn_mask marks padded keys with a condition that is not the negation of a validity"


def _scalar_of(value: SSAValue) -> float | None:
    """A constant number, or the single value of a constant splat tensor (`zeros`, a literal)."""
    owner = value.owner
    if isinstance(owner, ValueTensorLiteralOp):
        return owner.splat_value()
    if isinstance(owner, GenericTorchOp) and owner.name in ("torch.aten.zeros", "torch.aten.zeros_like"):
        return 0.0
    return const_float(value)


def _prefix_length(validity: SSAValue, size: int, batch: int) -> Length | str:
    owner = validity.owner
    if isinstance(owner, ValueTensorLiteralOp):
        value = owner.splat_value()
        if value is None:
            return "a constant validity that is not all True or all False"
        return ALL_VALID if value != 0 else 0
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
    0..S-1 are exact in its dtype and in every dtype it is converted to on the way (FX: `_exact_positions`)."""
    while True:
        if not _exact_positions(value, size):
            return False
        source = _peeled_once(value)
        if source is None:
            break
        value = source
    owner = value.owner
    if isinstance(owner, AtenArangeOp):
        return const_int(owner.end) == size
    if isinstance(owner, AtenArangeStartOp):
        return const_int(owner.start) == 0 and const_int(owner.end) == size
    if isinstance(owner, AtenArangeStartStepOp):
        return const_int(owner.start) == 0 and const_int(owner.end) == size and const_int(owner.step) == 1
    return False


# Floats hold every integer up to 2^(mantissa bits + 1): float32 up to 2^24, float64 up to 2^53; float16 and
# bfloat16 (2^11, 2^8) are not taken at all, as in the FX pass.
_EXACT_FLOAT_POSITIONS = {Float32Type: 2**24, Float64Type: 2**53}


def _exact_positions(value: SSAValue, size: int) -> bool:
    """Positions 0..size-1 are exact in `value`'s element type (an integer type wide enough, not bool, or
    float32 / float64 up to their exact integers)."""
    element_type = getattr(value.type, "element_type", None)
    if isinstance(element_type, IntegerType):
        width = element_type.width.data
        if width == 1:
            return False
        unsigned = element_type.signedness.data == Signedness.UNSIGNED
        return size - 1 <= 2 ** (width if unsigned else width - 1) - 1
    return size <= _EXACT_FLOAT_POSITIONS.get(type(element_type), 0)


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
