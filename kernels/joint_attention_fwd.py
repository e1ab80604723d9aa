"""Forward Triton kernel of joint attention: two token sets read in place, padding from valid lengths.

Entry point: `joint_attention_fwd_kernel`, launched by `jointattn.runtime.triton_runtime.launch_forward`
on a grid of (query blocks of the spatial set + query blocks of the joint set, b * nh).

Internals, one role per function (the layout of Triton's fused-attention tutorial):
- `load_tile`: loads one [BLOCK_ROWS, BLOCK_D] tile of q, k or v, through a TMA tensor descriptor or
  through pointers with arbitrary strides. It is the one place q/k tiles are read, so a prologue (RoPE)
  can be added there later.
- `softmax_step`: one key block of the online softmax (FlashAttention-2), in base 2 with the scale
  pre-multiplied by log2(e).
- `attend_token_set`: walks the valid keys of one token set: full blocks without any mask (their count comes
  from the valid length, so blocks past it are never loaded), then the one boundary block, masked. No padded
  key row reaches the products, so whatever padding holds (NaN from torch.empty) cannot reach the result.
- `joint_attention_fwd_kernel`: picks the query tile (spatial rows, then joint rows), walks the spatial keys,
  then the joint keys (no concatenation: each loop reads its own tensor), and writes out / joint_out / lse.

A row that sees no valid key at all gets out = 0 and lse = -inf, as the exact reference does; a NaN in a valid
key, query or value row reaches every output it touches, as in SDPA.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453

# Kernel code keeps Triton's argument groups on shared lines (tensors, strides, constexprs): readable in
# the tutorial's way, which the formatter would explode one argument per line.
# fmt: off


@triton.jit
def load_tile(
    base,
    desc,
    bz,
    h,
    row0,
    row_end,
    stride_s,
    stride_d,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    MASK_ROWS: tl.constexpr,
    USE_TMA: tl.constexpr,
):
    """Rows [row0, row0 + BLOCK_ROWS) of one (batch, head) slice; rows >= row_end and columns >= HEAD_DIM
    read as zero. `base` already points at the slice; `desc` is a [b, nh, S, dh] descriptor (TMA)."""
    if USE_TMA:
        # The descriptor's own bounds zero-fill rows before 0 and past S; the caller never asks for rows in
        # [row_end, S) (padding) in a key block.
        tile = desc.load([bz, h, row0, 0]).reshape([BLOCK_ROWS, BLOCK_D])
    else:
        rows = row0 + tl.arange(0, BLOCK_ROWS)
        cols = tl.arange(0, BLOCK_D)
        ptrs = base + rows[:, None] * stride_s + cols[None, :] * stride_d
        if MASK_ROWS:
            if HEAD_DIM != BLOCK_D:
                tile = tl.load(ptrs, mask=(rows[:, None] < row_end) & (cols[None, :] < HEAD_DIM), other=0.0)
            else:
                tile = tl.load(ptrs, mask=rows[:, None] < row_end, other=0.0)
        else:
            if HEAD_DIM != BLOCK_D:
                tile = tl.load(ptrs, mask=cols[None, :] < HEAD_DIM, other=0.0)
            else:
                tile = tl.load(ptrs)
    return tile


@triton.jit
def softmax_step(
    acc,
    l_i,
    m_i,
    q,
    k,
    v,
    key0,
    key_lo,
    key_hi,
    qk_scale,
    BLOCK_N: tl.constexpr,
    MASK_KEYS: tl.constexpr,
    POSITIVE_SCALE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Folds one key block (keys key0 + [0, BLOCK_N)) into (acc, l_i, m_i); with MASK_KEYS only the keys in
    [key_lo, key_hi) count. Scores are in base 2: s = q.k * scale * log2(e)."""
    qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
    if MASK_KEYS:
        keys = key0 + tl.arange(0, BLOCK_N)
        key_valid = (keys >= key_lo) & (keys < key_hi)
    if POSITIVE_SCALE:
        # max(qk) * scale == max(qk * scale) for scale > 0: one multiply per row instead of per score, and the
        # exponent's argument becomes a single fused multiply-add.
        if MASK_KEYS:
            qk = tl.where(key_valid[None, :], qk, float("-inf"))
        m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        s = qk * qk_scale - m_ij[:, None]
    else:
        # scale <= 0: scale first (a masked -inf times 0 or a negative scale would be NaN or +inf).
        s = qk * qk_scale
        if MASK_KEYS:
            s = tl.where(key_valid[None, :], s, float("-inf"))
        m_ij = tl.maximum(m_i, tl.max(s, 1))
        s = s - m_ij[:, None]
    p = tl.math.exp2(s)
    # m_i = -inf before the first block: alpha = 0 rescales the empty accumulator. Every block reaching here
    # holds at least one valid key, so m_ij is finite.
    alpha = tl.math.exp2(m_i - m_ij)
    l_ij = tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
    l_i = l_i * alpha + l_ij
    return acc, l_i, m_ij


@triton.jit
def attend_token_set(
    acc,
    l_i,
    m_i,
    q,
    k_base,
    v_base,
    k_desc,
    v_desc,
    bz,
    h,
    key_end,
    stride_ks,
    stride_kd,
    stride_vs,
    stride_vd,
    qk_scale,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    POSITIVE_SCALE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_TMA: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
):
    """Attends q to keys [0, key_end) of one token set: unmasked full blocks, then the boundary block."""
    full_end = (key_end // BLOCK_N) * BLOCK_N
    for key0 in tl.range(0, full_end, BLOCK_N, warp_specialize=WARP_SPECIALIZE):
        key0 = tl.multiple_of(key0, BLOCK_N)
        k = load_tile(k_base, k_desc, bz, h, key0, key_end, stride_ks, stride_kd, BLOCK_N, BLOCK_D, HEAD_DIM, False, USE_TMA)
        v = load_tile(v_base, v_desc, bz, h, key0, key_end, stride_vs, stride_vd, BLOCK_N, BLOCK_D, HEAD_DIM, False, USE_TMA)
        acc, l_i, m_i = softmax_step(
            acc, l_i, m_i, q, k, v, key0, key0, key_end, qk_scale, BLOCK_N, False, POSITIVE_SCALE, DOT_PRECISION
        )
    if full_end < key_end:
        # Pointer loads read the boundary block from full_end and mask its padded rows to zero. A TMA box
        # cannot mask rows, so it ends at key_end instead (rows before 0 read as zero): no padded row is loaded,
        # since one holding NaN would survive P.V as 0 * NaN. Its keys before full_end were already counted.
        if USE_TMA:
            edge0 = key_end - BLOCK_N
        else:
            edge0 = full_end
        k = load_tile(k_base, k_desc, bz, h, edge0, key_end, stride_ks, stride_kd, BLOCK_N, BLOCK_D, HEAD_DIM, True, USE_TMA)
        v = load_tile(v_base, v_desc, bz, h, edge0, key_end, stride_vs, stride_vd, BLOCK_N, BLOCK_D, HEAD_DIM, True, USE_TMA)
        acc, l_i, m_i = softmax_step(
            acc, l_i, m_i, q, k, v, edge0, full_end, key_end, qk_scale, BLOCK_N, True, POSITIVE_SCALE, DOT_PRECISION
        )
    return acc, l_i, m_i


@triton.jit
def valid_length(LENGTHS, bz, size, HAS_LENGTHS: tl.constexpr):
    """The valid length of batch `bz`: LENGTHS[bz] clamped to [0, size], or `size` without a lengths tensor."""
    if HAS_LENGTHS:
        n = tl.load(LENGTHS + bz).to(tl.int32)
        n = tl.minimum(tl.maximum(n, 0), size)
    else:
        n = size
    return n


@triton.jit
def store_tile(base, desc, bz, h, row0, row_end, stride_s, stride_d, tile, BLOCK_ROWS: tl.constexpr,
               BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr, USE_TMA: tl.constexpr):
    """Writes rows [row0, min(row0 + BLOCK_ROWS, row_end)) and columns [0, HEAD_DIM) of one slice."""
    if USE_TMA:
        desc.store([bz, h, row0, 0], tile.reshape([1, 1, BLOCK_ROWS, BLOCK_D]))
    else:
        rows = row0 + tl.arange(0, BLOCK_ROWS)
        cols = tl.arange(0, BLOCK_D)
        ptrs = base + rows[:, None] * stride_s + cols[None, :] * stride_d
        tl.store(ptrs, tile, mask=(rows[:, None] < row_end) & (cols[None, :] < HEAD_DIM))


@triton.jit
def joint_attention_fwd_kernel(
    Q, K, V, JQ, JK, JV, Out, JointOut, LSE,
    q_desc, k_desc, v_desc, jq_desc, jk_desc, jv_desc, o_desc, jo_desc,
    N_LEN, L_LEN,
    stride_qb, stride_qh, stride_qs, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_jqb, stride_jqh, stride_jqs, stride_jqd,
    stride_jkb, stride_jkh, stride_jks, stride_jkd,
    stride_jvb, stride_jvh, stride_jvs, stride_jvd,
    stride_ob, stride_oh, stride_os, stride_od,
    stride_job, stride_joh, stride_jos, stride_jod,
    stride_lb, stride_lh, stride_ls,
    qk_scale,
    N, L, H,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HAS_N_LEN: tl.constexpr,
    HAS_L_LEN: tl.constexpr,
    POSITIVE_SCALE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_TMA: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    bz = pid_bh // H
    h = pid_bh % H
    bz64 = bz.to(tl.int64)
    h64 = h.to(tl.int64)
    n_end = valid_length(N_LEN, bz, N, HAS_N_LEN)
    l_end = valid_length(L_LEN, bz, L, HAS_L_LEN)

    # Query tile: the first cdiv(N, BLOCK_M) programs take spatial rows, the rest joint rows.
    spatial_blocks = tl.cdiv(N, BLOCK_M)
    is_spatial = pid_m < spatial_blocks
    if is_spatial:
        row0 = pid_m * BLOCK_M
        q = load_tile(Q + bz64 * stride_qb + h64 * stride_qh, q_desc, bz, h, row0, N, stride_qs, stride_qd,
                      BLOCK_M, BLOCK_D, HEAD_DIM, True, USE_TMA)
    else:
        row0 = (pid_m - spatial_blocks) * BLOCK_M
        q = load_tile(JQ + bz64 * stride_jqb + h64 * stride_jqh, jq_desc, bz, h, row0, L, stride_jqs, stride_jqd,
                      BLOCK_M, BLOCK_D, HEAD_DIM, True, USE_TMA)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    # Spatial keys, then joint keys: the N|L boundary is simply the end of the first loop.
    acc, l_i, m_i = attend_token_set(
        acc, l_i, m_i, q,
        K + bz64 * stride_kb + h64 * stride_kh, V + bz64 * stride_vb + h64 * stride_vh, k_desc, v_desc, bz, h,
        n_end, stride_ks, stride_kd, stride_vs, stride_vd, qk_scale,
        BLOCK_N, BLOCK_D, HEAD_DIM, POSITIVE_SCALE, DOT_PRECISION, USE_TMA, WARP_SPECIALIZE,
    )
    acc, l_i, m_i = attend_token_set(
        acc, l_i, m_i, q,
        JK + bz64 * stride_jkb + h64 * stride_jkh, JV + bz64 * stride_jvb + h64 * stride_jvh, jk_desc, jv_desc,
        bz, h, l_end, stride_jks, stride_jkd, stride_jvs, stride_jvd, qk_scale,
        BLOCK_N, BLOCK_D, HEAD_DIM, POSITIVE_SCALE, DOT_PRECISION, USE_TMA, WARP_SPECIALIZE,
    )

    # Epilogue: rows with no valid key (l_i = 0) get 0 and -inf instead of 0/0. A NaN score or value makes
    # l_i or acc NaN, and `l_i != 0` keeps that row NaN, as SDPA gives it.
    seen = l_i != 0.0
    inv_l = tl.where(seen, 1.0 / tl.where(seen, l_i, 1.0), 0.0)
    out = (acc * inv_l[:, None]).to(Q.dtype.element_ty)
    lse = tl.where(seen, (m_i + tl.math.log2(tl.where(seen, l_i, 1.0))) * 0.6931471805599453, float("-inf"))
    rows = row0 + tl.arange(0, BLOCK_M)
    lse_base = LSE + bz64 * stride_lb + h64 * stride_lh
    if is_spatial:
        store_tile(Out + bz64 * stride_ob + h64 * stride_oh, o_desc, bz, h, row0, N, stride_os, stride_od, out,
                   BLOCK_M, BLOCK_D, HEAD_DIM, USE_TMA)
        tl.store(lse_base + rows * stride_ls, lse, mask=rows < N)
    else:
        store_tile(JointOut + bz64 * stride_job + h64 * stride_joh, jo_desc, bz, h, row0, L, stride_jos, stride_jod,
                   out, BLOCK_M, BLOCK_D, HEAD_DIM, USE_TMA)
        tl.store(lse_base + (N + rows) * stride_ls, lse, mask=rows < L)
# fmt: on
