"""Backward joint-attention kernel for Hopper (sm_90a) in Gluon: FlashAttention-3's backward, two token sets.

Entry point: `joint_attention_bwd_hopper_kernel`, launched by `jointattn.runtime.hopper_backward_launch` after
the Triton preprocess (`joint_attention_bwd_preprocess_kernel`: delta = rowsum(dO * O) - dlse and
m = lse * log2(e), +inf where lse = -inf) and before a postprocess that casts dQ to the input dtype.

One CTA per key block of 2 * KEYS_PER_WG keys (spatial blocks first, then joint blocks, both sets in one grid)
walks every query block of both token sets (every query row attends every valid key) and runs three partitions:
- `_producer` (the default partition, 4 warps): TMA loads of the CTA's K and V once, then Q and dO of every
  query block into a NUM_STAGES-deep ring (spatial blocks first, joint blocks after; no cat).
- two `_consumer` partitions C = 0, 1 (one warpgroup each, KEYS_PER_WG keys each), per query block, in the
  transposed form so that P and dS are the register A operand of their products:
  Sᵀ = K Qᵀ, dPᵀ = V dOᵀ, Pᵀ = exp2(Sᵀ * scale * log2 e - m), dSᵀ = Pᵀ (dPᵀ - delta),
  dV += Pᵀ dO, dK += dSᵀ Q (register accumulators across the query loop), and dQ = dS K over the CTA's keys:
  dSᵀ goes to shared memory (read transposed by wgmma); with the config's SPLIT_DQ (FA3's split, possible at
  dh 128; off in the measured default) both warpgroups' dSᵀ are handed over (mbarriers ds_ready / ds_free) and
  each computes half of dQ's columns over all 2 * KEYS_PER_WG keys, otherwise each its own keys' part of all
  columns; the tile is staged in shared memory and added into a float32
  [b, nh, N+L, dh] buffer with a TMA reduce-add (FA3's way: one bulk add per tile instead of a scalar atomic
  per element), so there is no second pass over the keys.
- Padding: a key block past its set's valid length loads nothing and writes zero gradients. A set's partial
  last block is loaded so that it ends at the valid length (`_key_block`, as the forward does), its first
  columns (repeats of the block before, or rows before 0 that TMA reads as zero) masked to P = 0 and never
  stored; its rows past the valid length get zeros. So no padded row is ever read.
- Query rows past a set's end are TMA zero-fill with m = +inf (P = 0): they add nothing.
"""

from __future__ import annotations

from triton._C.libtriton import ir
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language import _core as gl_core
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from .joint_attention_fwd_hopper import _valid_length


@gl_core.builtin
def _tma_reduce_add(tensor_desc, coord, src, _semantic=None):
    """TMA reduce-add of a shared-memory tile into global memory (cp.reduce.async.bulk.tensor .add): the
    Gluon builder has the op (`create_async_tma_reduce`), Triton 3.6's Python API does not name it yet. Completes
    like a TMA store (`tma.store_wait`)."""
    coord = _semantic._convert_to_ir_values(coord, require_i64=False)
    _semantic.builder.create_async_tma_reduce(
        ir.DESCRIPTOR_REDUCE_KIND.ADD, tensor_desc.handle, coord, src.handle
    )


# Gluon needs the warp_specialize argument tuples written inline (see joint_attention_fwd_hopper.py).
# fmt: off


@gluon.jit
def _producer(desc_q, desc_k, desc_v, desc_jq, desc_jk, desc_jv, desc_do, desc_djo,
              k_smem, v_smem, q_bufs, do_bufs, kv_bar, qdo_ready, qdo_empty,
              bz, h, k_spatial, k_start, active, n_q_blocks_a, n_q_blocks,
              BLOCK_M: gl.constexpr, KEYS_PER_WG: gl.constexpr, NUM_STAGES: gl.constexpr):
    if active:
        mbarrier.expect(kv_bar, 4 * desc_k.block_type.nbytes)
        if k_spatial:
            for c in gl.static_range(2):
                tma.async_copy_global_to_shared(desc_k, [bz, h, k_start + c * KEYS_PER_WG, 0], kv_bar,
                                                k_smem.index(c))
                tma.async_copy_global_to_shared(desc_v, [bz, h, k_start + c * KEYS_PER_WG, 0], kv_bar,
                                                v_smem.index(c))
        else:
            for c in gl.static_range(2):
                tma.async_copy_global_to_shared(desc_jk, [bz, h, k_start + c * KEYS_PER_WG, 0], kv_bar,
                                                k_smem.index(c))
                tma.async_copy_global_to_shared(desc_jv, [bz, h, k_start + c * KEYS_PER_WG, 0], kv_bar,
                                                v_smem.index(c))
        # qdo_empty[s]: one arrival per consumer. A fresh mbarrier counts as "phase 1 complete", so the first
        # pass through the ring does not block.
        for i in range(n_q_blocks):
            s = i % NUM_STAGES
            mbarrier.wait(qdo_empty.index(s), ((i // NUM_STAGES) & 1) ^ 1)
            mbarrier.expect(qdo_ready.index(s), 2 * desc_q.block_type.nbytes)
            if i < n_q_blocks_a:
                row0 = i * BLOCK_M
                tma.async_copy_global_to_shared(desc_q, [bz, h, row0, 0], qdo_ready.index(s), q_bufs.index(s))
                tma.async_copy_global_to_shared(desc_do, [bz, h, row0, 0], qdo_ready.index(s), do_bufs.index(s))
            else:
                row0 = (i - n_q_blocks_a) * BLOCK_M
                tma.async_copy_global_to_shared(desc_jq, [bz, h, row0, 0], qdo_ready.index(s), q_bufs.index(s))
                tma.async_copy_global_to_shared(desc_djo, [bz, h, row0, 0], qdo_ready.index(s),
                                                do_bufs.index(s))


@gluon.jit
def _store_key_gradient(acc, base, stride_s, stride_d, k_load0, natural0, skip_rows, valid_len, set_rows,
                        C: gl.constexpr, KEYS_PER_WG: gl.constexpr, HEAD_DIM: gl.constexpr,
                        layout: gl.constexpr):
    """This warpgroup's rows of dK or dV: loaded row k_load0 + r holds acc[r] where r >= skip_rows; natural
    rows natural0 + r at or past the valid length (padded keys, or the block past the set's end) get 0."""
    r = gl.arange(0, KEYS_PER_WG, layout=gl.SliceLayout(1, layout))
    d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, layout))
    cols = d.to(gl.int64)[None, :] * stride_d
    loaded = k_load0 + r
    ptrs = base + loaded.to(gl.int64)[:, None] * stride_s + cols
    gl.store(ptrs, acc.to(base.dtype.element_ty), mask=(r >= skip_rows)[:, None] & (d < HEAD_DIM)[None, :])
    natural = natural0 + r
    zero_rows = (natural >= valid_len) & (natural < set_rows)
    ptrs = base + natural.to(gl.int64)[:, None] * stride_s + cols
    gl.store(ptrs, gl.zeros_like(acc).to(base.dtype.element_ty), mask=zero_rows[:, None] & (d < HEAD_DIM)[None, :])


@gluon.jit
def _consumer(desc_dqa, desc_djqa, k_smem, v_smem, q_bufs, do_bufs, ds_smem, dq_smem, kv_bar, qdo_ready,
              qdo_empty, ds_ready, ds_free, M, DELTA, DK, DV, DJK, DJV,
              stride_dkb, stride_dkh, stride_dks, stride_dkd,
              stride_dvb, stride_dvh, stride_dvs, stride_dvd,
              stride_djkb, stride_djkh, stride_djks, stride_djkd,
              stride_djvb, stride_djvh, stride_djvs, stride_djvd,
              bz, h, k_spatial, k_start, k_row0, skip, active, len_k, k_rows,
              n_q_blocks_a, n_q_blocks, N, L, H, qk_scale, scale,
              C: gl.constexpr, BLOCK_M: gl.constexpr, KEYS_PER_WG: gl.constexpr, HEAD_DIM: gl.constexpr,
              NUM_STAGES: gl.constexpr):
    dtype: gl.constexpr = q_bufs.dtype
    # One warpgroup: wgmma m64 tiles, 4 warps along the rows. Sᵀ/dPᵀ: [keys, queries]; dK/dV: [keys, dh];
    # dQ: [queries, dh].
    st_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                        instr_shape=[16, BLOCK_M, 16])
    kv_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                        instr_shape=[16, HEAD_DIM, 16])
    op_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=kv_layout, k_width=2)
    key_of_st: gl.constexpr = gl.SliceLayout(1, st_layout)
    query_of_st: gl.constexpr = gl.SliceLayout(0, st_layout)

    k_w = k_smem.index(C).reshape([KEYS_PER_WG, HEAD_DIM])
    v_w = v_smem.index(C).reshape([KEYS_PER_WG, HEAD_DIM])
    ds_w = ds_smem.index(C)  # dSᵀ [keys, queries] of this warpgroup's keys
    # dQ's columns per warpgroup: the accumulator descriptor's box. Split (DQ_COLS = HEAD_DIM / 2, where a half
    # is whole 128-byte swizzle rows of K, dh 128): each warpgroup takes half of the columns over all
    # 2 * KEYS_PER_WG keys (both warpgroups' dSᵀ), FA3's split: half the accumulator registers and one
    # reduce-add per half. Unsplit (dh 64): each adds its own keys' partial dQ, all columns.
    DQ_COLS: gl.constexpr = desc_dqa.block_type.shape[3]
    SPLIT_DQ: gl.constexpr = DQ_COLS < HEAD_DIM
    dq_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                        instr_shape=[16, DQ_COLS, 16])
    dq_w = dq_smem.index(C)  # this warpgroup's dQ tile on its way to the TMA reduce-add
    skip_rows = skip - C * KEYS_PER_WG  # this warpgroup's first rows that repeat earlier keys (may be <= 0)
    key_ok = gl.arange(0, KEYS_PER_WG, layout=key_of_st) >= skip_rows

    dk = gl.zeros([KEYS_PER_WG, HEAD_DIM], gl.float32, layout=kv_layout)
    dv = gl.zeros([KEYS_PER_WG, HEAD_DIM], gl.float32, layout=kv_layout)
    st_zero = gl.zeros([KEYS_PER_WG, BLOCK_M], gl.float32, layout=st_layout)
    dq_zero = gl.zeros([BLOCK_M, DQ_COLS], gl.float32, layout=dq_layout)
    DQ_CHUNK: gl.constexpr = 64 if HEAD_DIM > 64 else HEAD_DIM  # unsplit dQ: columns per product
    dq_chunk_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                              instr_shape=[16, DQ_CHUNK, 16])
    dq_chunk_zero = gl.zeros([BLOCK_M, DQ_CHUNK], gl.float32, layout=dq_chunk_layout)
    stats = (bz.to(gl.int64) * H + h) * (N + L)
    q_idx = gl.arange(0, BLOCK_M, layout=gl.BlockedLayout([1], [32], [4], [0]))

    if active:
        mbarrier.wait(kv_bar, 0)
        for i in range(n_q_blocks):
            # Query block i: its set's first row (q_row0), how many rows the set has, and where its rows sit in
            # the [N + L] statistics and dQ rows.
            in_a = i < n_q_blocks_a
            q_row0 = gl.where(in_a, i, i - n_q_blocks_a) * BLOCK_M
            set_rows = gl.where(in_a, N, L)
            stat_row0 = gl.where(in_a, q_row0, N + q_row0)
            # m and delta loaded one row per thread (a wgmma-layout load would hold 16 addresses per thread
            # across the loop); spread as Sᵀ's columns while Sᵀ and dPᵀ are on the tensor cores.
            q_ok = q_row0 + q_idx < set_rows
            m = gl.load(M + stats + stat_row0 + q_idx, mask=q_ok, other=float("inf"))
            delta = gl.load(DELTA + stats + stat_row0 + q_idx, mask=q_ok, other=0.0)

            s = i % NUM_STAGES
            mbarrier.wait(qdo_ready.index(s), (i // NUM_STAGES) & 1)
            q_buf = q_bufs.index(s).reshape([BLOCK_M, HEAD_DIM])
            do_buf = do_bufs.index(s).reshape([BLOCK_M, HEAD_DIM])
            st = warpgroup_mma(k_w, q_buf.permute((1, 0)), st_zero, use_acc=False, is_async=True)
            dpt = warpgroup_mma(v_w, do_buf.permute((1, 0)), st_zero, use_acc=False, is_async=True)
            m = gl.convert_layout(m, query_of_st)
            delta = gl.convert_layout(delta, query_of_st)
            # Pᵀ while dPᵀ is still on the tensor cores, and dV's product issued before waiting for dPᵀ (wgmma
            # waits are in order: at most one product outstanding lets the later one run on).
            st = warpgroup_mma_wait(num_outstanding=1, deps=(st,))
            pt = gl.exp2(st * qk_scale - m[None, :])
            pt = gl.where(key_ok[:, None], pt, 0.0)
            pt_op = gl.convert_layout(pt.to(dtype), op_layout)
            dv = warpgroup_mma(pt_op, do_buf, dv, is_async=True)
            dpt = warpgroup_mma_wait(num_outstanding=1, deps=(dpt,))
            dst = pt * (dpt - delta[None, :])
            dst_op = gl.convert_layout(dst.to(dtype), op_layout)
            dk = warpgroup_mma(dst_op, q_buf, dk, is_async=True)
            if SPLIT_DQ:
                # dSᵀ to shared memory for both warpgroups: once the other has read the previous one (ds_free;
                # a fresh barrier passes parity 1), then all 128 threads' stores fenced and joined before
                # ds_ready tells the other.
                mbarrier.wait(ds_free.index(C), (i & 1) ^ 1)
                ds_w.store(dst.to(dtype))
                fence_async_shared()
                gl.thread_barrier()
                mbarrier.arrive(ds_ready.index(C), count=1)
                mbarrier.wait(ds_ready.index(1 - C), i & 1)
                k0 = k_smem.index(0).reshape([KEYS_PER_WG, HEAD_DIM]).slice(C * DQ_COLS, DQ_COLS, dim=1)
                k1 = k_smem.index(1).reshape([KEYS_PER_WG, HEAD_DIM]).slice(C * DQ_COLS, DQ_COLS, dim=1)
                dq = warpgroup_mma(ds_smem.index(0).permute((1, 0)), k0, dq_zero, use_acc=False, is_async=True)
                dq = warpgroup_mma(ds_smem.index(1).permute((1, 0)), k1, dq, is_async=True)
                # One wait for dV, dK and dQ: the tensor cores take them back to back.
                dv, dk, dq, pt_op, dst_op = warpgroup_mma_wait(num_outstanding=0, deps=(dv, dk, dq, pt_op, dst_op))
                mbarrier.arrive(ds_free.index(1 - C), count=1)  # the other's dSᵀ read
            else:
                # This warpgroup's keys' part of every column, DQ_CHUNK columns at a time: the accumulator of a
                # chunk is all the registers dQ holds (half of a whole dh-128 tile, which would serialize the
                # wgmmas for lack of registers).
                ds_w.store(dst.to(dtype))
                fence_async_shared()
                tma.store_wait(pendings=0)  # the previous tile's reduce has read dq_w
                for c in gl.static_range(HEAD_DIM // DQ_CHUNK):
                    dq = warpgroup_mma(ds_w.permute((1, 0)), k_w.slice(c * DQ_CHUNK, DQ_CHUNK, dim=1),
                                       dq_chunk_zero, use_acc=False, is_async=True)
                    dq = warpgroup_mma_wait(num_outstanding=0, deps=(dq,))  # in order: dV and dK are done too
                    dq_w.reshape([BLOCK_M, DQ_COLS]).slice(c * DQ_CHUNK, DQ_CHUNK, dim=1).store(dq * scale)
                dv, dk, pt_op, dst_op = warpgroup_mma_wait(num_outstanding=0, deps=(dv, dk, pt_op, dst_op))
            mbarrier.arrive(qdo_empty.index(s), count=1)  # Q, dO of stage s consumed

            # Rows past the set's end hold zeros (P = 0 there) and the reduce clips them at the tensor's end.
            if SPLIT_DQ:
                tma.store_wait(pendings=0)  # the previous tile's reduce has read dq_w
                dq_w.reshape([BLOCK_M, DQ_COLS]).store(dq * scale)  # dQ = scale * dS K
            fence_async_shared()
            col0 = C * DQ_COLS if SPLIT_DQ else 0
            if in_a:
                _tma_reduce_add(desc_dqa, [bz, h, q_row0, col0], dq_w)
            else:
                _tma_reduce_add(desc_djqa, [bz, h, q_row0, col0], dq_w)
        tma.store_wait(pendings=0)

    # dK = scale * dSᵀ Q (dS is the gradient of the scaled scores); dV = Pᵀ dO.
    dk = dk * scale
    k_load0 = k_start + C * KEYS_PER_WG
    natural0 = k_row0 + C * KEYS_PER_WG
    if k_spatial:
        _store_key_gradient(dk, DK + bz.to(gl.int64) * stride_dkb + h.to(gl.int64) * stride_dkh,
                            stride_dks, stride_dkd, k_load0, natural0, skip_rows, len_k, k_rows,
                            C, KEYS_PER_WG, HEAD_DIM, kv_layout)
        _store_key_gradient(dv, DV + bz.to(gl.int64) * stride_dvb + h.to(gl.int64) * stride_dvh,
                            stride_dvs, stride_dvd, k_load0, natural0, skip_rows, len_k, k_rows,
                            C, KEYS_PER_WG, HEAD_DIM, kv_layout)
    else:
        _store_key_gradient(dk, DJK + bz.to(gl.int64) * stride_djkb + h.to(gl.int64) * stride_djkh,
                            stride_djks, stride_djkd, k_load0, natural0, skip_rows, len_k, k_rows,
                            C, KEYS_PER_WG, HEAD_DIM, kv_layout)
        _store_key_gradient(dv, DJV + bz.to(gl.int64) * stride_djvb + h.to(gl.int64) * stride_djvh,
                            stride_djvs, stride_djvd, k_load0, natural0, skip_rows, len_k, k_rows,
                            C, KEYS_PER_WG, HEAD_DIM, kv_layout)


@gluon.jit
def joint_attention_bwd_hopper_kernel(
    desc_q, desc_k, desc_v, desc_jq, desc_jk, desc_jv, desc_do, desc_djo, desc_dqa, desc_djqa,
    M, DELTA, DK, DV, DJK, DJV,
    N_LEN, L_LEN,
    stride_dkb, stride_dkh, stride_dks, stride_dkd,
    stride_dvb, stride_dvh, stride_dvs, stride_dvd,
    stride_djkb, stride_djkh, stride_djks, stride_djkd,
    stride_djvb, stride_djvh, stride_djvs, stride_djvd,
    qk_scale, scale,
    N, L, H,
    BLOCK_M: gl.constexpr, KEYS_PER_WG: gl.constexpr, HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr,
    HAS_N_LEN: gl.constexpr, HAS_L_LEN: gl.constexpr, CONSUMER_REGS: gl.constexpr,
):
    """q/k/v/joint_*/dO/djoint_O as 4-D TMA descriptors (blocks [1, 1, BLOCK_M or KEYS_PER_WG, HEAD_DIM]);
    desc_dqa/desc_djqa: float32 [b, nh, N or L, HEAD_DIM], zeroed, where dQ accumulates (blocks
    [1, 1, BLOCK_M, HEAD_DIM / 2] to split dQ's columns between the consumers, or HEAD_DIM); M, DELTA: float32 [b, nh, N+L] (contiguous, from the preprocess); DK, DV, DJK,
    DJV: the key gradients, any strides, written completely; qk_scale = scale * log2(e) > 0."""
    dtype: gl.constexpr = desc_q.dtype
    BLOCK_N: gl.constexpr = 2 * KEYS_PER_WG
    pid_n = gl.program_id(0)
    pid_bh = gl.program_id(1)
    bz = pid_bh // H
    h = pid_bh % H
    len_a = _valid_length(N_LEN, bz, N, HAS_N_LEN)
    len_b = _valid_length(L_LEN, bz, L, HAS_L_LEN)

    # Key block: the first cdiv(N, BLOCK_N) programs take spatial keys, the rest joint keys. `_key_block` with
    # one block per set before this one gives where its load starts and how many first rows repeat keys.
    spatial_tiles = gl.cdiv(N, BLOCK_N)
    k_spatial = pid_n < spatial_tiles
    k_row0 = gl.where(k_spatial, pid_n, pid_n - spatial_tiles) * BLOCK_N
    len_k = gl.where(k_spatial, len_a, len_b)
    k_rows = gl.where(k_spatial, N, L)
    active = k_row0 < len_k
    skip = gl.maximum(k_row0 + BLOCK_N - len_k, 0)
    k_start = k_row0 - skip
    n_q_blocks_a = gl.cdiv(N, BLOCK_M)
    n_q_blocks = n_q_blocks_a + gl.cdiv(L, BLOCK_M)

    k_smem = gl.allocate_shared_memory(dtype, [2] + desc_k.block_type.shape, desc_k.layout)
    v_smem = gl.allocate_shared_memory(dtype, [2] + desc_v.block_type.shape, desc_v.layout)
    q_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES] + desc_q.block_type.shape, desc_q.layout)
    do_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES] + desc_do.block_type.shape, desc_do.layout)
    ds_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([KEYS_PER_WG, BLOCK_M], dtype)
    ds_smem = gl.allocate_shared_memory(dtype, [2, KEYS_PER_WG, BLOCK_M], ds_layout)
    dq_smem = gl.allocate_shared_memory(gl.float32, [2] + desc_dqa.block_type.shape, desc_dqa.layout)
    kv_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    qdo_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    qdo_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    ds_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    ds_free = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(kv_bar, count=1)
    for i in gl.static_range(2):
        mbarrier.init(ds_ready.index(i), count=1)
        mbarrier.init(ds_free.index(i), count=1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(qdo_ready.index(i), count=1)
        mbarrier.init(qdo_empty.index(i), count=2)

    gl.warp_specialize(
        [
            (_producer, (desc_q, desc_k, desc_v, desc_jq, desc_jk, desc_jv, desc_do, desc_djo,
                         k_smem, v_smem, q_bufs, do_bufs, kv_bar, qdo_ready, qdo_empty,
                         bz, h, k_spatial, k_start, active, n_q_blocks_a, n_q_blocks,
                         BLOCK_M, KEYS_PER_WG, NUM_STAGES)),
            (_consumer, (desc_dqa, desc_djqa, k_smem, v_smem, q_bufs, do_bufs, ds_smem, dq_smem, kv_bar,
                         qdo_ready, qdo_empty, ds_ready, ds_free, M, DELTA, DK, DV, DJK, DJV,
                         stride_dkb, stride_dkh, stride_dks, stride_dkd,
                         stride_dvb, stride_dvh, stride_dvs, stride_dvd,
                         stride_djkb, stride_djkh, stride_djks, stride_djkd,
                         stride_djvb, stride_djvh, stride_djvs, stride_djvd,
                         bz, h, k_spatial, k_start, k_row0, skip, active, len_k, k_rows,
                         n_q_blocks_a, n_q_blocks, N, L, H, qk_scale, scale,
                         0, BLOCK_M, KEYS_PER_WG, HEAD_DIM, NUM_STAGES)),
            (_consumer, (desc_dqa, desc_djqa, k_smem, v_smem, q_bufs, do_bufs, ds_smem, dq_smem, kv_bar,
                         qdo_ready, qdo_empty, ds_ready, ds_free, M, DELTA, DK, DV, DJK, DJV,
                         stride_dkb, stride_dkh, stride_dks, stride_dkd,
                         stride_dvb, stride_dvh, stride_dvs, stride_dvd,
                         stride_djkb, stride_djkh, stride_djks, stride_djkd,
                         stride_djvb, stride_djvh, stride_djvs, stride_djvd,
                         bz, h, k_spatial, k_start, k_row0, skip, active, len_k, k_rows,
                         n_q_blocks_a, n_q_blocks, N, L, H, qk_scale, scale,
                         1, BLOCK_M, KEYS_PER_WG, HEAD_DIM, NUM_STAGES)),
        ],
        [4, 4],
        [CONSUMER_REGS, CONSUMER_REGS],
    )
# fmt: on
