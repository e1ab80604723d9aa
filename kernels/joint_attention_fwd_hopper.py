"""Forward joint-attention kernel for Hopper (sm_90a) in Gluon: FlashAttention-3's schedule, two token sets.

Entry point: `joint_attention_fwd_hopper_kernel`, launched by `jointattn.runtime.hopper_launch` on a grid of
(query tiles of the spatial set + query tiles of the joint set, b * nh). It computes what
`joint_attention_fwd.py` computes (same arguments in, same out / joint_out / lse, padding from valid lengths)
for bf16/fp16, dh 64 or 128 and a positive scale; every other case runs the Triton kernel. It exists because
Triton 3.6 waits on each q.kᵀ wgmma as soon as it is issued, so the softmax never overlaps the tensor cores
(`benchmarks/NOTES-triton.md`); Gluon lets the schedule be written out.

One CTA takes 2 * BLOCK_M query rows of one (batch, head) and runs three partitions:
- `_producer` (the default partition, 4 warps, 24 registers): TMA loads of the two Q halves, then K and V of
  every key block into a NUM_STAGES-deep ring, spatial blocks first and joint blocks after (no cat: each block
  is read from its own tensor). K runs one block ahead of V, the order the consumers use them in.
- two `_consumer` partitions C = 0, 1 (one warpgroup each, 240 registers): in iteration j, issue S_j = Q K_jᵀ and
  O += P_{j-1} V_{j-1} asynchronously, wait for S_j only, run the softmax of S_j while P V is on the tensor
  cores, then wait for it. An mbarrier pair makes the two warpgroups take turns issuing (ping-pong), so one's
  softmax also overlaps the other's matrix products.
- Padding: a token set's key blocks stop at its valid length. Its partial last block is loaded ending at
  that length (its start may lie before row 0, which TMA zero-fills), and the columns it shares with the block
  before are masked with -inf, so no padded row is ever read. A row with no valid key at all gets out = 0 and
  lse = -inf, as the exact reference does.

Descriptors are 4-D over each tensor as it is ([b, nh, S, dh], strides kept), block [1, 1, rows, dh], so any
layout TMA can address works without a copy. O reuses its warpgroup's Q buffer in shared memory.
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

LN2 = gl.constexpr(0.6931471805599453)

# Gluon needs the warp_specialize argument tuples written inline (a tuple bound to a name first turns its
# constexprs into tensors), so argument lists repeat; kernel code keeps them on shared lines.
# fmt: off


@gluon.jit
def _key_block(j, n_blocks_a, len_a, len_b, BLOCK_N: gl.constexpr):
    """Key block j of the joint sequence: (from the spatial set?, the row its load starts at, how many of its
    first columns to mask). A set's partial last block is loaded so that it ends at the set's valid length:
    padded rows never reach shared memory (a NaN there would survive P V as 0 * NaN). Its first columns then
    repeat keys of the block before, or lie before row 0 (TMA reads them as zero), and are masked."""
    in_a = j < n_blocks_a
    row0 = gl.where(in_a, j, j - n_blocks_a) * BLOCK_N
    skip = gl.maximum(row0 + BLOCK_N - gl.where(in_a, len_a, len_b), 0)
    return in_a, row0 - skip, skip


@gluon.jit
def _producer(desc_q, desc_k, desc_v, desc_jq, desc_jk, desc_jv,
              q_smem, k_bufs, v_bufs, q_bar, k_ready, v_ready, kv_empty,
              bz, h, q_row0, q_spatial, n_blocks_a, n_kv, len_a, len_b,
              BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr):
    # Q: two BLOCK_M-row halves (one per consumer), one barrier. Rows past the tensor's end read as zero.
    mbarrier.expect(q_bar, 2 * desc_q.block_type.nbytes)
    if q_spatial:
        tma.async_copy_global_to_shared(desc_q, [bz, h, q_row0, 0], q_bar, q_smem.index(0))
        tma.async_copy_global_to_shared(desc_q, [bz, h, q_row0 + BLOCK_M, 0], q_bar, q_smem.index(1))
    else:
        tma.async_copy_global_to_shared(desc_jq, [bz, h, q_row0, 0], q_bar, q_smem.index(0))
        tma.async_copy_global_to_shared(desc_jq, [bz, h, q_row0 + BLOCK_M, 0], q_bar, q_smem.index(1))
    # kv_empty[s]: "K stage s free", kv_empty[NUM_STAGES + s]: "V stage s free" (one arrival per consumer). A
    # fresh mbarrier counts as "phase 1 complete", so the first pass through the ring does not block.
    for j in range(n_kv + 1):
        if j < n_kv:
            s = j % NUM_STAGES
            mbarrier.wait(kv_empty.index(s), ((j // NUM_STAGES) & 1) ^ 1)
            mbarrier.expect(k_ready.index(s), desc_k.block_type.nbytes)
            in_a, row0, skip = _key_block(j, n_blocks_a, len_a, len_b, BLOCK_N)
            if in_a:
                tma.async_copy_global_to_shared(desc_k, [bz, h, row0, 0], k_ready.index(s), k_bufs.index(s))
            else:
                tma.async_copy_global_to_shared(desc_jk, [bz, h, row0, 0], k_ready.index(s), k_bufs.index(s))
        if j > 0:
            sv = (j - 1) % NUM_STAGES
            mbarrier.wait(kv_empty.index(NUM_STAGES + sv), (((j - 1) // NUM_STAGES) & 1) ^ 1)
            mbarrier.expect(v_ready.index(sv), desc_v.block_type.nbytes)
            in_a, row0, skip = _key_block(j - 1, n_blocks_a, len_a, len_b, BLOCK_N)
            if in_a:
                tma.async_copy_global_to_shared(desc_v, [bz, h, row0, 0], v_ready.index(sv), v_bufs.index(sv))
            else:
                tma.async_copy_global_to_shared(desc_jv, [bz, h, row0, 0], v_ready.index(sv), v_bufs.index(sv))


@gluon.jit
def _scores_of_block(s, j, n_blocks_a, len_a, len_b, BLOCK_N: gl.constexpr, s_layout: gl.constexpr):
    """S_j with the columns `_key_block` skips at -inf (only a set's partial last block has any)."""
    in_a, row0, skip = _key_block(j, n_blocks_a, len_a, len_b, BLOCK_N)
    if skip > 0:
        cols = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
        s = gl.where((cols >= skip)[None, :], s, float("-inf"))
    return s


@gluon.jit
def _softmax_step(s, m_i, l_i, qk_scale):
    """One block of the online softmax in base 2 (qk_scale = scale * log2(e) > 0): p, new max, sum, alpha.
    Every block holds at least one valid key, so the new max is finite."""
    m_new = gl.maximum(m_i, gl.max(s, axis=1) * qk_scale)
    p = gl.exp2(s * qk_scale - m_new[:, None])
    alpha = gl.exp2(m_i - m_new)
    l_new = l_i * alpha + gl.sum(p, axis=1)
    return p, m_new, l_new, alpha


@gluon.jit
def _wait_pv_in_own_block(acc, p_op, opaque):
    """Waits for P V behind an always-true branch (opaque = qk_scale != 0). In one basic block ptxas hoists
    the wait above the softmax it should overlap; a block boundary keeps it below. The never-taken arm differs
    so LLVM cannot merge the two."""
    if opaque != 0.0:
        acc_done, p_done = warpgroup_mma_wait(num_outstanding=0, deps=(acc, p_op))
    else:
        gl.thread_barrier()
        acc_done, p_done = warpgroup_mma_wait(num_outstanding=0, deps=(acc, p_op))
    return acc_done


@gluon.jit
def _consumer(desc_o, desc_jo, LSE, q_smem, k_bufs, v_bufs, q_bar, k_ready, v_ready, kv_empty, sched,
              bz, h, q_row0, q_spatial, q_rows, lse_offset, lse_row0, stride_ls,
              n_blocks_a, n_kv, len_a, len_b, qk_scale,
              C: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
              NUM_STAGES: gl.constexpr):
    dtype: gl.constexpr = desc_o.dtype
    # One warpgroup: wgmma m64 tiles, 4 warps along the rows.
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)

    q_buf = q_smem.index(C)
    q = q_buf.reshape([BLOCK_M, HEAD_DIM])
    my_turn = sched.index(C)
    other_turn = sched.index(1 - C)
    turn = 0

    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=row_s)
    l_i = gl.full([BLOCK_M], 0.0, gl.float32, layout=row_s)
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, layout=o_layout)
    s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=s_layout)
    mbarrier.wait(q_bar, 0)

    if n_kv > 0:
        # Prologue: S_0 and its softmax.
        mbarrier.wait(k_ready.index(0), 0)
        mbarrier.wait(my_turn, (turn & 1) ^ (1 - C))  # consumer 0 passes first (fresh barrier), 1 waits for it
        turn += 1
        s = warpgroup_mma(q, k_bufs.index(0).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0)), s_zero,
                          use_acc=False, is_async=True)
        mbarrier.arrive(other_turn, count=1)
        s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
        mbarrier.arrive(kv_empty.index(0), count=1)  # K_0 consumed
        s = _scores_of_block(s, 0, n_blocks_a, len_a, len_b, BLOCK_N, s_layout)
        p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale)

        # Steady state: iteration j issues S_j and P_{j-1} V_{j-1}.
        for j in range(1, n_kv):
            st = j % NUM_STAGES
            pst = (j - 1) % NUM_STAGES
            mbarrier.wait(k_ready.index(st), (j // NUM_STAGES) & 1)
            mbarrier.wait(v_ready.index(pst), ((j - 1) // NUM_STAGES) & 1)
            mbarrier.wait(my_turn, (turn & 1) ^ (1 - C))
            turn += 1
            # p stays fp32 until here, so no softmax instruction writes registers the in-flight wgmma reads.
            p_op = gl.convert_layout(p.to(dtype), p_layout)
            s = warpgroup_mma(q, k_bufs.index(st).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0)), s_zero,
                              use_acc=False, is_async=True)
            acc = warpgroup_mma(p_op, v_bufs.index(pst).reshape([BLOCK_N, HEAD_DIM]), acc, is_async=True)
            mbarrier.arrive(other_turn, count=1)
            s = warpgroup_mma_wait(num_outstanding=1, deps=(s,))  # S_j done, P V still in flight
            mbarrier.arrive(kv_empty.index(st), count=1)  # K_j consumed
            s = _scores_of_block(s, j, n_blocks_a, len_a, len_b, BLOCK_N, s_layout)
            p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale)
            acc = _wait_pv_in_own_block(acc, p_op, qk_scale)
            mbarrier.arrive(kv_empty.index(NUM_STAGES + pst), count=1)  # V_{j-1} consumed
            acc = acc * gl.convert_layout(alpha, row_o)[:, None]

        # Tail: P V of the last block.
        last = (n_kv - 1) % NUM_STAGES
        mbarrier.wait(v_ready.index(last), ((n_kv - 1) // NUM_STAGES) & 1)
        p_op = gl.convert_layout(p.to(dtype), p_layout)
        acc = warpgroup_mma(p_op, v_bufs.index(last).reshape([BLOCK_N, HEAD_DIM]), acc, is_async=True)
        acc, p_op = warpgroup_mma_wait(num_outstanding=0, deps=(acc, p_op))
        mbarrier.arrive(kv_empty.index(NUM_STAGES + last), count=1)

    # Epilogue: rows with no valid key (l = 0) get 0 and -inf instead of 0/0; a NaN keeps its row NaN (SDPA's).
    seen = l_i != 0.0
    lse = gl.where(seen, (m_i + gl.log2(gl.where(seen, l_i, 1.0))) * LN2, float("-inf"))
    inv_l = gl.where(seen, 1.0 / gl.where(seen, l_i, 1.0), 0.0)
    acc = acc * gl.convert_layout(inv_l, row_o)[:, None]
    rows = q_row0 + C * BLOCK_M + gl.arange(0, BLOCK_M, layout=row_s)
    gl.store(LSE + lse_offset + (lse_row0 + C * BLOCK_M + gl.arange(0, BLOCK_M, layout=row_s)).to(gl.int64)
             * stride_ls, lse, mask=rows < q_rows)
    # O reuses this warpgroup's Q buffer (its last reader, the final S wgmma, has completed).
    q.store(acc.to(dtype))
    fence_async_shared()
    if q_spatial:
        tma.async_copy_shared_to_global(desc_o, [bz, h, q_row0 + C * BLOCK_M, 0], q_buf)
    else:
        tma.async_copy_shared_to_global(desc_jo, [bz, h, q_row0 + C * BLOCK_M, 0], q_buf)
    tma.store_wait(pendings=0)


@gluon.jit
def _valid_length(LENGTHS, bz, size, HAS_LENGTHS: gl.constexpr):
    """LENGTHS[bz] clamped to [0, size], or `size` without a lengths tensor."""
    if HAS_LENGTHS:
        n = gl.load(LENGTHS + bz).to(gl.int32)
        n = gl.minimum(gl.maximum(n, 0), size)
    else:
        n = size
    return n


@gluon.jit
def joint_attention_fwd_hopper_kernel(
    desc_q, desc_k, desc_v, desc_jq, desc_jk, desc_jv, desc_o, desc_jo, LSE,
    N_LEN, L_LEN,
    stride_lb, stride_lh, stride_ls,
    qk_scale,
    N, L, H,
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr,
    HAS_N_LEN: gl.constexpr, HAS_L_LEN: gl.constexpr, CONSUMER_REGS: gl.constexpr,
):
    """q/k/v/joint_*/out/joint_out as 4-D TMA descriptors (block [1, 1, rows, HEAD_DIM]); LSE [b, nh, N+L] f32;
    N_LEN/L_LEN: [b] valid lengths (unused without HAS_*_LEN); qk_scale = scale * log2(e), positive."""
    dtype: gl.constexpr = desc_q.dtype
    pid_m = gl.program_id(0)
    pid_bh = gl.program_id(1)
    bz = pid_bh // H
    h = pid_bh % H
    len_a = _valid_length(N_LEN, bz, N, HAS_N_LEN)
    len_b = _valid_length(L_LEN, bz, L, HAS_L_LEN)
    n_blocks_a = gl.cdiv(len_a, BLOCK_N)
    n_kv = n_blocks_a + gl.cdiv(len_b, BLOCK_N)

    # Query tile: the first cdiv(N, 2 * BLOCK_M) programs take spatial rows, the rest joint rows.
    spatial_tiles = gl.cdiv(N, 2 * BLOCK_M)
    q_spatial = pid_m < spatial_tiles
    q_row0 = gl.where(q_spatial, pid_m, pid_m - spatial_tiles) * (2 * BLOCK_M)
    q_rows = gl.where(q_spatial, N, L)
    lse_row0 = gl.where(q_spatial, q_row0, N + q_row0)
    lse_offset = bz.to(gl.int64) * stride_lb + h.to(gl.int64) * stride_lh

    q_smem = gl.allocate_shared_memory(dtype, [2] + desc_q.block_type.shape, desc_q.layout)
    k_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES] + desc_k.block_type.shape, desc_k.layout)
    v_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES] + desc_v.block_type.shape, desc_v.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    kv_empty = gl.allocate_shared_memory(gl.int64, [2 * NUM_STAGES, 1], mbarrier.MBarrierLayout())  # K | V
    sched = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(kv_empty.index(i), count=2)
        mbarrier.init(kv_empty.index(NUM_STAGES + i), count=2)
    for i in gl.static_range(2):
        mbarrier.init(sched.index(i), count=1)

    gl.warp_specialize(
        [
            (_producer, (desc_q, desc_k, desc_v, desc_jq, desc_jk, desc_jv,
                         q_smem, k_bufs, v_bufs, q_bar, k_ready, v_ready, kv_empty,
                         bz, h, q_row0, q_spatial, n_blocks_a, n_kv, len_a, len_b,
                         BLOCK_M, BLOCK_N, NUM_STAGES)),
            (_consumer, (desc_o, desc_jo, LSE, q_smem, k_bufs, v_bufs, q_bar, k_ready, v_ready, kv_empty, sched,
                         bz, h, q_row0, q_spatial, q_rows, lse_offset, lse_row0, stride_ls,
                         n_blocks_a, n_kv, len_a, len_b, qk_scale,
                         0, BLOCK_M, BLOCK_N, HEAD_DIM, NUM_STAGES)),
            (_consumer, (desc_o, desc_jo, LSE, q_smem, k_bufs, v_bufs, q_bar, k_ready, v_ready, kv_empty, sched,
                         bz, h, q_row0, q_spatial, q_rows, lse_offset, lse_row0, stride_ls,
                         n_blocks_a, n_kv, len_a, len_b, qk_scale,
                         1, BLOCK_M, BLOCK_N, HEAD_DIM, NUM_STAGES)),
        ],
        [4, 4],
        [CONSUMER_REGS, CONSUMER_REGS],
    )
# fmt: on
