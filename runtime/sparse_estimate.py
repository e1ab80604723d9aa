"""The block-mask estimator's arithmetic (`jointattn.sparse.estimate_block_mask` and the compile pass's
`jointattn::estimate_kv_blocks` op): mean-pool query and key blocks, score pooled blocks against each other
(each key block weighted by its token count), keep per query block the top key blocks by a fixed fraction or
by cumulative estimated mass. A handful of torch kernels; no host sync."""

from __future__ import annotations

import math
import os

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

    One float32-accumulating pass over x in its own dtype and layout (no copies: at Mochi's size a copy of q costs
    more than the whole estimate may). Rows past `valid` ([b] lengths, or None) are left out of the means, so
    padding (NaN from `torch.empty` included) never decides a mask: a block with no valid row has mean 0, and the
    one block per sample that valid cuts is summed again over its valid rows only."""
    b, nh, n, dh = x.shape
    nb, whole = -(-n // block), n // block
    sums = x[:, :, : whole * block].reshape(b, nh, whole, block, dh).sum(3, dtype=torch.float32)
    if nb > whole:
        sums = torch.cat([sums, x[:, :, whole * block :].sum(2, keepdim=True, dtype=torch.float32)], 2)
    starts = torch.arange(nb, device=x.device) * block
    limit = torch.full((1,), n, device=x.device) if valid is None else valid.to(x.device).clamp(0, n)
    counts = (limit[:, None] - starts[None, :]).clamp(0, block).float()[:, None, :]  # [b or 1, 1, nb]
    if valid is not None:
        cut = (limit % block != 0) & (limit < n)  # a block that valid ends inside, before the tensor ends
        cut_block = (limit // block).clamp(max=nb - 1)
        rows = cut_block[:, None] * block + torch.arange(block, device=x.device)
        rows = rows.clamp(max=n - 1)  # [b, block]
        part = x.gather(2, rows[:, None, :, None].expand(b, nh, block, dh)).float()
        part = torch.where((rows < limit[:, None])[:, None, :, None], part, 0.0).sum(2)  # [b, nh, dh]
        at = cut_block[:, None, None, None].expand(b, nh, 1, dh)
        recounted = torch.where(cut[:, None, None, None], part[:, :, None], sums.gather(2, at))
        sums = sums.scatter(2, at, recounted)
    means = sums / counts.clamp(min=1)[..., None]
    return torch.where(counts[..., None] > 0, means, 0.0), counts


def _means(x: torch.Tensor, block: int) -> torch.Tensor:
    """[b, nh, n, dh] -> block means [b, nh, nb, dh] in float32, for an unpadded x: `_pool`'s arithmetic in
    three launches at most (the per-call cost at small sizes is launches, not bytes)."""
    b, nh, n, dh = x.shape
    whole = n // block
    means = x[:, :, : whole * block].reshape(b, nh, whole, block, dh).sum(3, dtype=torch.float32).div_(block)
    if n > whole * block:
        tail = x[:, :, whole * block :].sum(2, keepdim=True, dtype=torch.float32).div_(n - whole * block)
        means = torch.cat([means, tail], 2)
    return means


def _logits(q, k, q_block: int, kv_block: int, scale: float, valid_n) -> torch.Tensor:
    """Pooled scores [b, nh, QBn, KBn] with each key block weighted by its (valid) token count, in log space."""
    if valid_n is not None:
        qp, _ = _pool(q, q_block, valid_n)
        kp, counts = _pool(k, kv_block, valid_n)
        return (qp @ kp.transpose(-1, -2)) * scale + counts.log()[:, :, None, :]
    n = k.shape[2]
    logits = (_means(q, q_block) @ _means(k, kv_block).transpose(-1, -2)).mul_(scale)
    whole = n // kv_block
    logits[..., :whole].add_(math.log(kv_block))
    if n > whole * kv_block:
        logits[..., whole:].add_(math.log(n - whole * kv_block))
    return logits


ESTIMATOR_ENV = "JOINTATTN_ESTIMATOR"


# Unset, the kernels estimate on CUDA tensors of at most this many key blocks (the most measured, padded to a power
# of two). On the H200 (sixteenth session, GPU time replayed from CUDA graphs, `benchmarks/estimator_tune.py` and
# `sparse.py --estimator-only`), keep=0.3 / cdf=0.9, ms: SD3.5's 1024^2 layer (64 key blocks) 0.032 / 0.033
# against the torch path's 0.082 / 0.133; Mochi's (696, the scratch rows' bisection) 0.66 / 0.69 against 0.93 /
# 1.17; Mochi's with 16-key blocks (2783) 1.88 / 2.25 against 2.13 / 4.05.
KERNELS_MAX_KEY_BLOCKS = 4096


def estimator_kernels(q, kv_block: int | None = None) -> str:
    """Which implementation estimates: "torch" (a dozen torch launches) or "triton" (two launches,
    `kernels/estimate_blocks.py`). JOINTATTN_ESTIMATOR=torch or =triton forces one (Triton on CUDA tensors, or CPU
    ones under TRITON_INTERPRET=1); unset ("auto"), CUDA tensors with at most `KERNELS_MAX_KEY_BLOCKS` key blocks
    take the kernels, where they measured faster."""
    value = os.environ.get(ESTIMATOR_ENV, "auto")
    if value not in ("auto", "torch", "triton"):
        raise ValueError(f"{ESTIMATOR_ENV} must be 'torch' or 'triton' (or unset); got {value!r}")
    if value == "auto":
        if not (q.is_cuda and kv_block is not None):
            return "torch"
        return "triton" if -(-q.shape[2] // kv_block) <= KERNELS_MAX_KEY_BLOCKS else "torch"
    runs_triton = q.is_cuda or os.environ.get("TRITON_INTERPRET", "0") == "1"
    return "triton" if value == "triton" and runs_triton else "torch"


def estimate_kv_blocks(q, k, keep, cdf, q_block: int, kv_block: int, scale=None, valid_n=None):
    """(count [b, nh, QBn] int32, indices [b, nh, QBn, KBn] int32: the kept key blocks first, ascending).

    `valid_n` ([b] lengths or None): keys past it weigh nothing (a block of padding only is never preferred).
    With a fixed share (`keep`) and no padding the count is known on the host, which saves most launches."""
    dh = q.shape[3]
    scale = scale if scale is not None else dh**-0.5
    if estimator_kernels(q, kv_block) == "triton":
        return estimate_kv_blocks_triton(q, k, keep, cdf, q_block, kv_block, scale, valid_n)
    logits = _logits(q, k, q_block, kv_block, scale, valid_n)
    kbn = logits.shape[-1]
    ordered, order = logits.sort(-1, descending=True)
    if keep is not None:
        kept = min(kbn, max(1, math.ceil(keep * kbn)))
        indices = torch.cat([order[..., :kept].sort(-1).values, order[..., kept:]], -1)
        count = torch.full(logits.shape[:-1], kept, dtype=torch.int32, device=q.device)
        return count, indices.to(torch.int32)
    mass = ordered.softmax(-1).cumsum(-1)
    # The blocks before the one that reaches the share, and that one.
    count = ((mass < cdf).sum(-1) + 1).clamp(max=kbn)
    listed = torch.arange(kbn, device=q.device) < count[..., None]
    indices = torch.where(listed, order, order + kbn).sort(-1).values % kbn
    return count.to(torch.int32), indices.to(torch.int32)


def estimate_kv_blocks_triton(q, k, keep, cdf, q_block: int, kv_block: int, scale: float, valid_n=None):
    """`estimate_kv_blocks` in two Triton launches (`kernels/estimate_blocks.py`): the same pooled scores and the
    same kept blocks (ties at a row's threshold broken by lowest index; a NaN score never preferred, where the
    torch path sorts NaN first), the rest of each row ascending (the torch path orders it by score; readers
    look at the first `count` entries only)."""
    from ..kernels.estimate_blocks import block_means_kernel, grid_and_tiles, select_blocks_kernel

    b, nh, n, dh = q.shape
    qbn, kbn = -(-n // q_block), -(-n // kv_block)
    device = q.device
    count = torch.empty((b, nh, qbn), dtype=torch.int32, device=device)
    indices = torch.empty((b, nh, qbn, kbn), dtype=torch.int32, device=device)
    if b * nh * qbn == 0:
        return count, indices
    t = grid_and_tiles(qbn, kbn, b * nh, dh)
    qm = torch.empty((b * nh, qbn, t.block_d), dtype=torch.float32, device=device)
    km = torch.empty((b * nh, kbn, t.block_d), dtype=torch.float32, device=device)
    # The scratch rows are read only past one product's key blocks; otherwise any tensor stands in, unread.
    scratch = (
        qm
        if t.kbn_pad == t.chunk
        else torch.empty((b * nh, qbn, t.kbn_pad), dtype=torch.float32, device=device)
    )
    valid = valid_n.to(device=device, dtype=torch.int32) if valid_n is not None else count
    kept = min(kbn, max(1, math.ceil(keep * kbn))) if keep is not None else 0
    block_means_kernel[t.pool_grid](
        q, k, qm, km, valid, *q.stride(), *k.stride(), n, nh, qbn,
        Q_BLOCK=q_block, KV_BLOCK=kv_block, ROWS=t.rows, BLOCK_D=t.block_d, HEAD_DIM=dh,
        HAS_VALID=valid_n is not None, num_warps=t.pool_warps,
    )  # fmt: skip
    select_blocks_kernel[t.select_grid](
        qm, km, scratch, count, indices, valid, n, nh, qbn, kbn, kept, float(cdf or 0.0), float(scale),
        KV_BLOCK=kv_block, QT=t.qt, CHUNK=t.chunk, KBN_PAD=t.kbn_pad, BLOCK_D=t.block_d,
        HAS_VALID=valid_n is not None, BY_MASS=keep is None, SEL_ROWS=t.select_rows, SEARCH=t.search,
        num_warps=t.select_warps,
    )  # fmt: skip
    return count, indices
