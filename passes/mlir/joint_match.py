"""Recognizing joint attention around one `torch.aten.scaled_dot_product_attention`: the checks the FX pass
makes in `passes/fx/fuse.py` before it rewrites (both apply `passes/rules.py`). Here matching and rewriting
(`fuse.py`) are separate steps, so this module has no FX twin of its own.

Entry point: `match_joint_attention(sdpa) -> JointMatch | str` (the match, or the reason it is refused).
It reads torch-dialect IR as torch-mlir's importer writes it (torch.export's ATen graph, where `transpose` is
already a `permute`, `chunk`/`split` are `split_with_sizes` + `prim.ListUnpack` and `narrow` is a `slice`),
and also the un-decomposed spellings (`transpose.int`, `split.Tensor`, `chunk`, `narrow`, `flatten`).

What matches, per input (q, k, v): a concat of two token sets along the sequence dim, possibly below
position-wise ops (`parts.resolve`): `cat([a, b], dim=2)` of `[B, H, S, D]` tensors, `cat([a, b],
dim=1)` of `[B, S, H, D]` tensors followed by `permute(0, 2, 1, 3)` / `transpose(1, 2)`, RoPE or any other
elementwise op applied to the whole concat; negative dims are normalized;
and on the output, uses of the SDPA result that end, possibly after `permute`/`transpose`, `view`/`reshape`
/`flatten`/`unflatten` that keep the sequence dim in place, and `contiguous` (`axes.output_dim`), in a cut along
the sequence dim (`slice`, `narrow`, `split`, `split_with_sizes`, `chunk`: `ranges.py`) are mapped to the token
set they lie in (`rules.locate_range`; a cut across the boundary refuses the whole match). Any other use needs
the whole sequence: it is counted, and the rewrite concatenates the two op outputs back for it (as the FX pass
does).
An `attn_mask` is read by `masks.key_padding`: valid lengths proven at compile time, a mask checked at
run time (`JointMatch.checked_mask`), or a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

from jointattn.passes import rules
from xdsl.ir import Operation, SSAValue

from .axes import output_dim
from .dialects.torch_ops import (
    AtenScaledDotProductAttentionOp,
    PrimListUnpackOp,
)
from .dialects.torch_types import DYNAMIC
from .ir_values import (
    const_bool,
    const_float,
    is_none,
    shape_of,
)
from .masks import CheckedMask, Length, key_padding
from .parts import PartsPlan, resolve
from .ranges import CUT_OPS, SPLIT_OPS, cut_dim, cut_ranges


@dataclass(frozen=True)
class PartUse:
    """A value cut out of the SDPA output: the ops leading to it, and which token set and range it is."""

    chain: tuple[tuple[Operation, int], ...]  # layout ops from the SDPA result to the cut, each with the
    # sequence dim of its result
    cut: Operation  # the slice/narrow/split op
    value: SSAValue  # the value whose uses move to the fused op's output (a cut result or a list element)
    seq_dim: int  # the sequence dim at the cut
    where: rules.PartRange


@dataclass(frozen=True)
class JointMatch:
    sdpa: AtenScaledDotProductAttentionOp
    inputs: tuple[PartsPlan, PartsPlan, PartsPlan]  # q, k, v as concats of the token sets
    lengths: tuple[int, int]
    spatial: int  # which part becomes the op's spatial (q, k, v) side; the other is joint_*
    scale: float  # resolved (SDPA's default 1/sqrt(dh) applied)
    valid_lengths: tuple[Length, Length]  # per part, in source order
    uses: tuple[PartUse, ...]
    whole_uses: int  # uses that need the whole joint output (re-joined with a concat)
    checked_mask: CheckedMask | None = None  # a key-padding mask checked at run time (valid_lengths unused)

    @property
    def joint(self) -> int:
        return 1 - self.spatial


def match_joint_attention(sdpa: AtenScaledDotProductAttentionOp) -> JointMatch | str:
    reason = _refuse_flags(sdpa)
    if reason:
        return reason
    shapes = [shape_of(v) for v in (sdpa.query, sdpa.key, sdpa.value)]
    if any(s is None for s in shapes):
        return "q, k or v has an unknown rank"
    reason = rules.refuse_shapes(*shapes)
    if reason:
        return reason
    inputs = []
    for name, value in (("q", sdpa.query), ("k", sdpa.key), ("v", sdpa.value)):
        found = resolve(value, 2)
        if isinstance(found, str):
            return f"{name} {found}"
        inputs.append(found)
    reason = rules.refuse_part_lengths(*(i.lengths for i in inputs))
    if reason:
        return reason
    lengths = inputs[0].lengths
    if shapes[0][3] == DYNAMIC:
        return "the head dim is not known at compile time"
    scale = const_float(sdpa.scale)
    if scale is None:
        scale = shapes[0][3] ** -0.5
    valid: tuple[Length, Length] = (None, None)
    checked = None
    if not is_none(sdpa.attn_mask):
        if shapes[0][0] == DYNAMIC:
            return "attn_mask with a batch size not known at compile time"
        found = key_padding(sdpa.attn_mask, lengths, shapes[0][0])
        if isinstance(found, str):
            return found
        if isinstance(found, CheckedMask):
            checked = found
        else:
            valid = found
    uses: list[PartUse] = []
    whole = _walk_uses(sdpa.result, 2, (), lengths, uses)
    if isinstance(whole, str):
        return whole
    if not uses and not whole:
        return "the attention output is not used"
    return JointMatch(
        sdpa, tuple(inputs), lengths, rules.spatial_part(lengths), scale, valid, tuple(uses), whole, checked
    )


def _refuse_flags(sdpa: AtenScaledDotProductAttentionOp) -> str | None:
    flags = {}
    for name in ("is_causal", "enable_gqa"):
        flags[name] = const_bool(getattr(sdpa, name))
        if flags[name] is None:
            return f"{name} is not a constant"
    dropout = const_float(sdpa.dropout_p)
    return rules.refuse_sdpa_flags(
        dropout_p=dropout if dropout is not None else "a run-time value",
        is_causal=flags["is_causal"],
        enable_gqa=flags["enable_gqa"],
        has_scale_node=not is_none(sdpa.scale) and const_float(sdpa.scale) is None,
    )


def _walk_uses(value: SSAValue, seq_dim: int, chain: tuple, lengths, found: list[PartUse]) -> int | str:
    """Collects the cuts below `value` into `found`; returns how many uses need the whole sequence, or why
    the match is refused."""
    rank = len(shape_of(value))
    whole = 0
    for use in list(value.uses):
        op = use.operation
        step = output_dim(op, seq_dim) if use.index == 0 else None
        if step is not None:
            below = _walk_uses(op.results[0], step, (*chain, (op, step)), lengths, found)
        elif use.index == 0 and isinstance(op, CUT_OPS) and cut_dim(op, rank) == seq_dim:
            below = _collect_cut(op, seq_dim, chain, lengths, found)
        else:
            below = 1
        if isinstance(below, str):
            return below
        whole += below
    return whole


def _collect_cut(op, seq_dim: int, chain, lengths, found: list[PartUse]) -> int | str:
    """Maps a cut along the sequence dim onto the token sets; 1 (a whole use) when its bounds are not known
    at compile time or its list escapes, a reason when it crosses the boundary."""
    ranges = cut_ranges(op, sum(lengths))
    if ranges is None:
        return 1
    if isinstance(op, SPLIT_OPS):
        unpacks = [u.operation for u in op.results[0].uses]
        if not unpacks or not all(isinstance(u, PrimListUnpackOp) for u in unpacks):
            return 1
        values = [(r, rng) for u in unpacks for r, rng in zip(u.results, ranges, strict=True)]
    else:
        values = [(op.results[0], ranges[0])]
    located = []
    for value, (start, end) in values:
        where = rules.locate_range(start, end, lengths)
        if isinstance(where, str):
            return where
        located.append(PartUse(chain, op, value, seq_dim, where))
    found.extend(located)
    return 0
