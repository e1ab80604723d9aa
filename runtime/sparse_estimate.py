"""The block-mask estimator's arithmetic (`jointattn.sparse.estimate_block_mask` and the compile pass's
`jointattn::estimate_kv_blocks` op): mean-pool query and key blocks, score pooled blocks against each other
(each key block weighted by its token count), keep per query block the top key blocks by a fixed fraction or
by cumulative estimated mass. A handful of torch kernels; no host sync."""

from __future__ import annotations

import math

import torch


def check_share(keep, cdf, owner: str) -> float:
    if (keep is None) == (cdf is None):
        raise ValueError(f"{owner}: give exactly one of keep= (a fraction) or cdf= (a mass share)")
    share = keep if keep is not None else cdf
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 < share <= 1.0:
        raise ValueError(f"{owner}: {'keep' if keep is not None else 'cdf'} must be in (0, 1]; got {share!r}")
    return float(share)


def _pool(x: torch.Tensor, block: int, valid=None):
    """[b, nh, n, dh] -> (block means [b, nh, nb, dh] in float32, valid tokens per block [b or 1, 1, nb]).

    Rows past `valid` ([b] lengths, or None) are left out of the means, so padding (NaN from `torch.empty`
    included) never decides a mask; a block with no valid row has mean 0 and count 0."""
    b, nh, n, dh = x.shape
    nb = -(-n // block)
    rows = torch.arange(nb * block, device=x.device)
    limit = torch.full((1,), n, device=x.device) if valid is None else valid.to(x.device).clamp(0, n)
    inside = rows[None, :] < limit[:, None]  # [b or 1, nb * block]
    padded = torch.nn.functional.pad(x.float(), (0, 0, 0, nb * block - n))
    padded = torch.where(inside[:, None, :, None], padded, 0.0)
    counts = inside.view(-1, 1, nb, block).sum(-1).float()
    return padded.view(b, nh, nb, block, dh).sum(3) / counts.clamp(min=1)[..., None], counts


def estimate_kv_blocks(q, k, keep, cdf, q_block: int, kv_block: int, scale=None, valid_n=None):
    """(count [b, nh, QBn] int32, indices [b, nh, QBn, KBn] int32: the kept key blocks first, ascending).

    `valid_n` ([b] lengths or None): keys past it weigh nothing (a block of padding only is never preferred)."""
    dh = q.shape[3]
    scale = scale if scale is not None else dh**-0.5
    qp, _ = _pool(q, q_block, valid_n)
    kp, counts = _pool(k, kv_block, valid_n)
    logits = (qp @ kp.transpose(-1, -2)) * scale + counts.log()[:, :, None, :]
    kbn = logits.shape[-1]
    ordered, order = logits.sort(-1, descending=True)
    if keep is not None:
        count = torch.full(logits.shape[:-1], max(1, math.ceil(keep * kbn)), device=q.device)
    else:
        mass = ordered.softmax(-1).cumsum(-1)
        count = (mass < cdf).sum(-1) + 1  # the blocks before the one that reaches the share, and that one
    count = count.clamp(max=kbn)
    kept = torch.arange(kbn, device=q.device) < count[..., None]
    indices = torch.where(kept, order, order + kbn).sort(-1).values % kbn
    return count.to(torch.int32), indices.to(torch.int32)
