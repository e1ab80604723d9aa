"""Sequence-parallel joint attention across devices over torch.distributed (NCCL on GPUs, gloo on CPU).

The spatial tokens are sharded across the ranks of a process group (the global N padded up to a multiple
of the group size P, the true length given as `logical_n`); the joint (text) tokens are replicated.
Two strategies, with the same arguments and results:
- `ring_joint_attention`: K/V shards rotate around a ring with asynchronous point-to-point transfers
  overlapped with each block's compute, partial results merged by log-sum-exp (ring.py);
- `ulysses_joint_attention`: all-to-all from sequence shards to head shards, the op on the full sequence
  for nh/P heads, all-to-all back (ulysses.py; needs nh % P == 0);
and `sequence_parallel_joint_attention(..., strategy="auto")` picks one with `choose_strategy` (chooser.py).
Helpers: `shard_sequence`, `gather_sequence`, `padded_length` (sharding.py). Per-block compute is the op
`jointattn::joint_attention` itself, so it runs on the op's runtimes.
Before its first collective every entry point compares the ranks' calls in one small all-gather
(agreement.py; `check_ranks=False` or JOINTATTN_CHECK_RANKS=0 skips it): ranks that disagree all raise the
same `RanksDisagreeError` instead of aborting, hanging or returning mixed results.
"""

from .agreement import RanksDisagreeError
from .chooser import StrategyChoice, choose_strategy, communication_volume, sequence_parallel_joint_attention
from .ring import RingStep, ring_joint_attention, ring_schedule
from .sharding import block_valid_length, gather_sequence, padded_length, shard_sequence
from .ulysses import ulysses_eligible, ulysses_joint_attention

__all__ = [
    "ring_joint_attention",
    "ulysses_joint_attention",
    "sequence_parallel_joint_attention",
    "choose_strategy",
    "communication_volume",
    "StrategyChoice",
    "RanksDisagreeError",
    "ulysses_eligible",
    "ring_schedule",
    "RingStep",
    "shard_sequence",
    "gather_sequence",
    "padded_length",
    "block_valid_length",
]
