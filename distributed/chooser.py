"""Choosing between the ring and the all-to-all strategy, and the one entry point that does it.

Entry points: `choose_strategy(num_heads, n_local, joint_len, world_size) -> StrategyChoice` and
`sequence_parallel_joint_attention(..., strategy="auto")`.

The rule, per rank, in elements of b * nh * dh moved (the model the benchmark reports next to its timings):
- ring: (P - 1) * (2 * N_local + L): P - 1 hops of a K/V shard, plus gathering the other ranks' joint
  partials (out and lse, sent in the fp32 accumulator);
- all-to-all: (P - 1) / P * (4 * N_local + L): q, k, v out and out back, and joint_out gathered over heads.
All-to-all when nh % P == 0 and its volume is strictly lower; ring otherwise (ties go to the ring, whose
transfers overlap compute). With joint tokens (L > 0) the all-to-all volume is the lower one at every
P >= 2, so in practice: all-to-all whenever the heads divide evenly, else ring. Volume is only a proxy:
the ring hides its transfers behind attention when a shard's compute outlasts its transfer (roughly
N_local >~ 1000 tokens on NVLink-class links), while the all-to-all exposes all of its own; the
multi-GPU benchmark (benchmarks/ring_joint_attention.py) measures both to check the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from ._checks import check_sequence_parallel_call, check_strategy, check_ulysses_heads
from .agreement import CallArgs, Checked, checked_call
from .comm import group_rank_and_size
from .ring import ring_joint_attention
from .ulysses import ulysses_eligible, ulysses_joint_attention

Strategy = Literal["ring", "ulysses"]


@dataclass(frozen=True)
class StrategyChoice:
    strategy: Strategy
    reason: str
    ring_volume: float  # elements of b * nh * dh each rank receives
    ulysses_volume: float | None  # None when nh % P != 0


def communication_volume(strategy: Strategy, n_local: int, joint_len: int, world_size: int) -> float:
    """Per-rank received elements, in units of b * nh * dh, of one forward (see the module docstring)."""
    p = world_size
    if strategy == "ring":
        return (p - 1) * (2 * n_local + joint_len)
    if strategy == "ulysses":
        return (p - 1) / p * (4 * n_local + joint_len)
    raise ValueError(f"communication_volume: strategy must be 'ring' or 'ulysses'; got {strategy!r}")


def choose_strategy(num_heads: int, n_local: int, joint_len: int, world_size: int) -> StrategyChoice:
    """The strategy `strategy="auto"` runs, with the reason and both modelled volumes."""
    ring = communication_volume("ring", n_local, joint_len, world_size)
    if not ulysses_eligible(num_heads, world_size):
        return StrategyChoice("ring", f"nh={num_heads} is not divisible by P={world_size}", ring, None)
    ulysses = communication_volume("ulysses", n_local, joint_len, world_size)
    if ulysses < ring:
        return StrategyChoice(
            "ulysses", f"all-to-all moves {ulysses:g} < ring {ring:g} (x b*nh*dh)", ring, ulysses
        )
    return StrategyChoice("ring", f"ring moves {ring:g} <= all-to-all {ulysses:g} (x b*nh*dh)", ring, ulysses)


def sequence_parallel_joint_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    joint_q: Tensor,
    joint_k: Tensor,
    joint_v: Tensor,
    *,
    group=None,
    logical_n: int | Tensor | None = None,
    logical_l: int | Tensor | None = None,
    scale: float | None = None,
    runtime: str = "auto",
    strategy: str = "auto",
    check_ranks: bool | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """`ring_joint_attention` or `ulysses_joint_attention` (same arguments and results), chosen by
    `choose_strategy` when strategy="auto". Every rank computes the choice from its own shapes; with
    check_ranks on, the one exchange (of this call, not repeated by the strategy) compares the choices."""
    _, world_size = group_rank_and_size(group, "sequence_parallel_joint_attention")

    def validate() -> Checked:
        check_strategy(strategy)
        local = check_sequence_parallel_call(
            q, k, v, joint_q, joint_k, joint_v, logical_n, logical_l, scale, runtime, world_size
        )
        if strategy != "auto":
            chosen = strategy
        else:
            chosen = choose_strategy(local.nh, local.n, local.l, world_size).strategy
        if chosen == "ulysses":
            check_ulysses_heads(local.nh, world_size)
        return Checked(local, chosen, auto=strategy == "auto")

    args = CallArgs((q, k, v, joint_q, joint_k, joint_v), logical_n, logical_l, scale, runtime)
    checked = checked_call(
        "sequence_parallel_joint_attention", group, world_size, check_ranks, validate, args
    )
    attend = ring_joint_attention if checked.strategy == "ring" else ulysses_joint_attention
    return attend(
        q, k, v, joint_q, joint_k, joint_v,
        group=group, logical_n=logical_n, logical_l=logical_l, scale=scale, runtime=runtime, check_ranks=False,
    )  # fmt: skip
