"""All-to-all (Ulysses-style) joint attention: re-shard from sequence to heads, attend locally, re-shard back.

Entry point: `ulysses_joint_attention(...)`, the same signature and results as `ring_joint_attention`.
Needs nh divisible by the group size P (rank r takes heads [r * nh/P, (r + 1) * nh/P)).

Internals:
1. one all-to-all turns q, k, v [b, nh, N_local, dh] (stacked into one message) into this rank's head group
   over the whole padded sequence, [b, nh/P, P * N_local, dh];
2. one call of the op with the joint tensors' head slice (no communication: they are replicated), with
   `logical_n` the global valid length, so padded tokens drop out as in the single-device op;
3. an all-to-all sends each sequence chunk of out (and of the spatial lse) back to its rank, and an
   all-gather over heads assembles joint_out and the joint lse: each head computed once, gathered, hence
   identical bits on every rank.
Nothing is redundant (every query row and head is computed once in the group), but none of the
communication overlaps compute. Autograd goes through the op and the differentiable collectives
(comm.py; the joint tensors' gradients follow the "sum over the group" convention: rank r returns the
gradient of its head slice, zeros elsewhere).
"""

from __future__ import annotations

import torch
from jointattn.runtime.op import joint_attention
from torch import Tensor

from ._checks import check_sequence_parallel_call, check_ulysses_heads, ulysses_eligible
from .agreement import CallArgs, Checked, checked_call
from .comm import all_gather, all_to_all, group_rank_and_size

__all__ = ["ulysses_eligible", "ulysses_joint_attention"]


def ulysses_joint_attention(
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
    check_ranks: bool | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Sequence-parallel joint attention by all-to-all over heads. Arguments (check_ranks included) and
    results as `ring_joint_attention`; raises ValueError when nh is not divisible by the group size."""
    rank, world_size = group_rank_and_size(group, "ulysses_joint_attention")

    def validate() -> Checked:
        local = check_sequence_parallel_call(
            q, k, v, joint_q, joint_k, joint_v, logical_n, logical_l, scale, runtime, world_size
        )
        check_ulysses_heads(local.nh, world_size)
        return Checked(local, "ulysses")

    args = CallArgs((q, k, v, joint_q, joint_k, joint_v), logical_n, logical_l, scale, runtime)
    local = checked_call("ulysses_joint_attention", group, world_size, check_ranks, validate, args).shape
    b, nh, n_local, l, dh = local.b, local.nh, local.n, local.l, local.dh  # noqa: E741
    if world_size == 1:
        return joint_attention(
            q, k, v, joint_q, joint_k, joint_v,
            scale=scale, logical_n=logical_n, logical_l=logical_l, runtime=runtime,
        )  # fmt: skip
    h, n = nh // world_size, n_local * world_size
    # [b, nh, N_local, dh] -> [P (head group), b, h, N_local, dh], q, k and v stacked into one message.
    by_group = [t.view(b, world_size, h, n_local, dh).transpose(0, 1) for t in (q, k, v)]
    received = all_to_all(torch.stack(by_group, dim=1), group)  # chunk s: rank s's sequence chunk, my heads
    q_h, k_h, v_h = received.permute(1, 2, 3, 0, 4, 5).reshape(3, b, h, n, dh).unbind(0)
    heads = slice(rank * h, (rank + 1) * h)
    out_h, joint_out_h, lse_h = joint_attention(
        q_h, k_h, v_h, joint_q[:, heads], joint_k[:, heads], joint_v[:, heads],
        scale=scale, logical_n=logical_n, logical_l=logical_l, runtime=runtime,
    )  # fmt: skip
    # out [b, h, n, dh] -> [P (sequence chunk), b, N_local, h, dh] -> back from every head group.
    out_send = out_h.transpose(1, 2).reshape(b, world_size, n_local, h, dh).transpose(0, 1)
    out_back = all_to_all(out_send, group)  # [P (head group), b, N_local, h, dh]
    out = out_back.permute(1, 2, 0, 3, 4).reshape(b, n_local, nh, dh).transpose(1, 2)
    lse_send = lse_h[..., :n].reshape(b, h, world_size, n_local).permute(2, 0, 1, 3)
    lse_spatial = all_to_all(lse_send, group).transpose(0, 1).reshape(b, nh, n_local)
    # Joint rows: gather the head groups; [P, b, L, h, dh] -> [b, L, nh, dh] (heads-last layout).
    joint_out = all_gather(joint_out_h.transpose(1, 2), group).permute(1, 2, 0, 3, 4).reshape(b, l, nh, dh)
    joint_lse = all_gather(lse_h[..., n:], group).transpose(0, 1).reshape(b, nh, l)
    return out, joint_out.transpose(1, 2), torch.cat([lse_spatial, joint_lse], dim=-1)
