"""Splitting the spatial tokens across ranks and putting them back together.

Entry points: `padded_length(n, world_size)`, `shard_sequence(x, rank, world_size)` (pure: this rank's
zero-padded chunk), `gather_sequence(x_local, group=..., length=...)` (collective, differentiable) and
`block_valid_length(logical_n, block, n_local)` (how many of a shard's keys exist).

The global spatial length N is padded up to a multiple of the world size P so that every rank holds
N_local = ceil(N / P) tokens; rank r holds global positions [r * N_local, (r + 1) * N_local). Padded tokens
are excluded by passing the true length as `logical_n` (the sharding never hides them by itself).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .comm import all_gather


def padded_length(n: int, world_size: int) -> int:
    """N rounded up to a multiple of the world size."""
    if world_size < 1:
        raise ValueError(f"padded_length: world_size must be at least 1; got {world_size}")
    return -(-n // world_size) * world_size


def shard_sequence(x: Tensor, rank: int, world_size: int, *, dim: int = 2) -> Tensor:
    """Rank `rank`'s chunk of `x` along `dim` after zero-padding that dim to a multiple of `world_size`.

    Returns a view when no padding is needed, else a chunk of a padded copy.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"shard_sequence: rank must lie in [0, world_size={world_size}); got {rank}")
    n = x.shape[dim]
    n_local = padded_length(n, world_size) // world_size
    if n_local * world_size != n:
        pad_shape = list(x.shape)
        pad_shape[dim] = n_local * world_size - n
        x = torch.cat([x, x.new_zeros(pad_shape)], dim=dim)
    return x.narrow(dim, rank * n_local, n_local)


def gather_sequence(x_local: Tensor, *, group=None, dim: int = 2, length: int | None = None) -> Tensor:
    """All ranks' chunks concatenated along `dim` (in rank order), trimmed to `length` if given.

    A collective: every rank of the group calls it. Differentiable; the gradient of a chunk is the sum of
    the gradients every rank's full copy receives (see comm.py).
    """
    dim = dim % x_local.dim()
    stacked = all_gather(x_local, group)  # [P, *x_local.shape]
    full = stacked.movedim(0, dim).flatten(dim, dim + 1)
    return full if length is None else full.narrow(dim, 0, length)


def block_valid_length(logical_n: int | Tensor | None, block: int, n_local: int) -> int | Tensor | None:
    """Valid keys in the shard of global block `block`: clamp(logical_n - block * n_local, 0, n_local).

    None (all valid) stays None; an int gives an int; a per-batch tensor gives a tensor on its device
    (no host sync).
    """
    if logical_n is None:
        return None
    if isinstance(logical_n, Tensor):
        return (logical_n - block * n_local).clamp(0, n_local)
    return max(0, min(n_local, logical_n - block * n_local))
