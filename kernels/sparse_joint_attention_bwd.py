"""Backward Triton kernels of block-sparse joint attention (FlashAttention-2 style, no atomics).

The dense backward's preprocess kernel (delta = rowsum(dO * O) - dlse, m = lse * log2 e) runs unchanged, then:
- `sparse_joint_attention_bwd_dkdv_kernel`, one program per key tile: a text key tile walks every query row of
  both sets (the dense kernel's `_dkdv_over_queries`); a spatial key tile (inside key block kb) walks the query
  blocks that list kb (the transposed lists: full, or partial with the bits slot), then every text query row;
- `sparse_joint_attention_bwd_dq_kernel`, one program per query tile: a spatial tile walks its full and partial
  key blocks, then every valid text key; a text tile walks every valid key of both sets (dense `_dq_over_keys`).
Scores are recomputed from the forward's lse: p = exp2(q.k * scale * log2 e - m); a row with lse = -inf has
m = +inf, so p = 0.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .joint_attention_bwd import _dkdv_over_queries, _dq_over_keys, _dq_step
from .joint_attention_fwd import load_tile, valid_length
from .sparse_joint_attention_fwd import list_tiles, load_list_tile, partial_tile_mask

# fmt: off


@triton.jit
def _dq_block_list(
    dq, q, do, m, delta, k_base, v_base, n_end, stride_ks, stride_kd, stride_vs, stride_vd, qk_scale,
    num_ptr, idx_ptr, stride_idx, bits_ptr, stride_bp, stride_br, stride_bw, r_in,
    PARTIAL: tl.constexpr, KV_BLOCK: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    count = tl.load(num_ptr)
    if KV_BLOCK < BLOCK_N:
        # Key blocks smaller than the tile (16 or 32 keys): gathered, BLOCK_N / KV_BLOCK listed blocks per tile,
        # as the forward gathers them (one flat loop over the list's tiles).
        for t in tl.range(0, list_tiles(count, KV_BLOCK, BLOCK_N)):
            k, v, allowed = load_list_tile(t, count, idx_ptr, stride_idx, n_end, k_base, v_base, stride_ks,
                                           stride_kd, stride_vs, stride_vd, bits_ptr, stride_bp, stride_br,
                                           stride_bw, r_in, PARTIAL, KV_BLOCK, BLOCK_N, BLOCK_D, HEAD_DIM)
            dq = _dq_masked_step(dq, q, do, m, delta, k, v, allowed, qk_scale, DOT_PRECISION)
        return dq
    for i in range(0, count):
        kb = tl.load(idx_ptr + i * stride_idx)
        for sub in range(0, KV_BLOCK // BLOCK_N):
            key0 = kb * KV_BLOCK + sub * BLOCK_N
            fast = key0 + BLOCK_N <= n_end  # a full-block tile inside the valid keys: the dense unmasked step
            if PARTIAL:
                fast = key0 < 0  # never (same type as above)
            if fast:
                dq = _dq_step(dq, q, do, m, delta, k_base, v_base, key0, n_end, stride_ks, stride_kd, stride_vs,
                              stride_vd, qk_scale, BLOCK_N, BLOCK_D, HEAD_DIM, False, DOT_PRECISION)
            elif key0 < n_end:
                k = load_tile(k_base, None, 0, 0, key0, n_end, stride_ks, stride_kd, BLOCK_N, BLOCK_D, HEAD_DIM, True, False)
                v = load_tile(v_base, None, 0, 0, key0, n_end, stride_vs, stride_vd, BLOCK_N, BLOCK_D, HEAD_DIM, True, False)
                allowed = (key0 + tl.arange(0, BLOCK_N) < n_end)[None, :] & (r_in >= 0)[:, None]
                if PARTIAL:
                    c_in = sub * BLOCK_N + tl.arange(0, BLOCK_N)
                    allowed = allowed & partial_tile_mask(bits_ptr + i * stride_bp, r_in, c_in, stride_br, stride_bw)
                dq = _dq_masked_step(dq, q, do, m, delta, k, v, allowed, qk_scale, DOT_PRECISION)
    return dq


@triton.jit
def _dq_masked_step(dq, q, do, m, delta, k, v, allowed, qk_scale, DOT_PRECISION: tl.constexpr):
    """dq += dS K over one key tile, counting only the `allowed` [BLOCK_M, BLOCK_N] scores."""
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
    p = tl.where(allowed, tl.math.exp2(s * qk_scale - m[:, None]), 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
    ds = p * (dp - delta[:, None])
    return tl.dot(ds.to(k.dtype), k, dq, input_precision=DOT_PRECISION)


@triton.jit
def sparse_joint_attention_bwd_dq_kernel(
    Q, K, V, JQ, JK, JV, DOut, DJointOut, M, DELTA, DQ, DJQ,
    NUM, IDX, FNUM, FIDX, BITS,
    N_LEN, L_LEN,
    stride_qb, stride_qh, stride_qs, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_jqb, stride_jqh, stride_jqs, stride_jqd,
    stride_jkb, stride_jkh, stride_jks, stride_jkd,
    stride_jvb, stride_jvh, stride_jvs, stride_jvd,
    stride_dob, stride_doh, stride_dos, stride_dod,
    stride_djob, stride_djoh, stride_djos, stride_djod,
    stride_dqb, stride_dqh, stride_dqs, stride_dqd,
    stride_djqb, stride_djqh, stride_djqs, stride_djqd,
    stride_nb, stride_nh, stride_nq,
    stride_ib, stride_ih, stride_iq, stride_ik,
    stride_fnb, stride_fnh, stride_fnq,
    stride_fib, stride_fih, stride_fiq, stride_fik,
    stride_bb, stride_bh, stride_bq, stride_bp, stride_br, stride_bw,
    scale, qk_scale,
    N, L, H,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    Q_BLOCK: tl.constexpr, KV_BLOCK: tl.constexpr,
    HAS_N_LEN: tl.constexpr, HAS_L_LEN: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    bz = pid_bh // H
    h = pid_bh % H
    bz64 = bz.to(tl.int64)
    h64 = h.to(tl.int64)
    n_end = valid_length(N_LEN, bz, N, HAS_N_LEN)
    l_end = valid_length(L_LEN, bz, L, HAS_L_LEN)
    k_base = K + bz64 * stride_kb + h64 * stride_kh
    v_base = V + bz64 * stride_vb + h64 * stride_vh
    spatial_blocks = tl.cdiv(N, BLOCK_M)
    is_spatial = pid_m < spatial_blocks
    if is_spatial:
        row0 = pid_m * BLOCK_M
        row_end = N
        lse_row0 = row0
        q = load_tile(Q + bz64 * stride_qb + h64 * stride_qh, None, 0, 0, row0, N, stride_qs, stride_qd,
                      BLOCK_M, BLOCK_D, HEAD_DIM, True, False)
        do = load_tile(DOut + bz64 * stride_dob + h64 * stride_doh, None, 0, 0, row0, N, stride_dos, stride_dod,
                       BLOCK_M, BLOCK_D, HEAD_DIM, True, False)
        dq_base = DQ + bz64 * stride_dqb + h64 * stride_dqh
        dq_ss = stride_dqs
        dq_sd = stride_dqd
    else:
        row0 = (pid_m - spatial_blocks) * BLOCK_M
        row_end = L
        lse_row0 = N + row0
        q = load_tile(JQ + bz64 * stride_jqb + h64 * stride_jqh, None, 0, 0, row0, L, stride_jqs, stride_jqd,
                      BLOCK_M, BLOCK_D, HEAD_DIM, True, False)
        do = load_tile(DJointOut + bz64 * stride_djob + h64 * stride_djoh, None, 0, 0, row0, L, stride_djos,
                       stride_djod, BLOCK_M, BLOCK_D, HEAD_DIM, True, False)
        dq_base = DJQ + bz64 * stride_djqb + h64 * stride_djqh
        dq_ss = stride_djqs
        dq_sd = stride_djqd
    rows = row0 + tl.arange(0, BLOCK_M)
    row_ok = rows < row_end
    stat_ptr = (bz64 * H + h64) * (N + L) + lse_row0 - row0 + rows
    m = tl.load(M + stat_ptr, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + stat_ptr, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    if is_spatial:
        qb = row0 // Q_BLOCK
        r_in = row0 - qb * Q_BLOCK + tl.arange(0, BLOCK_M)
        dq = _dq_block_list(
            dq, q, do, m, delta, k_base, v_base, n_end, stride_ks, stride_kd, stride_vs, stride_vd, qk_scale,
            FNUM + bz64 * stride_fnb + h64 * stride_fnh + qb * stride_fnq,
            FIDX + bz64 * stride_fib + h64 * stride_fih + qb * stride_fiq, stride_fik,
            BITS, 0, 0, 0, r_in, False, KV_BLOCK, BLOCK_N, BLOCK_D, HEAD_DIM, DOT_PRECISION,
        )
        dq = _dq_block_list(
            dq, q, do, m, delta, k_base, v_base, n_end, stride_ks, stride_kd, stride_vs, stride_vd, qk_scale,
            NUM + bz64 * stride_nb + h64 * stride_nh + qb * stride_nq,
            IDX + bz64 * stride_ib + h64 * stride_ih + qb * stride_iq, stride_ik,
            BITS + bz64 * stride_bb + h64 * stride_bh + qb * stride_bq, stride_bp, stride_br, stride_bw, r_in,
            True, KV_BLOCK, BLOCK_N, BLOCK_D, HEAD_DIM, DOT_PRECISION,
        )
    else:
        dq = _dq_over_keys(dq, q, do, m, delta, k_base, v_base, n_end, stride_ks, stride_kd, stride_vs, stride_vd,
                           qk_scale, BLOCK_N, BLOCK_D, HEAD_DIM, DOT_PRECISION)
    dq = _dq_over_keys(dq, q, do, m, delta, JK + bz64 * stride_jkb + h64 * stride_jkh,
                       JV + bz64 * stride_jvb + h64 * stride_jvh, l_end, stride_jks, stride_jkd, stride_jvs,
                       stride_jvd, qk_scale, BLOCK_N, BLOCK_D, HEAD_DIM, DOT_PRECISION)
    cols = tl.arange(0, BLOCK_D)
    tl.store(dq_base + rows[:, None] * dq_ss + cols[None, :] * dq_sd, (dq * scale).to(DQ.dtype.element_ty),
             mask=row_ok[:, None] & (cols[None, :] < HEAD_DIM))


@triton.jit
def sparse_joint_attention_bwd_dkdv_kernel(
    Q, K, V, JQ, JK, JV, DOut, DJointOut, M, DELTA, DK, DV, DJK, DJV,
    TNUM, TQB, TSLOT, BITS,
    N_LEN, L_LEN,
    stride_qb, stride_qh, stride_qs, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_jqb, stride_jqh, stride_jqs, stride_jqd,
    stride_jkb, stride_jkh, stride_jks, stride_jkd,
    stride_jvb, stride_jvh, stride_jvs, stride_jvd,
    stride_dob, stride_doh, stride_dos, stride_dod,
    stride_djob, stride_djoh, stride_djos, stride_djod,
    stride_dkb, stride_dkh, stride_dks, stride_dkd,
    stride_dvb, stride_dvh, stride_dvs, stride_dvd,
    stride_djkb, stride_djkh, stride_djks, stride_djkd,
    stride_djvb, stride_djvh, stride_djvs, stride_djvd,
    stride_tnb, stride_tnh, stride_tnk,
    stride_tqb, stride_tqh, stride_tqk, stride_tqq,
    stride_tsb, stride_tsh, stride_tsk, stride_tsq,
    stride_bb, stride_bh, stride_bq, stride_bp, stride_br, stride_bw,
    scale, qk_scale,
    N, L, H,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    Q_BLOCK: tl.constexpr, KV_BLOCK: tl.constexpr,
    HAS_N_LEN: tl.constexpr, HAS_L_LEN: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    bz = pid_bh // H
    h = pid_bh % H
    bz64 = bz.to(tl.int64)
    h64 = h.to(tl.int64)
    spatial_blocks = tl.cdiv(N, BLOCK_N)
    is_spatial = pid_n < spatial_blocks
    if is_spatial:
        key0 = pid_n * BLOCK_N
        key_size = N
        key_end = valid_length(N_LEN, bz, N, HAS_N_LEN)
        k_base = K + bz64 * stride_kb + h64 * stride_kh
        v_base = V + bz64 * stride_vb + h64 * stride_vh
        k_ss = stride_ks
        k_sd = stride_kd
        v_ss = stride_vs
        v_sd = stride_vd
        dk_base = DK + bz64 * stride_dkb + h64 * stride_dkh
        dv_base = DV + bz64 * stride_dvb + h64 * stride_dvh
        dk_ss = stride_dks
        dk_sd = stride_dkd
        dv_ss = stride_dvs
        dv_sd = stride_dvd
    else:
        key0 = (pid_n - spatial_blocks) * BLOCK_N
        key_size = L
        key_end = valid_length(L_LEN, bz, L, HAS_L_LEN)
        k_base = JK + bz64 * stride_jkb + h64 * stride_jkh
        v_base = JV + bz64 * stride_jvb + h64 * stride_jvh
        k_ss = stride_jks
        k_sd = stride_jkd
        v_ss = stride_jvs
        v_sd = stride_jvd
        dk_base = DJK + bz64 * stride_djkb + h64 * stride_djkh
        dv_base = DJV + bz64 * stride_djvb + h64 * stride_djvh
        dk_ss = stride_djks
        dk_sd = stride_djkd
        dv_ss = stride_djvs
        dv_sd = stride_djvd

    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    if key0 < key_end:
        k = load_tile(k_base, None, 0, 0, key0, key_end, k_ss, k_sd, BLOCK_N, BLOCK_D, HEAD_DIM, True, False)
        v = load_tile(v_base, None, 0, 0, key0, key_end, v_ss, v_sd, BLOCK_N, BLOCK_D, HEAD_DIM, True, False)
        m_row = M + (bz64 * H + h64) * (N + L)
        d_row = DELTA + (bz64 * H + h64) * (N + L)
        q_base = Q + bz64 * stride_qb + h64 * stride_qh
        do_base = DOut + bz64 * stride_dob + h64 * stride_doh
        jq_base = JQ + bz64 * stride_jqb + h64 * stride_jqh
        djo_base = DJointOut + bz64 * stride_djob + h64 * stride_djoh
        keys = key0 + tl.arange(0, BLOCK_N)
        if is_spatial:
            kb = key0 // KV_BLOCK
            c_in = key0 - kb * KV_BLOCK + tl.arange(0, BLOCK_N)
            count = tl.load(TNUM + bz64 * stride_tnb + h64 * stride_tnh + kb * stride_tnk)
            qb_ptr = TQB + bz64 * stride_tqb + h64 * stride_tqh + kb * stride_tqk
            slot_ptr = TSLOT + bz64 * stride_tsb + h64 * stride_tsh + kb * stride_tsk
            for j in range(0, count):
                qb = tl.load(qb_ptr + j * stride_tqq)
                slot = tl.load(slot_ptr + j * stride_tsq)
                bits_ptr = BITS + bz64 * stride_bb + h64 * stride_bh + qb * stride_bq + tl.maximum(slot, 0) * stride_bp
                for sub in range(0, Q_BLOCK // BLOCK_M):
                    row0 = qb * Q_BLOCK + sub * BLOCK_M
                    if row0 < N:
                        rows = row0 + tl.arange(0, BLOCK_M)
                        r_in = sub * BLOCK_M + tl.arange(0, BLOCK_M)
                        q = load_tile(q_base, None, 0, 0, row0, N, stride_qs, stride_qd, BLOCK_M, BLOCK_D, HEAD_DIM,
                                      True, False)
                        do = load_tile(do_base, None, 0, 0, row0, N, stride_dos, stride_dod, BLOCK_M, BLOCK_D,
                                       HEAD_DIM, True, False)
                        m = tl.load(m_row + rows, mask=rows < N, other=float("inf"))
                        delta = tl.load(d_row + rows, mask=rows < N, other=0.0)
                        s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION)
                        # Rows past N have m = +inf, so p = 0 there without a mask.
                        p_t = tl.math.exp2(s_t * qk_scale - m[None, :])
                        if slot >= 0:
                            allowed = (keys < key_end)[:, None] & tl.trans(
                                partial_tile_mask(bits_ptr, r_in, c_in, stride_br, stride_bw))
                            p_t = tl.where(allowed, p_t, 0.0)
                        elif key0 + BLOCK_N > key_end:
                            p_t = tl.where((keys < key_end)[:, None], p_t, 0.0)
                        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=DOT_PRECISION)
                        dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
                        ds_t = p_t * (dp_t - delta[None, :])
                        dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=DOT_PRECISION)
        else:
            dk, dv = _dkdv_over_queries(dk, dv, k, v, q_base, do_base, m_row, d_row, N,
                                        stride_qs, stride_qd, stride_dos, stride_dod, key0, key_end, qk_scale,
                                        BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, True, DOT_PRECISION)
        dk, dv = _dkdv_over_queries(dk, dv, k, v, jq_base, djo_base, m_row + N, d_row + N, L,
                                    stride_jqs, stride_jqd, stride_djos, stride_djod, key0, key_end, qk_scale,
                                    BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, True, DOT_PRECISION)
    keys = key0 + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_D)
    store_mask = (keys[:, None] < key_size) & (cols[None, :] < HEAD_DIM)
    tl.store(dk_base + keys[:, None] * dk_ss + cols[None, :] * dk_sd, (dk * scale).to(DK.dtype.element_ty),
             mask=store_mask)
    tl.store(dv_base + keys[:, None] * dv_ss + cols[None, :] * dv_sd, dv.to(DV.dtype.element_ty), mask=store_mask)
# fmt: on
