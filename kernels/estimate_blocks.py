"""The block-mask estimator in two Triton kernels (`runtime/sparse_estimate.py`'s arithmetic, which is a dozen
torch launches; at small sizes a call costs its launches, not its bytes).

- `block_means_kernel`, one program per (query or key block, b * nh): the block's mean over its valid rows in
  float32 (rows at or past the valid length left out; a block with none has mean 0).
- `select_blocks_kernel`, one program per QT query blocks of one (batch, head): their pooled scores against
  every key block (`tl.dot`, QT x CHUNK at a time; each key block weighted by its valid token count, in log
  space: -inf for a block with none, and for a NaN score), kept in a scratch row; then, row by row, the top
  key blocks: a fixed count (`keep`, known on the host) or the fewest whose softmax mass reaches `cdf`. A row's
  threshold is its sorted scores' value at the count; blocks above it are kept, and ties at it by lowest index.
  Output: the count, and a permutation of the key blocks with the kept ones first, ascending, then the rest,
  ascending.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _mean_of_block(X, stride_s, stride_d, start, limit, BLOCK: tl.constexpr, ROWS: tl.constexpr,
                   BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr):  # fmt: skip
    d = tl.arange(0, BLOCK_D)
    acc = tl.zeros([BLOCK_D], tl.float32)
    for r0 in tl.static_range(0, BLOCK, ROWS):
        within = r0 + tl.arange(0, ROWS)
        rows = start + within
        x = tl.load(X + rows[:, None].to(tl.int64) * stride_s + d[None, :] * stride_d,
                    mask=((rows < limit) & (within < BLOCK))[:, None] & (d < HEAD_DIM)[None, :], other=0.0)  # fmt: skip
        acc += tl.sum(x.to(tl.float32), 0)
    count = tl.minimum(tl.maximum(limit - start, 0), BLOCK)
    return acc / tl.maximum(count, 1).to(tl.float32)


@triton.jit
def block_means_kernel(
    Q, K, QM, KM, VALID,
    stride_qb, stride_qh, stride_qs, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    N, H, QBN,
    Q_BLOCK: tl.constexpr, KV_BLOCK: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
    HEAD_DIM: tl.constexpr, HAS_VALID: tl.constexpr,
):  # fmt: skip
    """QM [b * nh, QBn, BLOCK_D], KM [b * nh, KBn, BLOCK_D] float32, contiguous; programs [0, QBn) pool q."""
    pid = tl.program_id(0)
    pid_bh = tl.program_id(1)
    bz = pid_bh // H
    h = pid_bh % H
    limit = N
    if HAS_VALID:
        limit = tl.minimum(tl.maximum(tl.load(VALID + bz).to(tl.int32), 0), N)
    d = tl.arange(0, BLOCK_D)
    if pid < QBN:
        base = Q + bz.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
        mean = _mean_of_block(
            base, stride_qs, stride_qd, pid * Q_BLOCK, limit, Q_BLOCK, ROWS, BLOCK_D, HEAD_DIM
        )
        tl.store(QM + (pid_bh.to(tl.int64) * QBN + pid) * BLOCK_D + d, mean)
    else:
        kb = pid - QBN
        base = K + bz.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
        mean = _mean_of_block(
            base, stride_ks, stride_kd, kb * KV_BLOCK, limit, KV_BLOCK, ROWS, BLOCK_D, HEAD_DIM
        )
        kbn = tl.num_programs(0) - QBN
        tl.store(KM + (pid_bh.to(tl.int64) * kbn + kb) * BLOCK_D + d, mean)


@triton.jit
def select_blocks_kernel(
    QM, KM, SCRATCH, COUNT, INDICES, VALID,
    N, H, QBN, KBN, kept, share, scale,
    KV_BLOCK: tl.constexpr, QT: tl.constexpr, CHUNK: tl.constexpr, KBN_PAD: tl.constexpr,
    BLOCK_D: tl.constexpr, HAS_VALID: tl.constexpr, BY_MASS: tl.constexpr,
):  # fmt: skip
    """SCRATCH [b * nh, QBn, KBN_PAD] float32; COUNT [b * nh, QBn] int32; INDICES [b * nh, QBn, KBn] int32.
    `kept`: the count for every row (keep); with BY_MASS, each row's count is the fewest blocks whose softmax
    mass reaches `share` (cdf)."""
    pid_q = tl.program_id(0)
    pid_bh = tl.program_id(1)
    bz = pid_bh // H
    limit = N
    if HAS_VALID:
        limit = tl.minimum(tl.maximum(tl.load(VALID + bz).to(tl.int32), 0), N)
    rows = pid_q * QT + tl.arange(0, QT)
    d = tl.arange(0, BLOCK_D)
    bh = pid_bh.to(tl.int64)
    qm = tl.load(
        QM + (bh * QBN + rows[:, None]) * BLOCK_D + d[None, :], mask=(rows < QBN)[:, None], other=0.0
    )
    scratch = SCRATCH + (bh * QBN + rows[:, None]) * KBN_PAD
    for c0 in tl.range(0, KBN_PAD, CHUNK):
        kb = c0 + tl.arange(0, CHUNK)
        km = tl.load(
            KM + (bh * KBN + kb[:, None]) * BLOCK_D + d[None, :], mask=(kb < KBN)[:, None], other=0.0
        )
        scores = tl.dot(qm, tl.trans(km), input_precision="ieee") * scale
        count = tl.minimum(tl.maximum(limit - kb * KV_BLOCK, 0), KV_BLOCK).to(tl.float32)
        weight = tl.where(count > 0, tl.log(tl.maximum(count, 1.0)), float("-inf"))  # no valid key: -inf
        scores = scores + weight[None, :]
        scores = tl.where((kb < KBN)[None, :] & (scores == scores), scores, float("-inf"))
        tl.store(scratch + kb[None, :], scores, mask=(rows < QBN)[:, None])
    tl.debug_barrier()
    kb = tl.arange(0, KBN_PAD)
    for r in range(0, QT):
        row = pid_q * QT + r
        if row < QBN:
            s = tl.load(SCRATCH + (bh * QBN + row) * KBN_PAD + kb)
            ordered = tl.sort(s, 0, descending=True)
            n_keep = kept
            if BY_MASS:
                top = tl.max(ordered, 0)
                top = tl.where(top > float("-inf"), top, 0.0)
                p = tl.where(ordered > float("-inf"), tl.exp(ordered - top), 0.0)
                total = tl.sum(p, 0)
                # A row without a valid key keeps one block, as the torch path's softmax of all -inf does.
                mass = tl.where(total > 0, tl.cumsum(p, 0) / tl.maximum(total, 1e-30), 1.0)
                n_keep = tl.minimum(tl.sum((mass < share).to(tl.int32), 0) + 1, KBN)
            threshold = tl.max(tl.where(kb == n_keep - 1, ordered, float("-inf")), 0)
            above = (s > threshold) & (kb < KBN)
            tied = (s == threshold) & (kb < KBN)
            room = n_keep - tl.sum(above.to(tl.int32), 0)
            chosen = above | (tied & (tl.cumsum(tied.to(tl.int32), 0) <= room))
            picked = chosen.to(tl.int32)
            slot = tl.where(chosen, tl.cumsum(picked, 0) - 1, n_keep + tl.cumsum(1 - picked, 0) - 1)
            tl.store(INDICES + (bh * QBN + row) * KBN + slot, kb, mask=kb < KBN)
            tl.store(COUNT + bh * QBN + row, n_keep)


def grid_and_tiles(qbn: int, kbn: int, b_nh: int, dh: int):
    """(pooling grid, selection grid, QT, CHUNK, KBN_PAD, BLOCK_D) for the launcher."""
    kbn_pad = triton.next_power_of_2(max(kbn, 16))
    qt = 16  # tl.dot's smallest M
    chunk = min(64, kbn_pad)
    block_d = triton.next_power_of_2(max(dh, 16))
    return (qbn + kbn, b_nh), (triton.cdiv(qbn, qt), b_nh), qt, chunk, kbn_pad, block_d
