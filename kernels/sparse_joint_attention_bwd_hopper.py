"""Backward block-sparse joint attention for Hopper (sm_90a) in Gluon: the dense Hopper backward's products
(`joint_attention_bwd_hopper.py`: Sᵀ = K Qᵀ, dPᵀ = V dOᵀ, dV += Pᵀ dO, dK += dSᵀ Q, dQ = dS K added by TMA
reduce-adds into a float32 buffer) over the query blocks that the mask's transposed lists give each key block.

Entry point: `sparse_joint_attention_bwd_hopper_kernel`, launched by `jointattn.runtime.sparse_hopper_launch`
between the dense backward's preprocess and its dQ postprocess. One CTA per key slice of one set (the spatial
set's, then the text set's; b * nh), a TMA producer and two consumer warpgroups, in one of two schedules
(SPLIT_KEYS, from `configs.hopper_sparse_backward_config`):
- key blocks of a multiple of 128: CTAs of 128 keys, 64 per consumer, both taking every query step, as the
  dense kernel does (each Q/dO tile serves 128 keys);
- key blocks of 64: CTAs of 64 keys (a 64-key block has one list; splitting it would leave each consumer 32
  keys), both consumers holding the same keys and taking alternate query steps, each keeping partial dK and dV
  that are added through shared memory at the end.
The sequence of query blocks of BLOCK_M = 64 rows:
- spatial keys (inside key block kb of the mask): the query blocks whose lists hold kb (full, or partial with
  its bits: the transposed lists, `sparse_triton_runtime.transposed_lists`), Q_BLOCK / BLOCK_M steps each, then
  every text query block (text queries attend every key);
- text keys: every query block of both sets (dense).
Unlisted query blocks are never loaded. Each ring stage feeds one step (one consumer, or both with split keys),
and each consumer loads its next step's list entry and row statistics while its products run. Keys: a spatial block is loaded where it
is (rows past N are TMA zero fill, masked, never stored), so no key outside the CTA's mask block is read; the
text set's last block is loaded so that it ends at the valid text length (the dense kernel's `skip`: padded
rows never read), its first rows (valid text keys of the block before) masked and never stored, and padded text
keys get zero gradients. A masked score gives P = 0, and a NaN value the bits hide inside a listed block
multiplies through (0 * NaN), as in the Triton kernels and flex_attention. The spatial set is unpadded
(`dispatch.sparse_hopper_unsupported`). HAS_PARTIAL = False (a layout without partial blocks, as the
estimator's) builds the kernel without the bits path, whose registers cost spills at dh 128.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from .joint_attention_bwd_hopper import _store_key_gradient, _tma_reduce_add
from .joint_attention_fwd_hopper import _valid_length


@gluon.jit
def _query_step(i, k_spatial, n_first, tq_ptr, stride_tq, ts_ptr, stride_ts, SUB: gl.constexpr,
                Q_BLOCK: gl.constexpr, BLOCK_M: gl.constexpr):  # fmt: skip
    """Step i of a CTA's query sequence: (spatial query block?, its first row in its set, the mask's query
    block, the partial-bits slot or -1). The first n_first steps are spatial: the listed blocks' SUB steps each
    (spatial keys) or every spatial block (text keys); the rest are the text blocks."""
    q_spatial = i < n_first
    listed = k_spatial & q_spatial
    e = i // SUB
    qb = gl.load(tq_ptr + e * stride_tq, mask=listed, other=0)
    slot = gl.load(ts_ptr + e * stride_ts, mask=listed, other=-1)
    spatial_row0 = gl.where(listed, qb * Q_BLOCK + (i - e * SUB) * BLOCK_M, i * BLOCK_M)
    row0 = gl.where(q_spatial, spatial_row0, (i - n_first) * BLOCK_M)
    return q_spatial, row0, qb, slot


@gluon.jit
def _row_stats(M, DELTA, stats, q_spatial, q_row0, q_idx, N, L):
    """m and delta of a query step's rows (one row per thread; +inf and 0 past its set's end)."""
    row0 = gl.where(q_spatial, q_row0, N + q_row0)
    ok = q_row0 + q_idx < gl.where(q_spatial, N, L)
    m = gl.load(M + stats + row0 + q_idx, mask=ok, other=float("inf"))
    delta = gl.load(DELTA + stats + row0 + q_idx, mask=ok, other=0.0)
    return m, delta


@gluon.jit
def _store_rows(acc, base, stride_s, stride_d, row0, n_rows, ROWS: gl.constexpr, HEAD_DIM: gl.constexpr,
                layout: gl.constexpr):  # fmt: skip
    """Rows row0 + r of dK or dV for r < n_rows (a spatial block's rows inside the set)."""
    r = gl.arange(0, ROWS, layout=gl.SliceLayout(1, layout))
    d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, layout))
    ptrs = base + (row0 + r).to(gl.int64)[:, None] * stride_s + d.to(gl.int64)[None, :] * stride_d
    gl.store(ptrs, acc.to(base.dtype.element_ty), mask=(r < n_rows)[:, None] & (d < HEAD_DIM)[None, :])


# Gluon needs the warp_specialize argument tuples written inline (see joint_attention_fwd_hopper.py).
# fmt: off


@gluon.jit
def _producer(desc_q, desc_k, desc_v, desc_jq, desc_jk, desc_jv, desc_do, desc_djo,
              k_smem, v_smem, q_bufs, do_bufs, kv_bar, qdo_ready, qdo_empty,
              bz, h, k_spatial, k_start, active, n_first, n_steps, tq_ptr, stride_tq, ts_ptr, stride_ts,
              SUB: gl.constexpr, Q_BLOCK: gl.constexpr, BLOCK_M: gl.constexpr, NUM_STAGES: gl.constexpr,
              KEY_TILES: gl.constexpr):
    if active:
        BLOCK_N: gl.constexpr = desc_k.block_type.shape[2]
        mbarrier.expect(kv_bar, 2 * KEY_TILES * desc_k.block_type.nbytes)
        for c in gl.static_range(KEY_TILES):
            if k_spatial:
                tma.async_copy_global_to_shared(desc_k, [bz, h, k_start + c * BLOCK_N, 0], kv_bar, k_smem.index(c))
                tma.async_copy_global_to_shared(desc_v, [bz, h, k_start + c * BLOCK_N, 0], kv_bar, v_smem.index(c))
            else:
                tma.async_copy_global_to_shared(desc_jk, [bz, h, k_start + c * BLOCK_N, 0], kv_bar,
                                                k_smem.index(c))
                tma.async_copy_global_to_shared(desc_jv, [bz, h, k_start + c * BLOCK_N, 0], kv_bar,
                                                v_smem.index(c))
        for i in range(n_steps):
            s = i % NUM_STAGES
            # Alternate steps: one consumer takes each; split keys: both do (qdo_empty counts KEY_TILES
            # arrivals). A fresh mbarrier passes parity 1, so the first pass does not block.
            mbarrier.wait(qdo_empty.index(s), ((i // NUM_STAGES) & 1) ^ 1)
            mbarrier.expect(qdo_ready.index(s), 2 * desc_q.block_type.nbytes)
            q_spatial, row0, _qb, _slot = _query_step(i, k_spatial, n_first, tq_ptr, stride_tq, ts_ptr, stride_ts,
                                                      SUB, Q_BLOCK, BLOCK_M)
            if q_spatial:
                tma.async_copy_global_to_shared(desc_q, [bz, h, row0, 0], qdo_ready.index(s), q_bufs.index(s))
                tma.async_copy_global_to_shared(desc_do, [bz, h, row0, 0], qdo_ready.index(s), do_bufs.index(s))
            else:
                tma.async_copy_global_to_shared(desc_jq, [bz, h, row0, 0], qdo_ready.index(s), q_bufs.index(s))
                tma.async_copy_global_to_shared(desc_djo, [bz, h, row0, 0], qdo_ready.index(s),
                                                do_bufs.index(s))


@gluon.jit
def _consumer(desc_dqa, desc_djqa, k_smem, v_smem, q_bufs, do_bufs, ds_smem, dq_smem, kv_bar, qdo_ready,
              qdo_empty, acc_ready, acc_free, M, DELTA, DK, DV, DJK, DJV,
              stride_dkb, stride_dkh, stride_dks, stride_dkd,
              stride_dvb, stride_dvh, stride_dvs, stride_dvd,
              stride_djkb, stride_djkh, stride_djks, stride_djkd,
              stride_djvb, stride_djvh, stride_djvs, stride_djvd,
              bz, h, k_spatial, k_start, k_row0, skip, active, len_k, k_rows, n_first, n_steps,
              tq_ptr, stride_tq, ts_ptr, stride_ts, bits_ptr, stride_bq, stride_bp, stride_br, stride_bw,
              N, L, H, qk_scale, scale,
              C: gl.constexpr, SUB: gl.constexpr, Q_BLOCK: gl.constexpr, KV_BLOCK: gl.constexpr,
              BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr,
              SPLIT_KEYS: gl.constexpr, HAS_PARTIAL: gl.constexpr):
    dtype: gl.constexpr = q_bufs.dtype
    # Split keys: this consumer's BLOCK_N keys are the CTA's C-th, and it takes every step; otherwise both hold
    # the CTA's BLOCK_N keys and this one takes steps C, C + 2, ...
    KEY_TILE: gl.constexpr = C if SPLIT_KEYS else 0
    FIRST_STEP: gl.constexpr = 0 if SPLIT_KEYS else C
    STEP: gl.constexpr = 1 if SPLIT_KEYS else 2
    # As the dense kernel's consumer: Sᵀ/dPᵀ [keys, queries], dK/dV [keys, dh], dQ [queries, dh].
    st_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                        instr_shape=[16, BLOCK_M, 16])
    kv_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                        instr_shape=[16, HEAD_DIM, 16])
    op_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=kv_layout, k_width=2)
    key_of_st: gl.constexpr = gl.SliceLayout(1, st_layout)
    query_of_st: gl.constexpr = gl.SliceLayout(0, st_layout)

    k_w = k_smem.index(KEY_TILE).reshape([BLOCK_N, HEAD_DIM])
    v_w = v_smem.index(KEY_TILE).reshape([BLOCK_N, HEAD_DIM])
    ds_w = ds_smem.index(C)
    dq_w = dq_smem.index(C)
    key_load0 = k_start + KEY_TILE * BLOCK_N  # this consumer's first loaded key row
    key_row0 = k_row0 + KEY_TILE * BLOCK_N  # the first row its gradients belong to (where nothing is skipped)
    skip_rows = skip - KEY_TILE * BLOCK_N  # its first rows that repeat keys of the text block before (may be <= 0)
    r = gl.arange(0, BLOCK_N, layout=key_of_st)
    key_ok = (r >= skip_rows) & (key_load0 + r < len_k)
    # Column of each loaded key row inside its mask key block (spatial keys: the CTA's rows lie in one block).
    key_col = key_load0 + r - (k_row0 // KV_BLOCK) * KV_BLOCK
    q_col = gl.arange(0, BLOCK_M, layout=query_of_st)

    dk = gl.zeros([BLOCK_N, HEAD_DIM], gl.float32, layout=kv_layout)
    dv = gl.zeros([BLOCK_N, HEAD_DIM], gl.float32, layout=kv_layout)
    st_zero = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=st_layout)
    DQ_CHUNK: gl.constexpr = 64 if HEAD_DIM > 64 else HEAD_DIM  # dQ's columns per product
    dq_chunk_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                              instr_shape=[16, DQ_CHUNK, 16])
    dq_chunk_zero = gl.zeros([BLOCK_M, DQ_CHUNK], gl.float32, layout=dq_chunk_layout)
    stats = (bz.to(gl.int64) * H + h) * (N + L)
    q_idx = gl.arange(0, BLOCK_M, layout=gl.BlockedLayout([1], [32], [4], [0]))

    if active:
        # Each step's query block and its statistics are loaded a step ahead (index loads, then row loads that
        # need them): loaded at the top of the step, the chain would hold up the products' issue every step.
        q_spatial, q_row0, qb, slot = _query_step(FIRST_STEP, k_spatial, n_first, tq_ptr, stride_tq, ts_ptr,
                                                  stride_ts, SUB, Q_BLOCK, BLOCK_M)
        m, delta = _row_stats(M, DELTA, stats, q_spatial, q_row0, q_idx, N, L)
        mbarrier.wait(kv_bar, 0)
        for i in range(FIRST_STEP, n_steps, STEP):
            s = i % NUM_STAGES
            mbarrier.wait(qdo_ready.index(s), (i // NUM_STAGES) & 1)
            q_buf = q_bufs.index(s).reshape([BLOCK_M, HEAD_DIM])
            do_buf = do_bufs.index(s).reshape([BLOCK_M, HEAD_DIM])
            st = warpgroup_mma(k_w, q_buf.permute((1, 0)), st_zero, use_acc=False, is_async=True)
            dpt = warpgroup_mma(v_w, do_buf.permute((1, 0)), st_zero, use_acc=False, is_async=True)
            # This consumer's next step, while the products run.
            n_spatial, n_row0, n_qb, n_slot = _query_step(i + STEP, k_spatial, n_first, tq_ptr, stride_tq, ts_ptr,
                                                          stride_ts, SUB, Q_BLOCK, BLOCK_M)
            m_c = gl.convert_layout(m, query_of_st)
            delta_c = gl.convert_layout(delta, query_of_st)
            m, delta = _row_stats(M, DELTA, stats, n_spatial, n_row0, q_idx, N, L)
            # Pᵀ while dPᵀ is still on the tensor cores, and dV's product issued before waiting for dPᵀ (wgmma
            # waits are in order: at most one product outstanding lets the later one run on), as the dense kernel.
            st = warpgroup_mma_wait(num_outstanding=1, deps=(st,))
            pt = gl.where(key_ok[:, None], gl.exp2(st * qk_scale - m_c[None, :]), 0.0)
            if HAS_PARTIAL and slot >= 0:  # a partial block: its bits, one word per [key, query]
                rows = q_row0 - qb * Q_BLOCK + q_col
                words = gl.load(bits_ptr + qb.to(gl.int64) * stride_bq + slot * stride_bp
                                + (rows * stride_br)[None, :] + ((key_col // 32) * stride_bw)[:, None],
                                mask=key_ok[:, None] & (rows >= 0)[None, :], other=0)
                pt = gl.where(((words >> (key_col % 32)[:, None]) & 1) != 0, pt, 0.0)
            pt_op = gl.convert_layout(pt.to(dtype), op_layout)
            dv = warpgroup_mma(pt_op, do_buf, dv, is_async=True)
            dpt = warpgroup_mma_wait(num_outstanding=1, deps=(dpt,))
            # Rows outside the CTA's keys (the text block before the last one's, zero fill past N): selected
            # out. Inside a listed block, a key the bits hide still multiplies through (0 * NaN), as the Triton
            # kernels and flex_attention do.
            dst = gl.where(key_ok[:, None], pt * (dpt - delta_c[None, :]), 0.0)
            dst_op = gl.convert_layout(dst.to(dtype), op_layout)
            dk = warpgroup_mma(dst_op, q_buf, dk, is_async=True)
            ds_w.store(dst.to(dtype))
            fence_async_shared()
            # dQ = scale * dS K, DQ_CHUNK columns at a time: a chunk's accumulator is all the registers dQ holds
            # (half of a whole dh-128 tile, which serialized the wgmmas for lack of registers, ptxas's C7512).
            # Rows past the set's end hold zeros (P = 0 there) and the reduce clips them at the tensor's end.
            tma.store_wait(pendings=0)  # the previous tile's reduce has read dq_w
            for c in gl.static_range(HEAD_DIM // DQ_CHUNK):
                dq = warpgroup_mma(ds_w.permute((1, 0)), k_w.slice(c * DQ_CHUNK, DQ_CHUNK, dim=1), dq_chunk_zero,
                                   use_acc=False, is_async=True)
                dq = warpgroup_mma_wait(num_outstanding=0, deps=(dq,))  # in order: dV and dK are done too
                dq_w.reshape([BLOCK_M, HEAD_DIM]).slice(c * DQ_CHUNK, DQ_CHUNK, dim=1).store(dq * scale)
            dv, dk, pt_op, dst_op = warpgroup_mma_wait(num_outstanding=0, deps=(dv, dk, pt_op, dst_op))
            mbarrier.arrive(qdo_empty.index(s), count=1)  # Q, dO of stage s consumed
            fence_async_shared()
            if q_spatial:
                _tma_reduce_add(desc_dqa, [bz, h, q_row0, 0], dq_w)
            else:
                _tma_reduce_add(desc_djqa, [bz, h, q_row0, 0], dq_w)
            q_spatial, q_row0, qb, slot = n_spatial, n_row0, n_qb, n_slot
        tma.store_wait(pendings=0)

    # dK = scale * dSᵀ Q (dS is the gradient of the scaled scores).
    dk = dk * scale
    if not SPLIT_KEYS:
        # The two warpgroups' partial dK and dV are added through consumer 1's dQ tile (free once its last
        # reduce has read it): consumer 1 stores dK, then dV after consumer 0 has read dK; consumer 0 adds and
        # writes both.
        acc = dq_smem.index(1).reshape([BLOCK_N, HEAD_DIM])
        if C == 1:
            acc.store(dk)
            gl.thread_barrier()
            mbarrier.arrive(acc_ready, count=1)
            mbarrier.wait(acc_free, 0)
            acc.store(dv)
            gl.thread_barrier()
            mbarrier.arrive(acc_ready, count=1)
        else:
            mbarrier.wait(acc_ready, 0)
            dk = dk + acc.load(kv_layout)
            gl.thread_barrier()
            mbarrier.arrive(acc_free, count=1)
            mbarrier.wait(acc_ready, 1)
            dv = dv + acc.load(kv_layout)
    if SPLIT_KEYS or C == 0:  # split keys: each consumer its own rows; alternate steps: consumer 0 the sums
        _store_key_gradients(dk, dv, DK, DV, DJK, DJV,
                             stride_dkb, stride_dkh, stride_dks, stride_dkd,
                             stride_dvb, stride_dvh, stride_dvs, stride_dvd,
                             stride_djkb, stride_djkh, stride_djks, stride_djkd,
                             stride_djvb, stride_djvh, stride_djvs, stride_djvd,
                             bz, h, k_spatial, key_load0, key_row0, skip_rows, len_k, k_rows, N,
                             BLOCK_N, HEAD_DIM, kv_layout)


@gluon.jit
def _store_key_gradients(dk, dv, DK, DV, DJK, DJV,
                         stride_dkb, stride_dkh, stride_dks, stride_dkd,
                         stride_dvb, stride_dvh, stride_dvs, stride_dvd,
                         stride_djkb, stride_djkh, stride_djks, stride_djkd,
                         stride_djvb, stride_djvh, stride_djvs, stride_djvd,
                         bz, h, k_spatial, key_load0, key_row0, skip_rows, len_k, k_rows, N,
                         BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, layout: gl.constexpr):
    """dK and dV of BLOCK_N keys: spatial rows key_row0 + r up to N (loaded where they are); text rows as the
    dense kernel stores them (loaded from key_load0, the first skip_rows repeats; rows past the valid length
    zeroed)."""
    if k_spatial:
        _store_rows(dk, DK + bz.to(gl.int64) * stride_dkb + h.to(gl.int64) * stride_dkh,
                    stride_dks, stride_dkd, key_row0, N - key_row0, BLOCK_N, HEAD_DIM, layout)
        _store_rows(dv, DV + bz.to(gl.int64) * stride_dvb + h.to(gl.int64) * stride_dvh,
                    stride_dvs, stride_dvd, key_row0, N - key_row0, BLOCK_N, HEAD_DIM, layout)
    else:
        _store_key_gradient(dk, DJK + bz.to(gl.int64) * stride_djkb + h.to(gl.int64) * stride_djkh,
                            stride_djks, stride_djkd, key_load0, key_row0, skip_rows, len_k, k_rows,
                            0, BLOCK_N, HEAD_DIM, layout)
        _store_key_gradient(dv, DJV + bz.to(gl.int64) * stride_djvb + h.to(gl.int64) * stride_djvh,
                            stride_djvs, stride_djvd, key_load0, key_row0, skip_rows, len_k, k_rows,
                            0, BLOCK_N, HEAD_DIM, layout)


@gluon.jit
def sparse_joint_attention_bwd_hopper_kernel(
    desc_q, desc_k, desc_v, desc_jq, desc_jk, desc_jv, desc_do, desc_djo, desc_dqa, desc_djqa,
    M, DELTA, DK, DV, DJK, DJV, TNUM, TQB, TSLOT, BITS, L_LEN,
    stride_dkb, stride_dkh, stride_dks, stride_dkd,
    stride_dvb, stride_dvh, stride_dvs, stride_dvd,
    stride_djkb, stride_djkh, stride_djks, stride_djkd,
    stride_djvb, stride_djvh, stride_djvs, stride_djvd,
    stride_tnb, stride_tnh, stride_tnk,
    stride_tqb, stride_tqh, stride_tqk, stride_tqq,
    stride_tsb, stride_tsh, stride_tsk, stride_tsq,
    stride_bb, stride_bh, stride_bq, stride_bp, stride_br, stride_bw,
    qk_scale, scale,
    N, L, H,
    BLOCK_M: gl.constexpr, HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr,
    Q_BLOCK: gl.constexpr, KV_BLOCK: gl.constexpr, HAS_L_LEN: gl.constexpr, CONSUMER_REGS: gl.constexpr,
    SPLIT_KEYS: gl.constexpr, HAS_PARTIAL: gl.constexpr,
):
    """As the dense Hopper backward (descriptors: q/jq/dO/djO blocks [1, 1, BLOCK_M, HEAD_DIM], k/v/jk/jv
    [1, 1, 64, HEAD_DIM]; dQ accumulators float32 [b, nh, N or L, HEAD_DIM], zeroed), plus the transposed lists
    (TNUM [b, nh, KBn], TQB and TSLOT [b, nh, KBn, QBn]) and the partial bits [b, nh, QBn, P, Q_BLOCK, W], any
    strides (broadcast by stride 0). The spatial set is unpadded; L_LEN: [b] valid text lengths."""
    dtype: gl.constexpr = desc_q.dtype
    BLOCK_N: gl.constexpr = desc_k.block_type.shape[2]  # keys per consumer
    KEY_TILES: gl.constexpr = 2 if SPLIT_KEYS else 1
    CTA_KEYS: gl.constexpr = KEY_TILES * BLOCK_N
    SUB: gl.constexpr = Q_BLOCK // BLOCK_M
    pid_n = gl.program_id(0)
    pid_bh = gl.program_id(1)
    bz = pid_bh // H
    h = pid_bh % H
    len_b = _valid_length(L_LEN, bz, L, HAS_L_LEN)

    spatial_tiles = gl.cdiv(N, CTA_KEYS)
    k_spatial = pid_n < spatial_tiles
    k_row0 = gl.where(k_spatial, pid_n, pid_n - spatial_tiles) * CTA_KEYS
    len_k = gl.where(k_spatial, N, len_b)
    k_rows = gl.where(k_spatial, N, L)
    active = k_row0 < len_k
    # A text block past the valid length is loaded to end at it (padded rows, which may hold anything, never
    # read; the rows before are valid text keys, which every query attends). A spatial block is loaded where it
    # is: its rows past N are TMA zero fill, and no key of another mask block is ever read.
    skip = gl.where(k_spatial, 0, gl.maximum(k_row0 + CTA_KEYS - len_k, 0))
    k_start = k_row0 - skip

    b64 = bz.to(gl.int64)
    h64 = h.to(gl.int64)
    kb = (k_row0 // KV_BLOCK).to(gl.int64)
    n_listed = gl.load(TNUM + b64 * stride_tnb + h64 * stride_tnh + kb * stride_tnk, mask=k_spatial, other=0)
    n_first = gl.where(k_spatial, n_listed * SUB, gl.cdiv(N, BLOCK_M))
    n_steps = n_first + gl.cdiv(L, BLOCK_M)
    tq_ptr = TQB + b64 * stride_tqb + h64 * stride_tqh + kb * stride_tqk
    ts_ptr = TSLOT + b64 * stride_tsb + h64 * stride_tsh + kb * stride_tsk
    bits_ptr = BITS + b64 * stride_bb + h64 * stride_bh

    k_smem = gl.allocate_shared_memory(dtype, [KEY_TILES] + desc_k.block_type.shape, desc_k.layout)
    v_smem = gl.allocate_shared_memory(dtype, [KEY_TILES] + desc_v.block_type.shape, desc_v.layout)
    q_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES] + desc_q.block_type.shape, desc_q.layout)
    do_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES] + desc_do.block_type.shape, desc_do.layout)
    ds_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, BLOCK_M], dtype)
    ds_smem = gl.allocate_shared_memory(dtype, [2, BLOCK_N, BLOCK_M], ds_layout)
    dq_smem = gl.allocate_shared_memory(gl.float32, [2] + desc_dqa.block_type.shape, desc_dqa.layout)
    kv_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    acc_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    acc_free = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    qdo_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    qdo_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(kv_bar, count=1)
    mbarrier.init(acc_ready, count=1)
    mbarrier.init(acc_free, count=1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(qdo_ready.index(i), count=1)
        mbarrier.init(qdo_empty.index(i), count=KEY_TILES)

    gl.warp_specialize(
        [
            (_producer, (desc_q, desc_k, desc_v, desc_jq, desc_jk, desc_jv, desc_do, desc_djo,
                         k_smem, v_smem, q_bufs, do_bufs, kv_bar, qdo_ready, qdo_empty,
                         bz, h, k_spatial, k_start, active, n_first, n_steps, tq_ptr, stride_tqq, ts_ptr, stride_tsq,
                         SUB, Q_BLOCK, BLOCK_M, NUM_STAGES, KEY_TILES)),
            (_consumer, (desc_dqa, desc_djqa, k_smem, v_smem, q_bufs, do_bufs, ds_smem, dq_smem, kv_bar,
                         qdo_ready, qdo_empty, acc_ready, acc_free, M, DELTA, DK, DV, DJK, DJV,
                         stride_dkb, stride_dkh, stride_dks, stride_dkd,
                         stride_dvb, stride_dvh, stride_dvs, stride_dvd,
                         stride_djkb, stride_djkh, stride_djks, stride_djkd,
                         stride_djvb, stride_djvh, stride_djvs, stride_djvd,
                         bz, h, k_spatial, k_start, k_row0, skip, active, len_k, k_rows, n_first, n_steps,
                         tq_ptr, stride_tqq, ts_ptr, stride_tsq, bits_ptr, stride_bq, stride_bp, stride_br, stride_bw,
                         N, L, H, qk_scale, scale,
                         0, SUB, Q_BLOCK, KV_BLOCK, BLOCK_M, BLOCK_N, HEAD_DIM, NUM_STAGES, SPLIT_KEYS,
                         HAS_PARTIAL)),
            (_consumer, (desc_dqa, desc_djqa, k_smem, v_smem, q_bufs, do_bufs, ds_smem, dq_smem, kv_bar,
                         qdo_ready, qdo_empty, acc_ready, acc_free, M, DELTA, DK, DV, DJK, DJV,
                         stride_dkb, stride_dkh, stride_dks, stride_dkd,
                         stride_dvb, stride_dvh, stride_dvs, stride_dvd,
                         stride_djkb, stride_djkh, stride_djks, stride_djkd,
                         stride_djvb, stride_djvh, stride_djvs, stride_djvd,
                         bz, h, k_spatial, k_start, k_row0, skip, active, len_k, k_rows, n_first, n_steps,
                         tq_ptr, stride_tqq, ts_ptr, stride_tsq, bits_ptr, stride_bq, stride_bp, stride_br, stride_bw,
                         N, L, H, qk_scale, scale,
                         1, SUB, Q_BLOCK, KV_BLOCK, BLOCK_M, BLOCK_N, HEAD_DIM, NUM_STAGES, SPLIT_KEYS,
                         HAS_PARTIAL)),
        ],
        [4, 4],
        [CONSUMER_REGS, CONSUMER_REGS],
    )
# fmt: on
