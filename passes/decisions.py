"""What a fusion pass decided for each attention it saw, and the sentence it gives for a fusion: one type and
one summary for both passes, so `jointattn.explain` (FX) and the `fuse-joint-attention` remarks (MLIR) read
alike.

Entry points: `Decision` (one SDPA call: fused or left alone, and why), `FusionReport` (the FX pass's list of
them), and `summarize(...)`, the reason of a fused decision ("token sets [5, 3] (spatial-first), no padding,
both outputs used"). A refusal's reason is the sentence of the rule that refused it (`passes/rules.py`, or the
pass's own matcher).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

# How the keys' padding reaches the op, as `summarize` names it.
NO_PADDING = "none"  # no mask, or one proven to admit every key
PROVEN_LENGTHS = "lengths"  # valid lengths proven from the mask at compile time
CHECKED_MASK = "check"  # a key-padding mask checked at run time (exact path if it is not a prefix)

_PADDING_TEXT = {
    NO_PADDING: "no padding",
    PROVEN_LENGTHS: "padding as valid lengths proven from the mask",
    CHECKED_MASK: "key-padding mask checked at run time (exact path if it is not a prefix)",
}


@dataclass(frozen=True)
class Decision:
    """One `scaled_dot_product_attention` call: fused into `jointattn::joint_attention` or left alone."""

    node: str  # which call: the FX node's name, or "@function SDPA #index" in MLIR
    fused: bool
    reason: str  # why it was left alone, or what was fused (`summarize`)

    def __str__(self) -> str:
        return f"{'fused' if self.fused else 'kept '}  {self.node}: {self.reason}"


@dataclass
class FusionReport:
    decisions: list[Decision] = field(default_factory=list)

    @property
    def fused(self) -> int:
        return sum(d.fused for d in self.decisions)

    def __str__(self) -> str:
        head = f"{self.fused} of {len(self.decisions)} attention calls fused into jointattn::joint_attention"
        return "\n".join([head, *(f"  {d}" for d in self.decisions)])


def summarize(
    lengths: Sequence, spatial: int, padding: str, parts_used: Collection[int], rejoined: int
) -> str:
    """The reason of a fused decision: the token sets (source order) and which is spatial, how padding
    reaches the op, which per-set outputs are read, and how many consumers still take the whole sequence."""
    order = "spatial-first" if spatial == 0 else "text-first"
    used = sorted(parts_used)
    if len(used) == 2:
        outs = "both outputs used"
    elif not used:
        outs = "no per-set output"
    else:
        outs = "only the first token set used" if used == [0] else "only the second token set used"
    if rejoined:
        outs += f"; re-joined for {rejoined} whole-sequence consumer(s)"
    return f"token sets {list(lengths)} ({order}), {_PADDING_TEXT[padding]}, {outs}"
