"""Argument checks shared by the sequence-parallel entry points (ring, all-to-all, chooser).

They reuse the op's own checks (`jointattn.runtime.validation`) on this rank's shard, and check `logical_n`
against the *global* padded length N = P * N_local. Ranks are not compared with each other (that would
cost a collective per call): every rank must pass the same shapes, lengths, scale and runtime.
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
