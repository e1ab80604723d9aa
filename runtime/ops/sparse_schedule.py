"""Sparse ops that keep per-layer state across calls: what lets a compiled video model treat denoising steps
differently without seeing them (one call of a layer per step).

- `jointattn::estimate_kv_blocks_reused`: a layer's estimated mask re-estimated every few calls, reused in between
  (`estimate(..., every=k)`);
- `jointattn::dense_calls_flag`: whether this is one of a layer's first calls, which the sparse op then runs dense
  (`Sparsity(..., dense_calls=s)`).

The sparsity pass takes a slot per layer it compiles (`new_estimate_slot`, `new_dense_calls_slot`), so state is
per compiled graph. Both ops are stateful by design and tagged cudagraph-unsafe: a replayed CUDA graph would never
update them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .sparse import estimate_kv_blocks, estimate_outputs

# The reused estimates' state, per slot (one slot per sparse layer of a compiled graph, `new_estimate_slot`):
# [calls so far, count, indices].
_REUSED: dict[int, list] = {}


def new_estimate_slot() -> int:
    """A fresh slot for one layer's reused estimate (the sparsity pass takes one per layer it compiles)."""
    slot = len(_REUSED)
    _REUSED[slot] = [0, None, None]
    return slot


@torch.library.custom_op(
    "jointattn::estimate_kv_blocks_reused", mutates_args=(), tags=(torch.Tag.cudagraph_unsafe,)
)
def estimate_kv_blocks_reused(
    q: Tensor,
    k: Tensor,
    keep: float | None,
    cdf: float | None,
    q_block: int,
    kv_block: int,
    scale: float | None,
    valid_n: Tensor | None,
    slot: int,
    every: int,
) -> tuple[Tensor, Tensor]:
    """`estimate_kv_blocks` re-run on every `every`-th call of its layer (`slot`; the first call included) and
    reused in between: the video methods' mask reuse across denoising steps. Stateful by design, hence
    cudagraph-unsafe (a replayed graph would never refresh it). A call whose mask shape differs from the kept
    one (another N or batch) estimates afresh."""
    state = _REUSED.setdefault(slot, [0, None, None])
    calls, count, indices = state
    b, nh, n, _ = q.shape
    shape = (b, nh, -(-n // q_block), -(-n // kv_block))
    fresh = (
        calls % every == 0 or indices is None or tuple(indices.shape) != shape or indices.device != q.device
    )
    if fresh:
        count, indices = estimate_kv_blocks(q, k, keep, cdf, q_block, kv_block, scale, valid_n)
        state[1:] = [count, indices]
    state[0] = calls + 1
    return count.clone(), indices.clone()


@estimate_kv_blocks_reused.register_fake
def _(q, k, keep, cdf, q_block, kv_block, scale, valid_n, slot, every):
    return estimate_outputs(q, q_block, kv_block)


# Calls so far per dense-calls slot (one slot per sparse layer of a compiled graph, `new_dense_calls_slot`).
_DENSE_CALLS: dict[int, int] = {}


def new_dense_calls_slot() -> int:
    """A fresh counter for one layer's first dense calls (the sparsity pass takes one per layer it compiles)."""
    slot = len(_DENSE_CALLS)
    _DENSE_CALLS[slot] = 0
    return slot


@torch.library.custom_op("jointattn::dense_calls_flag", mutates_args=(), tags=(torch.Tag.cudagraph_unsafe,))
def dense_calls_flag(like: Tensor, slot: int, dense_calls: int) -> Tensor:
    """A CPU bool scalar: whether this call of the layer behind `slot` is one of its first `dense_calls` (which
    the sparse op then runs dense). Counts calls, so stateful by design, hence cudagraph-unsafe. `like` only
    places the op on q's device for dispatch."""
    calls = _DENSE_CALLS.get(slot, 0)
    _DENSE_CALLS[slot] = calls + 1
    return torch.tensor(calls < dense_calls)


@dense_calls_flag.register_fake
def _(like, slot, dense_calls):
    return torch.empty((), dtype=torch.bool, device="cpu")
