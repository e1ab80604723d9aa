"""Differentiable communication for sequence-parallel joint attention (ring and all-to-all).

Entry points: `group_rank_and_size(group)`, `ring_shift(x, group, pending)` (asynchronous point-to-point
rotation of a buffer one step around the ring), `all_to_all(x, group)` and `all_gather(x, group)`.

Gradient convention ("sum over the group"): a tensor replicated on every rank (the joint tokens) is one
logical tensor whose gradient is the *sum* of the per-rank gradients, as with the text stream of a
sequence-parallel DiT (each rank backpropagates its own share of the loss). Hence `all_gather`'s backward
is a reduce-scatter (sum) and `all_to_all` / `ring_shift` send gradients back to where the data came from.

Every function here is a collective: all ranks of the group must call it in the same order, and, when
training, run backward through the same outputs (as with any torch.distributed collective).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

# torch 2.13 renamed the flat collectives; the GPU machines run torch 2.11, which has only the old names.
_all_gather_flat = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_flat = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def group_rank_and_size(group, who: str) -> tuple[int, int]:
    """This process's rank in `group` and the group's size; a clear error when there is no process group."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            f"{who}: torch.distributed is not initialized; call torch.distributed.init_process_group "
            "(NCCL on GPUs, gloo on CPU) before sequence-parallel attention"
        )
    return dist.get_rank(group), dist.get_world_size(group)


def global_rank(group, group_rank: int) -> int:
    """Point-to-point ops address global ranks (torch 2.11 has no `group_peer`)."""
    if group is None or group is dist.group.WORLD:
        return group_rank
    return dist.get_global_rank(group, group_rank)


class PendingShift:
    """The in-flight transfers of one `ring_shift`: its result may be read only after `wait()`."""

    def __init__(self) -> None:
        self._works: list = []

    def attach(self, works: list) -> None:
        self._works = list(works)

    def wait(self) -> None:
        for work in self._works:
            work.wait()
        self._works = []


def _send_recv(send: Tensor, to_rank: int, receive: Tensor, from_rank: int, group) -> list:
    ops = [
        dist.P2POp(dist.isend, send, to_rank, group),
        dist.P2POp(dist.irecv, receive, from_rank, group),
    ]
    # One batch: NCCL groups the pair (no send/recv ordering deadlock); gloo runs them as plain isend/irecv.
    return dist.batch_isend_irecv(ops)


class _RingShift(torch.autograd.Function):
    """Forward: send `x` to the next rank, receive the previous rank's buffer (asynchronously).
    Backward: the gradient goes the other way, to the rank the data came from (synchronously)."""

    @staticmethod
    def forward(ctx, x, group, next_rank, prev_rank, pending):
        ctx.group, ctx.next_rank, ctx.prev_rank = group, next_rank, prev_rank
        received = torch.empty_like(x, memory_format=torch.contiguous_format)
        pending.attach(_send_recv(x, next_rank, received, prev_rank, group))
        return received

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        received = torch.empty_like(grad)
        for work in _send_recv(grad, ctx.prev_rank, received, ctx.next_rank, ctx.group):
            work.wait()
        return received, None, None, None, None


def ring_shift(x: Tensor, group, pending: PendingShift) -> Tensor:
    """Starts rotating the contiguous buffer `x` one step around the ring (rank r -> r+1) and returns the
    buffer that will hold rank r-1's `x`; call `pending.wait()` before reading it. Posting the transfer
    before the current block's compute and waiting after it is what overlaps communication with compute.
    """
    if not x.is_contiguous():
        raise ValueError(
            f"ring_shift: x must be contiguous (it is sent as one message); got shape {tuple(x.shape)}, "
            f"strides {x.stride()}"
        )
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    next_rank = global_rank(group, (rank + 1) % size)
    prev_rank = global_rank(group, (rank - 1) % size)
    return _RingShift.apply(x, group, next_rank, prev_rank, pending)


class _AllToAll(torch.autograd.Function):
    """Equal-split all-to-all along dim 0. The exchange is its own transpose, so backward repeats it."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _exchange(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _exchange(grad, ctx.group), None


def _exchange(x: Tensor, group) -> Tensor:
    x = x.contiguous()
    out = torch.empty_like(x)
    if x.numel():  # shapes agree across ranks, so every rank skips an empty exchange alike
        dist.all_to_all_single(out, x, group=group)
    return out


def all_to_all(x: Tensor, group) -> Tensor:
    """x [P, ...]: chunk s goes to rank s; the result's chunk s came from rank s. Differentiable."""
    return _AllToAll.apply(x, group)


class _AllGather(torch.autograd.Function):
    """Stacks every rank's `x` along a new dim 0; backward sums the gradients over ranks (reduce-scatter)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        size = dist.get_world_size(group)
        x = x.contiguous()
        # Concatenated along dim 0 (the layout gloo requires; NCCL takes it too), then viewed as stacked.
        out = x.new_empty((size * x.shape[0], *x.shape[1:]))
        if x.numel():  # e.g. no joint tokens: nothing to send, on every rank alike
            _all_gather_flat(out, x, group=group)
        return out.view(size, *x.shape)

    @staticmethod
    def backward(ctx, grad):
        out = grad.new_empty(grad.shape[1:])
        if out.numel():
            _reduce_scatter_flat(out, grad.contiguous().flatten(0, 1), group=ctx.group)
        return out, None


def all_gather(x: Tensor, group) -> Tensor:
    """[P, *x.shape]: row s is rank s's `x`, identical bits on every rank. Differentiable (sum convention)."""
    return _AllGather.apply(x, group)
