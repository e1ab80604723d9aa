"""The block-mask estimator in two Triton kernels (`runtime/sparse_estimate.py`'s arithmetic, which is a dozen
torch launches; at small sizes a call costs its launches, not its bytes).

- `block_means_kernel`, one program per (query or key block, b * nh): the block's mean over its valid rows in
  float32 (rows at or past the valid length left out; a block with none has mean 0).
- `select_blocks_kernel`, one program per QT query blocks of one (batch, head): their pooled scores against
  every key block (`tl.dot`; each key block weighted by its valid token count, in log space: -inf for a block
  with none, and for a NaN score), in registers where one product covers every key block, else through a
  scratch row CHUNK at a time; then the top key blocks of several rows at once: a fixed count (`keep`, known on
  the host) or the fewest whose softmax mass reaches `cdf`. A row's threshold is the score at that count: from a
  sort of the [rows, KBN_PAD] tile where one product covers the key blocks, by bisection over the scores' bits
  past that (on the H200 a bitonic sort of rows 1024 and 4096 wide took 1.3x and 3.1x the bisection's time).
  Blocks above it are kept, and ties at it by lowest index.
  Output: the count, and a permutation of the key blocks with the kept ones first, ascending, then the rest,
  ascending. (The first version sorted the QT rows one after another: slower on the H200 than the torch path.)
"""

from __future__ import annotations

from dataclasses import dataclass

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
def _pooled_scores(
    QM, KM, bh, rows, kb, QBN, KBN, limit, scale, KV_BLOCK: tl.constexpr, BLOCK_D: tl.constexpr
):
    """[QT, len(kb)] scores of query blocks `rows` against key blocks `kb`, each key block weighted by its valid
    token count in log space; -inf for a block without one, for a NaN score, and past KBN."""
    d = tl.arange(0, BLOCK_D)
    qm = tl.load(
        QM + (bh * QBN + rows[:, None]) * BLOCK_D + d[None, :], mask=(rows < QBN)[:, None], other=0.0
    )
    km = tl.load(KM + (bh * KBN + kb[:, None]) * BLOCK_D + d[None, :], mask=(kb < KBN)[:, None], other=0.0)
    scores = tl.dot(qm, tl.trans(km), input_precision="ieee") * scale
    count = tl.minimum(tl.maximum(limit - kb * KV_BLOCK, 0), KV_BLOCK).to(tl.float32)
    weight = tl.where(count > 0, tl.log(tl.maximum(count, 1.0)), float("-inf"))  # no valid key: -inf
    scores = scores + weight[None, :]
    return tl.where((kb < KBN)[None, :] & (scores == scores), scores, float("-inf"))


@triton.jit
def _sorted_threshold(s, KBN, kept, share, R: tl.constexpr, KBN_PAD: tl.constexpr, BY_MASS: tl.constexpr):
    """(count, threshold) of R rows of scores s [R, KBN_PAD] from one sort of the tile: a fixed count (`kept`) or
    the fewest blocks whose softmax mass reaches `share`; the threshold is the sorted scores' value at the count."""
    kb = tl.arange(0, KBN_PAD)
    ordered = tl.sort(s, 1, descending=True)
    if BY_MASS:
        top = tl.max(ordered, 1)
        top = tl.where(top > float("-inf"), top, 0.0)
        p = tl.where(ordered > float("-inf"), tl.exp(ordered - top[:, None]), 0.0)
        total = tl.sum(p, 1)
        # A row without a valid key keeps one block, as the torch path's softmax of all -inf does.
        mass = tl.where(total[:, None] > 0, tl.cumsum(p, 1) / tl.maximum(total, 1e-30)[:, None], 1.0)
        n_keep = tl.minimum(tl.sum((mass < share).to(tl.int32), 1) + 1, KBN)
    else:
        n_keep = tl.zeros([R], tl.int32) + kept
    threshold = tl.max(tl.where(kb[None, :] == n_keep[:, None] - 1, ordered, float("-inf")), 1)
    return n_keep, threshold


@triton.jit
def _ordered_key(x):
    """float32 -> int32 of the same order (negative floats' magnitude bits flipped); its own inverse."""
    bits = x.to(tl.int32, bitcast=True)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@triton.jit
def _searched_threshold(s, KBN, kept, share, R: tl.constexpr, BY_MASS: tl.constexpr):
    """`_sorted_threshold` without the sort, for the scratch rows' wide tiles (a bitonic sort of 1024-4096 values
    per row was most of the estimate's time): the threshold is the largest score t whose blocks at or above it
    number at least `kept` (or hold at least `share` of the mass), found by bisection over the scores' ordered
    32-bit keys, 32 steps of one compare and one row sum each. With the mass, the count is the blocks above t
    plus as many tied at t as reach the share."""
    key = _ordered_key(s)
    lo = tl.min(key, 1).to(tl.int64)  # every block is at or above the row's lowest score: it qualifies
    hi = tl.max(key, 1).to(tl.int64)
    if BY_MASS:
        top = tl.max(s, 1)
        top = tl.where(top > float("-inf"), top, 0.0)
        p = tl.where(s > float("-inf"), tl.exp(s - top[:, None]), 0.0)
        total = tl.sum(p, 1)
        target = share * total
    for _ in tl.static_range(32):
        mid = lo + (hi - lo + 1) // 2  # in [lo, hi]: an int32 again
        at_or_above = key >= mid.to(tl.int32)[:, None]
        if BY_MASS:
            qualifies = tl.sum(tl.where(at_or_above, p, 0.0), 1) >= target
        else:
            qualifies = tl.sum(at_or_above.to(tl.int32), 1) >= kept
        lo = tl.where(qualifies, mid, lo)
        hi = tl.where(qualifies, hi, mid - 1)
    t_key = lo.to(tl.int32)
    threshold = _ordered_key(t_key).to(tl.float32, bitcast=True)
    if BY_MASS:
        above = key > t_key[:, None]
        n_above = tl.sum(above.to(tl.int32), 1)
        n_tied = tl.sum((key == t_key[:, None]).to(tl.int32), 1)
        mass_above = tl.sum(tl.where(above, p, 0.0), 1)
        p_t = tl.where(threshold > float("-inf"), tl.exp(threshold - top), 0.0)
        needed = tl.where(
            p_t > 0, tl.ceil((target - mass_above) / tl.maximum(p_t, 1e-30)), n_tied.to(tl.float32)
        )
        needed = tl.minimum(tl.maximum(needed, 1.0), n_tied.to(tl.float32)).to(tl.int32)
        n_keep = tl.where(total > 0, tl.minimum(n_above + needed, KBN), 1)
    else:
        n_keep = tl.zeros([R], tl.int32) + kept
    return n_keep, threshold


@triton.jit
def _select_rows(s, rows, bh, QBN, KBN, kept, share, COUNT, INDICES, R: tl.constexpr, KBN_PAD: tl.constexpr,
                 BY_MASS: tl.constexpr, SEARCH: tl.constexpr):  # fmt: skip
    """The kept key blocks of R query blocks `rows` from their scores s [R, KBN_PAD] (-inf past KBN): their count,
    and each row's permutation of the key blocks with the kept ones first, ascending, then the rest. Blocks above
    the row's threshold are kept, and ties at it by lowest index."""
    kb = tl.arange(0, KBN_PAD)
    if SEARCH:
        n_keep, threshold = _searched_threshold(s, KBN, kept, share, R, BY_MASS)
    else:
        n_keep, threshold = _sorted_threshold(s, KBN, kept, share, R, KBN_PAD, BY_MASS)
    real = (kb < KBN)[None, :]
    above = (s > threshold[:, None]) & real
    tied = (s == threshold[:, None]) & real
    room = n_keep - tl.sum(above.to(tl.int32), 1)
    chosen = above | (tied & (tl.cumsum(tied.to(tl.int32), 1) <= room[:, None]))
    picked = chosen.to(tl.int32)
    slot = tl.where(chosen, tl.cumsum(picked, 1) - 1, n_keep[:, None] + tl.cumsum(1 - picked, 1) - 1)
    kbs = tl.zeros([R, KBN_PAD], tl.int32) + kb[None, :]
    tl.store(INDICES + (bh * QBN + rows[:, None]) * KBN + slot, kbs, mask=(rows < QBN)[:, None] & real)
    tl.store(COUNT + bh * QBN + rows, n_keep, mask=rows < QBN)


@triton.jit
def select_blocks_kernel(
    QM, KM, SCRATCH, COUNT, INDICES, VALID,
    N, H, QBN, KBN, kept, share, scale,
    KV_BLOCK: tl.constexpr, QT: tl.constexpr, CHUNK: tl.constexpr, KBN_PAD: tl.constexpr,
    BLOCK_D: tl.constexpr, HAS_VALID: tl.constexpr, BY_MASS: tl.constexpr, SEL_ROWS: tl.constexpr,
    SEARCH: tl.constexpr = False,
):  # fmt: skip
    """SCRATCH [b * nh, QBn, KBN_PAD] float32 (used only when KBN_PAD > CHUNK); COUNT [b * nh, QBn] int32;
    INDICES [b * nh, QBn, KBn] int32. `kept`: the count for every row (keep); with BY_MASS, each row's count is
    the fewest blocks whose softmax mass reaches `share` (cdf). Rows are selected SEL_ROWS at a time (all QT at
    once where every key block fits one product)."""
    pid_q = tl.program_id(0)
    pid_bh = tl.program_id(1)
    bz = pid_bh // H
    limit = N
    if HAS_VALID:
        limit = tl.minimum(tl.maximum(tl.load(VALID + bz).to(tl.int32), 0), N)
    rows = pid_q * QT + tl.arange(0, QT)
    bh = pid_bh.to(tl.int64)
    kb = tl.arange(0, KBN_PAD)
    if KBN_PAD == CHUNK:
        # Every key block in one product: selected in registers, no round trip through memory.
        s = _pooled_scores(QM, KM, bh, rows, kb, QBN, KBN, limit, scale, KV_BLOCK, BLOCK_D)
        _select_rows(s, rows, bh, QBN, KBN, kept, share, COUNT, INDICES, QT, KBN_PAD, BY_MASS, False)
    else:
        scratch = SCRATCH + (bh * QBN + rows[:, None]) * KBN_PAD
        for c0 in tl.range(0, KBN_PAD, CHUNK):
            part = c0 + tl.arange(0, CHUNK)
            scores = _pooled_scores(QM, KM, bh, rows, part, QBN, KBN, limit, scale, KV_BLOCK, BLOCK_D)
            tl.store(scratch + part[None, :], scores, mask=(rows < QBN)[:, None])
        tl.debug_barrier()
        for r0 in tl.range(0, QT, SEL_ROWS):
            sub = pid_q * QT + r0 + tl.arange(0, SEL_ROWS)
            s = tl.load(
                SCRATCH + (bh * QBN + sub[:, None]) * KBN_PAD + kb[None, :],
                mask=(sub < QBN)[:, None], other=float("-inf"),
            )  # fmt: skip
            _select_rows(
                s, sub, bh, QBN, KBN, kept, share, COUNT, INDICES, SEL_ROWS, KBN_PAD, BY_MASS, SEARCH
            )


def _chunk(kbn_pad: int, block_d: int) -> int:
    return min(128 if block_d <= 64 else 64, kbn_pad)


@dataclass(frozen=True)
class Tiles:
    """One estimate's launch settings. Measured on the H200 (`benchmarks/estimator_tune.py`, sixteenth session,
    GPU time from CUDA graphs): pooling 128 rows per load with 2 warps took SD3.5's q and k (80 MB) in 22.5 us,
    3.5 TB/s (64 rows and 4 warps: 35.2; more warps cost the row sum's exchange between warps), Mochi's in 133 us
    (was 328); the one product's selection with 16 query blocks and 4 warps 10.4 us at SD3.5's size (32: 12.2);
    the scratch rows' with 32 query blocks and 8 warps, by bisection, 519 us at Mochi's (sorted: 656; 16 query
    blocks and 4 warps, sorted: 811) and 1727 us with its 16-key blocks (sorted: 5436)."""

    pool_grid: tuple[int, int]
    select_grid: tuple[int, int]
    qt: int  # query blocks per selection program (tl.dot's M: at least 16)
    chunk: int  # key blocks per product
    kbn_pad: int  # key blocks, a power of two
    block_d: int
    rows: int  # rows per pooling load
    select_rows: int  # rows selected at once
    search: bool  # the threshold by bisection, not by sorting the rows (`_searched_threshold`)
    pool_warps: int
    select_warps: int


def grid_and_tiles(qbn: int, kbn: int, b_nh: int, dh: int) -> Tiles:
    """The launch settings of one estimate: every key block in one product up to 128 of them (64 at dh > 64),
    all QT rows selected together then; past that, through the scratch rows, as many rows at once as keep the
    tile near 2048 values. Pooling loads stop at 16384 values (dh 256: 64 rows), which keeps them in registers."""
    kbn_pad = triton.next_power_of_2(max(kbn, 16))
    block_d = triton.next_power_of_2(max(dh, 16))
    chunk = _chunk(kbn_pad, block_d)
    single = kbn_pad == chunk
    qt = 16 if single else 32
    return Tiles(
        pool_grid=(qbn + kbn, b_nh),
        select_grid=(triton.cdiv(qbn, qt), b_nh),
        qt=qt,
        chunk=chunk,
        kbn_pad=kbn_pad,
        block_d=block_d,
        rows=min(128, max(16, 16384 // block_d)),
        select_rows=qt if single else max(1, 2048 // kbn_pad),  # a tile of ~2048 values
        search=not single,
        pool_warps=2,
        select_warps=4 if single else 8,
    )
