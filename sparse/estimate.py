"""A block mask estimated from the inputs themselves (`runtime/sparse_estimate.py` does the arithmetic): keep,
per query block, the key blocks carrying the most estimated attention mass. Cheap next to the attention
(O(N/q_block x N/kv_block x dh) work in a few kernels, no host sync). Reuse across steps: keep the BlockMask, or
in a compiled model `estimate(..., every=k)`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.attention.flex_attention import BlockMask

from ..runtime.sparse_estimate import check_share, estimate_kv_blocks


def estimate_block_mask(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    keep: float | None = None,
    cdf: float | None = None,
    block_size=(128, 64),
    scale: float | None = None,
    logical_n=None,
) -> BlockMask:
    """A BlockMask [b, nh] over the N spatial tokens of q, k [b, nh, N, dh].

    keep: the fraction of key blocks each query block keeps (at least one); cdf: keep the fewest key blocks
    whose estimated attention mass (softmax of pooled scores, each key block weighted by its token count) adds
    up to at least this share. Exactly one of them. Kept blocks are attended whole (full blocks). logical_n
    (an int or [b] lengths, as the op takes it): keys and queries past it are left out of the estimate."""
    check_share(keep, cdf, "estimate_block_mask")
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(
            f"estimate_block_mask: q and k must be [b, nh, N, dh] of one shape; got {tuple(q.shape)}, "
            f"{tuple(k.shape)}"
        )
    q_block, kv_block = (block_size, block_size) if isinstance(block_size, int) else block_size
    valid = None
    if logical_n is not None:
        valid = torch.as_tensor(logical_n, device=q.device).reshape(-1).expand(q.shape[0])
    count, indices = estimate_kv_blocks(q, k, keep, cdf, q_block, kv_block, scale, valid)
    n = q.shape[2]
    return BlockMask.from_kv_blocks(
        torch.zeros_like(count), indices, count, indices,
        BLOCK_SIZE=(q_block, kv_block), seq_lengths=(n, n),
    )  # fmt: skip


@dataclass(frozen=True)
class Estimate:
    """The estimator as a compile-time sparsity choice: `torch.compile(..., options={"sparsity":
    estimate(keep=0.3)})` estimates each sparse layer's mask from its own q and k at every call; with
    `every=k`, on every k-th call of the layer (the first included), reusing it in between (denoising steps
    change q and k slowly: the video methods' mask reuse)."""

    keep: float | None = None
    cdf: float | None = None
    block_size: tuple = (128, 64)
    every: int = 1

    def __post_init__(self):
        check_share(self.keep, self.cdf, "estimate")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(
                f"estimate: every must be a positive int (calls per estimate); got {self.every!r}"
            )

    @property
    def name(self) -> str:
        share = f"keep={self.keep}" if self.keep is not None else f"cdf={self.cdf}"
        reuse = f", every={self.every}" if self.every > 1 else ""
        return f"estimate({share}, block_size={tuple(self.block_size)}{reuse})"


def estimate(
    *, keep: float | None = None, cdf: float | None = None, block_size=(128, 64), every: int = 1
) -> Estimate:
    return Estimate(keep, cdf, tuple(block_size), every)
