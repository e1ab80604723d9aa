"""What the fusion pass decided for each attention it saw, and why; `jointattn.explain` prints these."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Decision:
    """One `scaled_dot_product_attention` call: fused into `jointattn::joint_attention` or left alone."""

    node: str
    fused: bool
    reason: str  # why it was left alone, or what was fused (token sets, padding, outputs)

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
