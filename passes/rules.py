"""The fusion rules both passes apply (FX in `passes/fx`, MLIR in `passes/mlir`): what counts as joint
attention, what is refused and why. Pure functions over plain values, so the two IRs cannot drift apart.

A candidate is an SDPA whose q, k and v are each a concat of the same two token sets along the sequence
dim. It is fused when every rule below returns None; otherwise the returned sentence is the reason, which
`jointattn.explain` and the MLIR pass's remarks show verbatim.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def refuse_sdpa_flags(*, dropout_p, is_causal, enable_gqa, has_scale_node: bool = False) -> str | None:
    """SDPA options under which the call is not the op's function."""
    if not isinstance(dropout_p, (int, float)) or isinstance(dropout_p, bool):
        return "dropout_p is not a constant"
    if dropout_p != 0.0:
        return f"dropout_p={dropout_p} (the op has no dropout)"
    if is_causal is not False:
        return "is_causal=True (the op is non-causal; key order would matter)"
    if enable_gqa is not False:
        return "enable_gqa=True (the op needs as many key/value heads as query heads)"
    if has_scale_node:
        return "scale is computed at run time (the op takes a constant scale)"
    return None


def refuse_shapes(q_shape: Sequence, k_shape: Sequence, v_shape: Sequence) -> str | None:
    """Shape conditions of the op: rank 4, equal heads (no GQA) and one head dim for q, k and v."""
    if len(q_shape) != 4 or len(k_shape) != 4 or len(v_shape) != 4:
        return f"rank {len(q_shape)} inputs (the op takes [b, nh, S, dh])"
    if q_shape[1] != k_shape[1] or k_shape[1] != v_shape[1]:
        return (
            f"heads differ: q {q_shape[1]}, k {k_shape[1]}, v {v_shape[1]} (GQA/MQA is not joint attention)"
        )
    if q_shape[3] != k_shape[3] or k_shape[3] != v_shape[3]:
        return f"head dims differ: q {q_shape[3]}, k {k_shape[3]}, v {v_shape[3]}"
    if q_shape[0] != k_shape[0] or k_shape[0] != v_shape[0]:
        return (
            f"batch sizes differ: q {q_shape[0]}, k {k_shape[0]}, v {v_shape[0]} (SDPA broadcasts them; "
            "the op takes one batch)"
        )
    if q_shape[3] == 0:
        return "head dim 0 (an empty attention: nothing to compute)"
    return None


def refuse_part_lengths(q_parts: Sequence, k_parts: Sequence, v_parts: Sequence) -> str | None:
    """q, k and v must be concats of the same two token sets, in the same order and with equal lengths."""
    if not (len(q_parts) == len(k_parts) == len(v_parts)):
        return "q, k and v are concats of different numbers of parts"
    if len(q_parts) != 2:
        return f"a concat of {len(q_parts)} token sets (the op joins exactly two)"
    if list(q_parts) != list(k_parts) or list(k_parts) != list(v_parts):
        return (
            f"q, k, v token sets differ in length or order: {list(q_parts)}, {list(k_parts)}, {list(v_parts)}"
        )
    return None


def spatial_part(lengths: Sequence) -> int:
    """Which of the two parts the op takes as spatial (q, k, v); the other becomes joint_*.

    Non-causal attention does not depend on key order, so either assignment is the same function; the
    longer set is taken as spatial (ttnn tiles N with q chunks and pads L separately; ring attention shards
    N), and on a tie the first. Text-first graphs therefore get their outputs swapped back.
    """
    a, b = lengths
    return 1 if _is_greater(b, a) else 0


def _is_greater(x, y) -> bool:
    try:
        return bool(x > y)
    except Exception:  # symbolic sizes with no hint: keep source order
        return False


@dataclass(frozen=True)
class PartRange:
    """A range [start, end) of the joint sequence that lies inside one part."""

    part: int
    start: int
    end: int


def locate_range(start, end, lengths: Sequence) -> PartRange | str:
    """Maps a slice [start, end) of the concatenated sequence onto one part, or says why it cannot.

    A slice that straddles the concat boundary is not a split of the two token sets: refused.
    """
    offset = 0
    for index, length in enumerate(lengths):
        lo, hi = offset, offset + length
        if _le(lo, start) and _le(end, hi) and _le(start, end):
            return PartRange(index, start - lo, end - lo)
        offset = hi
    return f"slice [{start}, {end}) crosses the concat boundary at {lengths[0]}"


def _le(a, b) -> bool:
    try:
        return bool(a <= b)
    except Exception:
        return False


def refuse_mask_constant_over_keys(varies_over_keys: bool) -> str | None:
    """A mask that does not vary over keys is a per-query bias or an all-or-nothing flag, not key padding."""
    return None if varies_over_keys else "attn_mask does not vary over keys"


def refuse_key_mask_shape(mask_shape: Sequence, q_shape: Sequence) -> str | None:
    """A mask the op can take as valid lengths varies only over batch and keys: [b|1, 1, 1, S] after
    broadcasting to 4-D (a key-padding mask broadcast over heads and queries)."""
    shape = [1] * (4 - len(mask_shape)) + list(mask_shape)
    if len(shape) != 4:
        return f"attn_mask of rank {len(mask_shape)}"
    if shape[2] != 1:
        return "attn_mask varies over queries (not a key-padding mask)"
    if shape[1] != 1:
        return "attn_mask varies over heads (not a key-padding mask)"
    if shape[0] not in (1, q_shape[0]):
        return f"attn_mask batch {shape[0]} does not broadcast to {q_shape[0]}"
    return None
