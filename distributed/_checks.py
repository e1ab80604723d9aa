"""Argument checks shared by the sequence-parallel entry points (ring, all-to-all, chooser).

They reuse the op's own checks (`jointattn.runtime.validation`) on this rank's shard, and check `logical_n`
against the *global* padded length N = P * N_local. They look at this rank's call only; comparing the
ranks' calls with each other is agreement.py's exchange, which runs these checks first and passes their
errors on to every rank (so a rank whose own call is invalid does not leave the others waiting).
"""

from __future__ import annotations

from jointattn.runtime.registry import RUNTIME_NAMES
from jointattn.runtime.validation import JointShape, check_length_arg, check_options, check_tensors

STRATEGIES = ("auto", "ring", "ulysses")


def check_sequence_parallel_call(
    q, k, v, joint_q, joint_k, joint_v, logical_n, logical_l, scale, runtime, world_size: int
) -> JointShape:
    """Checks one rank's call; returns the *local* shape (n = N_local)."""
    local = check_tensors(q, k, v, joint_q, joint_k, joint_v)
    check_options("rear", scale, runtime, RUNTIME_NAMES)
    global_shape = JointShape(local.b, local.nh, local.n * world_size, local.l, local.dh)
    check_length_arg("logical_n", logical_n, global_shape, q.device)
    check_length_arg("logical_l", logical_l, local, q.device)
    return local


def check_strategy(strategy) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(
            f"sequence_parallel_joint_attention: strategy must be one of {STRATEGIES}; got {strategy!r}"
        )


def ulysses_eligible(num_heads: int, world_size: int) -> bool:
    """The all-to-all strategy splits heads evenly across ranks."""
    return num_heads % world_size == 0


def check_ulysses_heads(num_heads: int, world_size: int) -> None:
    if not ulysses_eligible(num_heads, world_size):
        raise ValueError(
            f"ulysses_joint_attention: the number of heads nh={num_heads} (q.shape[1]) must be divisible by "
            f"the group size {world_size}; use ring_joint_attention (or strategy='auto')"
        )
