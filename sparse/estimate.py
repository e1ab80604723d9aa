"""A block mask estimated from the inputs themselves: mean-pool each query block and each key block, score the
pooled blocks against each other, and keep per query block the key blocks that carry the most estimated mass.

The estimate is O((N / q_block) x (N / kv_block) x dh) torch work (two pooling reductions, one small matmul, a
softmax, a sort), cheap next to the attention, and can be reused across steps by keeping the returned mask.
"""

from __future__ import annotations

import math

import torch
from torch.nn.attention.flex_attention import BlockMask


def _pool(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[b, nh, n, dh] -> (block means [b, nh, nb, dh] in float32, tokens per block [nb])."""
    b, nh, n, dh = x.shape
    nb = -(-n // block)
    padded = torch.nn.functional.pad(x.float(), (0, 0, 0, nb * block - n))
    counts = torch.full((nb,), block, dtype=torch.float32, device=x.device)
    counts[-1] = n - (nb - 1) * block
    return padded.view(b, nh, nb, block, dh).sum(3) / counts[:, None], counts


def estimate_block_mask(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    keep: float | None = None,
    cdf: float | None = None,
    block_size=(128, 64),
    scale: float | None = None,
) -> BlockMask:
    """A BlockMask [b, nh] over the N spatial tokens of q, k [b, nh, N, dh].

    keep: the fraction of key blocks each query block keeps (at least one); cdf: keep the fewest key blocks
    whose estimated attention mass (softmax of pooled scores, each key block weighted by its token count) adds
    up to at least this share. Exactly one of them. Kept blocks are attended whole (full blocks)."""
    if (keep is None) == (cdf is None):
        raise ValueError("estimate_block_mask: give exactly one of keep= (a fraction) or cdf= (a mass share)")
    share = keep if keep is not None else cdf
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 < share <= 1.0:
        raise ValueError(
            f"estimate_block_mask: {'keep' if keep is not None else 'cdf'} must be in (0, 1]; got {share!r}"
        )
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(
            f"estimate_block_mask: q and k must be [b, nh, N, dh] of one shape; got {tuple(q.shape)}, {tuple(k.shape)}"
        )
    q_block, kv_block = (block_size, block_size) if isinstance(block_size, int) else block_size
    n, dh = q.shape[2], q.shape[3]
    scale = scale if scale is not None else dh**-0.5
    qp, _ = _pool(q, q_block)
    kp, counts = _pool(k, kv_block)
    logits = (qp @ kp.transpose(-1, -2)) * scale + counts.log()
    kbn = logits.shape[-1]
    ordered, order = logits.sort(-1, descending=True)
    if keep is not None:
        count = torch.full(logits.shape[:-1], max(1, math.ceil(keep * kbn)), device=q.device)
    else:
        mass = ordered.softmax(-1).cumsum(-1)
        count = (mass < cdf).sum(-1) + 1  # blocks before the one that reaches the share, and that one
    count = count.clamp(max=kbn).to(torch.int32)
    # Kept blocks in ascending key order (the kernels then stream keys forward); the rest after them.
    kept = torch.arange(kbn, device=q.device) < count[..., None]
    key = torch.where(kept, order, order + kbn)
    indices = key.sort(-1).values % kbn
    zeros = torch.zeros_like(count)
    return BlockMask.from_kv_blocks(
        zeros, indices.to(torch.int32), count, indices.to(torch.int32).contiguous(),
        BLOCK_SIZE=(q_block, kv_block), seq_lengths=(n, n),
    )  # fmt: skip
