"""Backward Triton kernels of joint attention (FlashAttention-2 style, no atomics, deterministic).

Entry points, launched in this order by `jointattn.runtime.triton_runtime.launch_backward`:
- `joint_attention_bwd_preprocess_kernel`: per query row of both token sets (float32 [b, nh, N+L]):
  delta = rowsum(dO * O) - dlse, and m = lse * log2(e) (+inf where lse = -inf, so p = 0 there). Folding dlse
  into delta is the whole gradient through lse: dS = P * (dP - (rowsum(dO * O) - dlse)).
- `joint_attention_bwd_dkdv_kernel`: one program per key block (spatial blocks, then joint blocks); it walks
  every query row of both sets (every row attends to every valid key) and writes dk, dv. Key blocks past the
  valid length write zeros without loading anything; only the boundary block is masked.
- `joint_attention_bwd_dq_kernel`: one program per query block; it walks the valid keys of the spatial set,
  then of the joint set (the forward's loop structure) and writes dq.

Scores are recomputed in base 2 from the forward's lse: p = exp2(q.k * scale * log2(e) - lse * log2(e)).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .joint_attention_fwd import load_tile, valid_length

# Kernel code keeps Triton's argument groups on shared lines (tensors, strides, constexprs): readable in
# the tutorial's way, which the formatter would explode one argument per line.
# fmt: off


@triton.jit
def joint_attention_bwd_preprocess_kernel(
    Out, JointOut, DOut, DJointOut, LSE, DLSE, DELTA, M,
    stride_ob, stride_oh, stride_os, stride_od,
    stride_job, stride_joh, stride_jos, stride_jod,
    stride_dob, stride_doh, stride_dos, stride_dod,
    stride_djob, stride_djoh, stride_djos, stride_djod,
    stride_lb, stride_lh, stride_ls,
    stride_dlb, stride_dlh, stride_dls,
    N, L, H,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HAS_DLSE: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    bz = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    spatial_blocks = tl.cdiv(N, BLOCK_M)
    if pid_m < spatial_blocks:
        row0 = pid_m * BLOCK_M
        o = load_tile(Out + bz * stride_ob + h * stride_oh, None, 0, 0, row0, N, stride_os, stride_od,
                      BLOCK_M, BLOCK_D, HEAD_DIM, True, False)
        do = load_tile(DOut + bz * stride_dob + h * stride_doh, None, 0, 0, row0, N, stride_dos, stride_dod,
                       BLOCK_M, BLOCK_D, HEAD_DIM, True, False)
        row_end = N
        lse_row0 = row0
    else:
        row0 = (pid_m - spatial_blocks) * BLOCK_M
        o = load_tile(JointOut + bz * stride_job + h * stride_joh, None, 0, 0, row0, L, stride_jos, stride_jod,
                      BLOCK_M, BLOCK_D, HEAD_DIM, True, False)
        do = load_tile(DJointOut + bz * stride_djob + h * stride_djoh, None, 0, 0, row0, L, stride_djos, stride_djod,
                       BLOCK_M, BLOCK_D, HEAD_DIM, True, False)
        row_end = L
        lse_row0 = N + row0
    rows = row0 + tl.arange(0, BLOCK_M)
    row_ok = rows < row_end
    stat_rows = lse_row0 - row0 + rows
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    if HAS_DLSE:
        dlse = tl.load(DLSE + bz * stride_dlb + h * stride_dlh + stat_rows * stride_dls, mask=row_ok, other=0.0)
        delta = delta - dlse.to(tl.float32)
    lse = tl.load(LSE + bz * stride_lb + h * stride_lh + stat_rows * stride_ls, mask=row_ok, other=0.0)
    m = tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)
    stats = (bz * H + h) * (N + L) + stat_rows
    tl.store(DELTA + stats, delta, mask=row_ok)
    tl.store(M + stats, m, mask=row_ok)


@triton.jit
def _dkdv_over_queries(
    dk, dv, k, v,
    q_base, do_base, m_base, d_base,
    row_end, stride_qs, stride_qd, stride_dos, stride_dod,
    key0, key_end, qk_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
    MASK_KEYS: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Accumulates dk, dv of one key block over query rows [0, row_end) of one token set.

    m_base/d_base point at this token set's rows of the (lse * log2 e) and delta rows."""
    full_end = (row_end // BLOCK_M) * BLOCK_M
    for row0 in range(0, full_end, BLOCK_M):
        dk, dv = _dkdv_step(dk, dv, k, v, q_base, do_base, m_base, d_base, row0, row_end,
                            stride_qs, stride_qd, stride_dos, stride_dod, key0, key_end, qk_scale,
                            BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, False, MASK_KEYS, DOT_PRECISION)
    if full_end < row_end:
        dk, dv = _dkdv_step(dk, dv, k, v, q_base, do_base, m_base, d_base, full_end, row_end,
                            stride_qs, stride_qd, stride_dos, stride_dod, key0, key_end, qk_scale,
                            BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, True, MASK_KEYS, DOT_PRECISION)
    return dk, dv


@triton.jit
def _dkdv_step(
    dk, dv, k, v,
    q_base, do_base, m_base, d_base,
    row0, row_end, stride_qs, stride_qd, stride_dos, stride_dod,
    key0, key_end, qk_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr,
    MASK_ROWS: tl.constexpr, MASK_KEYS: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    q = load_tile(q_base, None, 0, 0, row0, row_end, stride_qs, stride_qd, BLOCK_M, BLOCK_D, HEAD_DIM, MASK_ROWS, False)
    do = load_tile(do_base, None, 0, 0, row0, row_end, stride_dos, stride_dod, BLOCK_M, BLOCK_D, HEAD_DIM,
                   MASK_ROWS, False)
    rows = row0 + tl.arange(0, BLOCK_M)
    if MASK_ROWS:
        # +inf makes p = 0 for rows past the tensor; their q and dO already read as zero.
        m = tl.load(m_base + rows, mask=rows < row_end, other=float("inf"))
        delta = tl.load(d_base + rows, mask=rows < row_end, other=0.0)
    else:
        m = tl.load(m_base + rows)
        delta = tl.load(d_base + rows)
    # Transposed scores [BLOCK_N, BLOCK_M]: keys of this program along rows.
    s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION)
    p_t = tl.math.exp2(s_t * qk_scale - m[None, :])
    if MASK_KEYS:
        keys = key0 + tl.arange(0, BLOCK_N)
        p_t = tl.where((keys < key_end)[:, None], p_t, 0.0)
    dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=DOT_PRECISION)
    dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
    ds_t = p_t * (dp_t - delta[None, :])
    dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=DOT_PRECISION)
    return dk, dv


@triton.jit
def joint_attention_bwd_dkdv_kernel(
    Q, K, V, JQ, JK, JV, DOut, DJointOut, M, DELTA, DK, DV, DJK, DJV,
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
    scale, qk_scale,
    N, L, H,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HAS_N_LEN: tl.constexpr,
    HAS_L_LEN: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    bz = pid_bh // H
    h = pid_bh % H
    bz64 = bz.to(tl.int64)
    h64 = h.to(tl.int64)
    spatial_blocks = tl.cdiv(N, BLOCK_N)
    if pid_n < spatial_blocks:
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
    # A key block past the valid length loads nothing: its gradients are zero.
    if key0 < key_end:
        k = load_tile(k_base, None, 0, 0, key0, key_end, k_ss, k_sd, BLOCK_N, BLOCK_D, HEAD_DIM, True, False)
        v = load_tile(v_base, None, 0, 0, key0, key_end, v_ss, v_sd, BLOCK_N, BLOCK_D, HEAD_DIM, True, False)
        m_row = M + (bz64 * H + h64) * (N + L)
        d_row = DELTA + (bz64 * H + h64) * (N + L)
        q_base = Q + bz64 * stride_qb + h64 * stride_qh
        do_base = DOut + bz64 * stride_dob + h64 * stride_doh
        jq_base = JQ + bz64 * stride_jqb + h64 * stride_jqh
        djo_base = DJointOut + bz64 * stride_djob + h64 * stride_djoh
        if key0 + BLOCK_N <= key_end:
            dk, dv = _dkdv_over_queries(dk, dv, k, v, q_base, do_base, m_row, d_row, N,
                                        stride_qs, stride_qd, stride_dos, stride_dod, key0, key_end, qk_scale,
                                        BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, False, DOT_PRECISION)
            dk, dv = _dkdv_over_queries(dk, dv, k, v, jq_base, djo_base, m_row + N, d_row + N, L,
                                        stride_jqs, stride_jqd, stride_djos, stride_djod, key0, key_end, qk_scale,
                                        BLOCK_M, BLOCK_N, BLOCK_D, HEAD_DIM, False, DOT_PRECISION)
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


@triton.jit
def _dq_over_keys(
    dq, q, do, m, delta,
    k_base, v_base, key_end, stride_ks, stride_kd, stride_vs, stride_vd, qk_scale,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Accumulates dq of one query block over keys [0, key_end) of one token set."""
    full_end = (key_end // BLOCK_N) * BLOCK_N
    for key0 in range(0, full_end, BLOCK_N):
        dq = _dq_step(dq, q, do, m, delta, k_base, v_base, key0, key_end, stride_ks, stride_kd, stride_vs, stride_vd,
                      qk_scale, BLOCK_N, BLOCK_D, HEAD_DIM, False, DOT_PRECISION)
    if full_end < key_end:
        dq = _dq_step(dq, q, do, m, delta, k_base, v_base, full_end, key_end, stride_ks, stride_kd, stride_vs,
                      stride_vd, qk_scale, BLOCK_N, BLOCK_D, HEAD_DIM, True, DOT_PRECISION)
    return dq


@triton.jit
def _dq_step(
    dq, q, do, m, delta, k_base, v_base, key0, key_end, stride_ks, stride_kd, stride_vs, stride_vd, qk_scale,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr, MASK_KEYS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    k = load_tile(k_base, None, 0, 0, key0, key_end, stride_ks, stride_kd, BLOCK_N, BLOCK_D, HEAD_DIM, MASK_KEYS, False)
    v = load_tile(v_base, None, 0, 0, key0, key_end, stride_vs, stride_vd, BLOCK_N, BLOCK_D, HEAD_DIM, MASK_KEYS, False)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
    p = tl.math.exp2(s * qk_scale - m[:, None])
    if MASK_KEYS:
        keys = key0 + tl.arange(0, BLOCK_N)
        p = tl.where((keys < key_end)[None, :], p, 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
    ds = p * (dp - delta[:, None])
    dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=DOT_PRECISION)
    return dq


@triton.jit
def joint_attention_bwd_dq_kernel(
    Q, K, V, JQ, JK, JV, DOut, DJointOut, M, DELTA, DQ, DJQ,
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
    scale, qk_scale,
    N, L, H,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HAS_N_LEN: tl.constexpr,
    HAS_L_LEN: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    bz = pid_bh // H
    h = pid_bh % H
    bz64 = bz.to(tl.int64)
    h64 = h.to(tl.int64)
    n_end = valid_length(N_LEN, bz, N, HAS_N_LEN)
    l_end = valid_length(L_LEN, bz, L, HAS_L_LEN)
    spatial_blocks = tl.cdiv(N, BLOCK_M)
    if pid_m < spatial_blocks:
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
        do = load_tile(DJointOut + bz64 * stride_djob + h64 * stride_djoh, None, 0, 0, row0, L, stride_djos, stride_djod,
                       BLOCK_M, BLOCK_D, HEAD_DIM, True, False)
        dq_base = DJQ + bz64 * stride_djqb + h64 * stride_djqh
        dq_ss = stride_djqs
        dq_sd = stride_djqd
    rows = row0 + tl.arange(0, BLOCK_M)
    row_ok = rows < row_end
    stat_ptr = (bz64 * H + h64) * (N + L) + lse_row0 - row0 + rows
    m = tl.load(M + stat_ptr, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + stat_ptr, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    dq = _dq_over_keys(dq, q, do, m, delta, K + bz64 * stride_kb + h64 * stride_kh, V + bz64 * stride_vb + h64 * stride_vh,
                       n_end, stride_ks, stride_kd, stride_vs, stride_vd, qk_scale,
                       BLOCK_N, BLOCK_D, HEAD_DIM, DOT_PRECISION)
    dq = _dq_over_keys(dq, q, do, m, delta, JK + bz64 * stride_jkb + h64 * stride_jkh,
                       JV + bz64 * stride_jvb + h64 * stride_jvh, l_end, stride_jks, stride_jkd, stride_jvs,
                       stride_jvd, qk_scale, BLOCK_N, BLOCK_D, HEAD_DIM, DOT_PRECISION)
    cols = tl.arange(0, BLOCK_D)
    tl.store(dq_base + rows[:, None] * dq_ss + cols[None, :] * dq_sd, (dq * scale).to(DQ.dtype.element_ty),
             mask=row_ok[:, None] & (cols[None, :] < HEAD_DIM))
# fmt: on
