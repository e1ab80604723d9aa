"""Ring joint attention: the spatial tokens sharded across ranks, K/V passed around a ring.

Entry point: `ring_joint_attention(q, k, v, joint_q, joint_k, joint_v, *, group, logical_n, logical_l, scale,
runtime) -> (out, joint_out, lse)`, the PyTorch counterpart of ttnn's `ring_joint_scaled_dot_product_attention`.
Rank r holds spatial tokens [r * N_local, (r + 1) * N_local) of q, k, v and the whole (replicated) joint
tensors; it returns its rows of `out`, the full `joint_out` (bitwise identical on every rank) and
`lse` [b, nh, N_local + L] (its spatial rows, then the joint rows).

Internals. Each of the P steps attends this rank's queries to one K/V shard with the op itself
(`jointattn.joint_attention`, so Triton on CUDA and the exact reference elsewhere), the shard's valid length
being `clamp(logical_n - source * N_local, 0, N_local)`. Before a step's compute, the K/V buffer (k and v
stacked into one message) is already on its way to the next rank (`ring_shift`, isend/irecv); it is waited
for after the compute, so transfers hide behind attention. Partial results are merged by log-sum-exp
(`merge_partials`) in an fp32 (fp64 for fp64 inputs) accumulator. `ring_schedule` decides, per rank and
step, where the joint tokens take part, so that they count exactly once:
- joint *keys*: every rank's spatial queries must see them once: at step 0 on rank 0, at step 1 elsewhere;
- joint *queries*: rank r keeps the joint rows of its step 0 (the joint queries against its own shard, plus
  the joint keys on rank 0 only); these P partials are all-gathered and merged in rank order 0..P-1, the
  same operations on the same bits everywhere, hence the identical `joint_out`. Steps 2.. pass the joint
  tensors sliced to length 0, so no rank repeats the joint queries' work; step 1 on ranks r > 0 computes
  joint rows it discards (L x (N_local + L) extra, the price of the op tying joint queries to joint keys).

Autograd is exact by construction: per-block ops (their lse output is differentiable), merges, and
`ring_shift`, whose backward sends each K/V gradient back one hop (P-1 hops in all). Why this cannot
deadlock: the shifts' backwards form a chain, run in the same order on every rank, and the joint gather
(created after every ring node) has the highest sequence number, so the autograd engine, which runs ready
nodes highest-sequence-first, does its reduce-scatter before any shift's backward on every rank.

Memory and overlap. Without grad, a rank holds two K/V shards (current and incoming) and one accumulator:
O(N / P). With grad, autograd keeps every received shard and every partial output for the backward:
O(N) per rank, like gathering K/V; the backward's transfers are synchronous (not overlapped). A
recompute-based backward (re-rotating K/V) would need the op's backward to use the given out/lse, which
the reference runtime does not (it recomputes them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from jointattn.runtime.merge import merge_partials
from jointattn.runtime.op import joint_attention
from jointattn.runtime.reference import accumulation_dtype
from torch import Tensor

from ._checks import check_sequence_parallel_call
from .agreement import CallArgs, Checked, checked_call
from .comm import PendingShift, all_gather, group_rank_and_size, ring_shift
from .sharding import block_valid_length

JointRows = Literal["keep", "discard", "none"]


@dataclass(frozen=True)
class RingStep:
    """One step of one rank: which K/V shard it attends to and how the joint tokens take part.

    joint_rows: "keep" (this step's joint rows are the rank's joint partial), "discard" (computed because
    the joint keys are needed for the spatial rows, then dropped) or "none" (joint tensors of length 0).
    """

    index: int
    source: int
    joint_keys: bool
    joint_rows: JointRows


def ring_schedule(rank: int, world_size: int) -> tuple[RingStep, ...]:
    """The P steps of `rank`: at step t it holds the K/V shard of rank (rank - t) mod P."""
    steps = []
    for t in range(world_size):
        if t == 0:
            steps.append(RingStep(0, rank, joint_keys=rank == 0, joint_rows="keep"))
        elif t == 1 and rank != 0:
            steps.append(RingStep(1, rank - 1, joint_keys=True, joint_rows="discard"))
        else:
            steps.append(RingStep(t, (rank - t) % world_size, joint_keys=False, joint_rows="none"))
    return tuple(steps)


def heads_last(x: Tensor) -> Tensor:
    """[b, nh, S, dh] laid out as [b, S, nh, dh] (the op's output layout: model code's
    `transpose(1, 2).reshape(b, S, nh * dh)` is then a view)."""
    return x if x.transpose(1, 2).is_contiguous() else x.transpose(1, 2).contiguous().transpose(1, 2)


def _block_attention(
    q, k_block, v_block, joint_q, joint_k, joint_v, step: RingStep, n_block, logical_l, scale, runtime
):
    if step.joint_rows == "none":
        joint_q, joint_k, joint_v = (t[:, :, :0] for t in (joint_q, joint_k, joint_v))
        l_arg = None
    else:
        l_arg = logical_l if step.joint_keys else 0
    return joint_attention(
        q, k_block, v_block, joint_q, joint_k, joint_v,
        scale=scale, logical_n=n_block, logical_l=l_arg, runtime=runtime,
    )  # fmt: skip


def _merge_joint_partials(joint_out: Tensor, joint_lse: Tensor, gather, acc: torch.dtype):
    """All ranks' joint partials gathered (one message: out and lse packed) and merged in rank order."""
    packed = torch.cat([joint_out.to(acc), joint_lse.to(acc)[..., None]], dim=-1)
    gathered = gather(packed)  # [P, b, nh, L, dh + 1]
    out, lse = gathered[0, ..., :-1], gathered[0, ..., -1].float()
    for source in range(1, gathered.shape[0]):
        out, lse = merge_partials(out, lse, gathered[source, ..., :-1], gathered[source, ..., -1].float())
    return out, lse


class RingTransport:
    """How K/V shards and joint partials travel: `shift(kv) -> (incoming, wait)` and `gather(x) -> [P, *x]`.

    The real one communicates; the benchmark swaps in a local one (every shard stands in for the remote
    ones) to time the same compute without communication, i.e. how much of the transfers the ring hides.
    """

    def __init__(self, group) -> None:
        self.group = group

    def shift(self, kv: Tensor):
        pending = PendingShift()
        return ring_shift(kv, self.group, pending), pending.wait

    def gather(self, x: Tensor) -> Tensor:
        return all_gather(x, self.group)


def ring_attention_steps(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    joint_q: Tensor,
    joint_k: Tensor,
    joint_v: Tensor,
    *,
    rank: int,
    world_size: int,
    transport: RingTransport,
    logical_n: int | Tensor | None,
    logical_l: int | Tensor | None,
    scale: float | None,
    runtime: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """The ring's loop for one rank (validated arguments, world_size > 1); see the module docstring."""
    n_local, acc = q.shape[2], accumulation_dtype(q.dtype)
    kv = torch.stack([k, v])  # one contiguous message per step
    k_block, v_block = k, v
    out_acc = lse_acc = joint_partial = None
    for step in ring_schedule(rank, world_size):
        last = step.index == world_size - 1
        if not last:
            incoming, wait = transport.shift(kv)  # posted before the compute it overlaps with
        n_block = block_valid_length(logical_n, step.source, n_local)
        out, joint_out, lse = _block_attention(
            q, k_block, v_block, joint_q, joint_k, joint_v, step, n_block, logical_l, scale, runtime
        )
        if out_acc is None:
            out_acc, lse_acc = out.to(acc), lse[..., :n_local]
        else:
            out_acc, lse_acc = merge_partials(out_acc, lse_acc, out, lse[..., :n_local])
        if step.joint_rows == "keep":
            joint_partial = (joint_out, lse[..., n_local:])
        if not last:
            wait()
            kv = incoming
            k_block, v_block = kv.unbind(0)
    joint_out, joint_lse = _merge_joint_partials(*joint_partial, transport.gather, acc)
    out = heads_last(out_acc).to(q.dtype)
    return out, heads_last(joint_out).to(q.dtype), torch.cat([lse_acc, joint_lse], dim=-1)


def ring_joint_attention(
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
    """Sequence-parallel joint attention with K/V rotating around a ring of ranks.

    Args:
        q, k, v: this rank's shard [b, nh, N_local, dh] of the spatial tokens; the global N padded up to
            P * N_local (see `shard_sequence`). Same shapes on every rank.
        joint_q, joint_k, joint_v: the joint (text) tokens [b, nh, L, dh], the same on every rank.
        group: the process group (None: the default group). A collective: every rank calls it.
        logical_n: the true global spatial length (None: all P * N_local valid, an int, or an int tensor [b]).
        logical_l: valid joint tokens (None, an int, or an int tensor [b]).
        scale: softmax scale; None means 1/sqrt(dh).
        runtime: the op's runtime for every block ("auto": Triton on CUDA, else the exact reference).
        check_ranks: compare every rank's call (shapes, dtype, strategy, runtime, scale, valid lengths,
            which inputs require grad) in one small all-gather first, so that ranks that disagree all
            raise the same `RanksDisagreeError` instead of aborting, hanging or mixing results. None
            (default): on, unless the environment sets JOINTATTN_CHECK_RANKS=0. Pass the same on every
            rank. Cost per call: one small collective and ~50 us of Python, plus a host sync on GPUs;
            measured on CPU/gloo (a loaded 2-core machine) 0.4-1.5 ms with 2 ranks, 1.5-4 ms with 4.

    Returns:
        out [b, nh, N_local, dh] (this rank's rows), joint_out [b, nh, L, dh] (bitwise identical on every
        rank) and lse [b, nh, N_local + L] float32.

    Note:
        Differentiable. Replicated tensors follow the "sum over the group" convention: each rank returns
        its share of the joint tensors' gradients, the sum over ranks being the full gradient (all-reduce
        replicated parameters' gradients over the group, as for any sequence-parallel model).
    """
    rank, world_size = group_rank_and_size(group, "ring_joint_attention")
    validate = lambda: Checked(
        check_sequence_parallel_call(
            q, k, v, joint_q, joint_k, joint_v, logical_n, logical_l, scale, runtime, world_size
        ),
        "ring",
    )
    args = CallArgs((q, k, v, joint_q, joint_k, joint_v), logical_n, logical_l, scale, runtime)
    checked_call("ring_joint_attention", group, world_size, check_ranks, validate, args)
    if world_size == 1:
        return joint_attention(
            q, k, v, joint_q, joint_k, joint_v,
            scale=scale, logical_n=logical_n, logical_l=logical_l, runtime=runtime,
        )  # fmt: skip
    return ring_attention_steps(
        q, k, v, joint_q, joint_k, joint_v,
        rank=rank, world_size=world_size, transport=RingTransport(group),
        logical_n=logical_n, logical_l=logical_l, scale=scale, runtime=runtime,
    )  # fmt: skip
