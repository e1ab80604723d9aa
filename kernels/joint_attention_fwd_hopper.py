"""Forward joint-attention kernel for Hopper (sm_90a) in Gluon: FlashAttention-3's schedule, two token sets.

Entry point: `joint_attention_fwd_hopper_kernel`, launched by `jointattn.runtime.hopper_launch` on a grid of
(query tiles of the spatial set + query tiles of the joint set, b * nh). It computes what
`joint_attention_fwd.py` computes (same arguments in, same out / joint_out / lse, padding from valid lengths)
for bf16/fp16, dh 64, 128 or 256 and a positive scale; every other case runs the Triton kernel. It exists because
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

State travels in aggregates, as in Triton's Gluon attention tutorial: `JointConfig` (constexpr tiles, layouts and
the softmax scale), `JointInputs` / `JointOutputs` (the descriptors each side uses), `QueryTile` (the program's
batch, head, query rows, token set, valid lengths and key-block counts) and `SharedState` (buffers and
mbarriers). The producer and consumers ask the tile for its key sequence (`n_kv`, `load_key_block`, `key_info`,
`mask_scores`, `softmax_step`), so the block-sparse kernel (`sparse_joint_attention_fwd_hopper.py`) runs this
same schedule with a tile that walks the mask's block lists. The refactor into aggregates left the generated PTX
identical, the one to tile methods reordered two address computations in the producer (same time on the H200);
`tests/hopper_fwd_fingerprints.json` pins it (`tests/test_hopper_kernel.py` checks it on CPU).

Descriptors are 4-D over each tensor as it is ([b, nh, S, dh], strides kept), block [1, 1, rows, dh], so any
layout TMA can address works without a copy. O reuses its warpgroup's Q buffer in shared memory.
"""

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.language.nvidia.hopper.tma import tensor_descriptor

# Triton 3.6 names it `_aggregate` (later versions export it as `gl.aggregate`).
from triton.language.core import _aggregate as aggregate

LN2 = gl.constexpr(0.6931471805599453)

# No `from __future__ import annotations` here: an aggregate checks its fields against its annotations as
# types.
# An aggregate's __init__ runs at compile time (`gluon.constexpr_function`: constexprs arrive unwrapped, so
# constexpr fields are wrapped again), its other methods are `gluon.jit`; an aggregate is passed by value.


@aggregate
class JointConfig:
    """The kernel's compile-time shape: tiles, pipeline depth, element type and the consumers' register
    layouts (one warpgroup: wgmma m64 tiles, 4 warps along the rows), plus the runtime softmax scale."""

    qk_scale: gl.tensor
    BLOCK_M: gl.constexpr
    BLOCK_N: gl.constexpr
    HEAD_DIM: gl.constexpr
    NUM_STAGES: gl.constexpr
    dtype: gl.constexpr
    s_layout: gl.constexpr
    o_layout: gl.constexpr
    p_layout: gl.constexpr

    @gluon.constexpr_function
    def __init__(self, qk_scale, BLOCK_M, BLOCK_N, HEAD_DIM, NUM_STAGES, dtype):
        self.qk_scale = qk_scale
        self.BLOCK_M = gl.constexpr(BLOCK_M)
        self.BLOCK_N = gl.constexpr(BLOCK_N)
        self.HEAD_DIM = gl.constexpr(HEAD_DIM)
        self.NUM_STAGES = gl.constexpr(NUM_STAGES)
        self.dtype = gl.constexpr(dtype)
        s_layout = gl.NVMMADistributedLayout(
            version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 16]
        )
        o_layout = gl.NVMMADistributedLayout(
            version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16]
        )
        self.s_layout = gl.constexpr(s_layout)
        self.o_layout = gl.constexpr(o_layout)
        self.p_layout = gl.constexpr(gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2))


@aggregate
class JointInputs:
    """TMA descriptors of q, k, v and joint_q, joint_k, joint_v: what the producer reads."""

    q: tensor_descriptor
    k: tensor_descriptor
    v: tensor_descriptor
    jq: tensor_descriptor
    jk: tensor_descriptor
    jv: tensor_descriptor

    @gluon.constexpr_function
    def __init__(self, q, k, v, jq, jk, jv):
        self.q = q
        self.k = k
        self.v = v
        self.jq = jq
        self.jk = jk
        self.jv = jv


@aggregate
class JointOutputs:
    """What the consumers write: out and joint_out (TMA descriptors), lse [b, nh, N+L] and its row stride."""

    o: tensor_descriptor
    jo: tensor_descriptor
    lse: gl.tensor
    stride_ls: gl.tensor

    @gluon.constexpr_function
    def __init__(self, o, jo, lse, stride_ls):
        self.o = o
        self.jo = jo
        self.lse = lse
        self.stride_ls = stride_ls


@aggregate
class QueryTile:
    """One CTA's work: 2 * BLOCK_M query rows of (batch bz, head h), from the spatial set (q_spatial) or the
    joint one, starting at q_row0 of a set with q_rows rows; lse's base offset and first column; both sets'
    valid lengths, the spatial set's key-block count and the key-block total."""

    bz: gl.tensor
    h: gl.tensor
    q_row0: gl.tensor
    q_spatial: gl.tensor
    q_rows: gl.tensor
    lse_offset: gl.tensor
    lse_row0: gl.tensor
    n_blocks_a: gl.tensor
    n_kv: gl.tensor
    len_a: gl.tensor
    len_b: gl.tensor

    @gluon.constexpr_function
    def __init__(
        self, bz, h, q_row0, q_spatial, q_rows, lse_offset, lse_row0, n_blocks_a, n_kv, len_a, len_b
    ):
        self.bz = bz
        self.h = h
        self.q_row0 = q_row0
        self.q_spatial = q_spatial
        self.q_rows = q_rows
        self.lse_offset = lse_offset
        self.lse_row0 = lse_row0
        self.n_blocks_a = n_blocks_a
        self.n_kv = n_kv
        self.len_a = len_a
        self.len_b = len_b

    @gluon.jit
    def of_program(
        cfg, N, L, H, stride_lb, stride_lh, N_LEN, L_LEN, HAS_N_LEN: gl.constexpr, HAS_L_LEN: gl.constexpr
    ):
        """This program's tile: grid axis 0 runs over the query tiles of the spatial set, then the joint set's
        (the first cdiv(N, 2 * BLOCK_M) programs take spatial rows); axis 1 over b * nh."""
        pid_m = gl.program_id(0)
        pid_bh = gl.program_id(1)
        bz = pid_bh // H
        h = pid_bh % H
        len_a = _valid_length(N_LEN, bz, N, HAS_N_LEN)
        len_b = _valid_length(L_LEN, bz, L, HAS_L_LEN)
        n_blocks_a = gl.cdiv(len_a, cfg.BLOCK_N)
        n_kv = n_blocks_a + gl.cdiv(len_b, cfg.BLOCK_N)
        spatial_tiles = gl.cdiv(N, 2 * cfg.BLOCK_M)
        q_spatial = pid_m < spatial_tiles
        q_row0 = gl.where(q_spatial, pid_m, pid_m - spatial_tiles) * (2 * cfg.BLOCK_M)
        q_rows = gl.where(q_spatial, N, L)
        lse_row0 = gl.where(q_spatial, q_row0, N + q_row0)
        lse_offset = bz.to(gl.int64) * stride_lb + h.to(gl.int64) * stride_lh
        # A length of 1 is specialized into a constexpr by the launcher's binder: fields are tensors.
        return QueryTile(
            bz,
            h,
            q_row0,
            q_spatial,
            q_rows,
            lse_offset,
            lse_row0,
            gl.to_tensor(n_blocks_a),
            gl.to_tensor(n_kv),
            gl.to_tensor(len_a),
            gl.to_tensor(len_b),
        )

    @gluon.jit
    def key_block(self, j, BLOCK_N: gl.constexpr):
        """Key block j of the joint sequence: (from the spatial set?, the row its load starts at, how many of
        its first columns to mask). A set's partial last block is loaded so that it ends at the set's valid
        length: padded rows never reach shared memory (a NaN there would survive P V as 0 * NaN). Its first
        columns then repeat keys of the block before, or lie before row 0 (TMA reads them as zero), and are
        masked."""
        in_a = j < self.n_blocks_a
        row0 = gl.where(in_a, j, j - self.n_blocks_a) * BLOCK_N
        skip = gl.maximum(row0 + BLOCK_N - gl.where(in_a, self.len_a, self.len_b), 0)
        return in_a, row0 - skip, skip

    @gluon.jit
    def load_key_block(self, spatial, joint, j, bar, buf, BLOCK_N: gl.constexpr):
        """Issues the TMA load of key block j (of K through `spatial`/`joint`, or of V) into `buf`, landing on
        `bar`."""
        mbarrier.expect(bar, spatial.block_type.nbytes)
        in_a, row0, skip = self.key_block(j, BLOCK_N)
        if in_a:
            tma.async_copy_global_to_shared(spatial, [self.bz, self.h, row0, 0], bar, buf)
        else:
            tma.async_copy_global_to_shared(joint, [self.bz, self.h, row0, 0], bar, buf)

    @gluon.jit
    def key_info(self, j):
        """What `mask_scores` needs of key block j, asked for before S_j is issued: here j itself."""
        return j

    @gluon.jit
    def mask_scores(self, cfg, s, j, C: gl.constexpr):
        """S_j of consumer C (j from `key_info`) with the columns `key_block` skips at -inf (only a set's
        partial last block has any)."""
        in_a, row0, skip = self.key_block(j, cfg.BLOCK_N)
        if skip > 0:
            cols = gl.arange(0, cfg.BLOCK_N, layout=gl.SliceLayout(0, cfg.s_layout))
            s = gl.where((cols >= skip)[None, :], s, float("-inf"))
        return s

    @gluon.jit
    def softmax_step(self, s, m_i, l_i, qk_scale):
        """The online softmax step: every dense key block holds a valid key (`_softmax_step`)."""
        return _softmax_step(s, m_i, l_i, qk_scale)


@aggregate
class SharedState:
    """Shared memory and mbarriers of one CTA: the two Q halves (each later reused for its O), the K and V
    rings, and the barriers: q_bar (Q landed), k_ready/v_ready[s] (stage s landed), kv_empty[s] ("K stage s
    free") and kv_empty[NUM_STAGES + s] ("V stage s free"), one arrival per consumer, and turns[C] (consumer
    C may issue its wgmmas: the ping-pong)."""

    q: gl.shared_memory_descriptor
    k: gl.shared_memory_descriptor
    v: gl.shared_memory_descriptor
    q_bar: gl.shared_memory_descriptor
    k_ready: gl.shared_memory_descriptor
    v_ready: gl.shared_memory_descriptor
    kv_empty: gl.shared_memory_descriptor
    turns: gl.shared_memory_descriptor

    @gluon.constexpr_function
    def __init__(self, q, k, v, q_bar, k_ready, v_ready, kv_empty, turns):
        self.q = q
        self.k = k
        self.v = v
        self.q_bar = q_bar
        self.k_ready = k_ready
        self.v_ready = v_ready
        self.kv_empty = kv_empty
        self.turns = turns

    @gluon.jit
    def allocate(cfg, inputs):
        """Allocates the buffers and initializes the barriers (before the partitions fork)."""
        NUM_STAGES: gl.constexpr = cfg.NUM_STAGES
        q = gl.allocate_shared_memory(cfg.dtype, [2] + inputs.q.block_type.shape, inputs.q.layout)
        # Sized by the joint set's descriptors: the block-sparse kernel's spatial ones may load smaller boxes.
        k = gl.allocate_shared_memory(cfg.dtype, [NUM_STAGES] + inputs.jk.block_type.shape, inputs.jk.layout)
        v = gl.allocate_shared_memory(cfg.dtype, [NUM_STAGES] + inputs.jv.block_type.shape, inputs.jv.layout)
        q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        k_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
        v_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
        kv_empty = gl.allocate_shared_memory(gl.int64, [2 * NUM_STAGES, 1], mbarrier.MBarrierLayout())
        turns = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        mbarrier.init(q_bar, count=1)
        for i in gl.static_range(NUM_STAGES):
            mbarrier.init(k_ready.index(i), count=1)
            mbarrier.init(v_ready.index(i), count=1)
            mbarrier.init(kv_empty.index(i), count=2)
            mbarrier.init(kv_empty.index(NUM_STAGES + i), count=2)
        for i in gl.static_range(2):
            mbarrier.init(turns.index(i), count=1)
        return SharedState(q, k, v, q_bar, k_ready, v_ready, kv_empty, turns)


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
def _producer(cfg, inputs, smem, tile):
    """TMA loads: the two Q halves, then K and V of every key block into the ring, spatial blocks first and
    joint blocks after, K one block ahead of V."""
    BLOCK_M: gl.constexpr = cfg.BLOCK_M
    BLOCK_N: gl.constexpr = cfg.BLOCK_N
    NUM_STAGES: gl.constexpr = cfg.NUM_STAGES
    bz = tile.bz
    h = tile.h
    q_row0 = tile.q_row0
    # Q: two BLOCK_M-row halves (one per consumer), one barrier. Rows past the tensor's end read as zero.
    mbarrier.expect(smem.q_bar, 2 * inputs.q.block_type.nbytes)
    if tile.q_spatial:
        tma.async_copy_global_to_shared(inputs.q, [bz, h, q_row0, 0], smem.q_bar, smem.q.index(0))
        tma.async_copy_global_to_shared(inputs.q, [bz, h, q_row0 + BLOCK_M, 0], smem.q_bar, smem.q.index(1))
    else:
        tma.async_copy_global_to_shared(inputs.jq, [bz, h, q_row0, 0], smem.q_bar, smem.q.index(0))
        tma.async_copy_global_to_shared(inputs.jq, [bz, h, q_row0 + BLOCK_M, 0], smem.q_bar, smem.q.index(1))
    # A fresh mbarrier counts as "phase 1 complete", so the first pass through the ring does not block.
    n_kv = tile.n_kv
    for j in range(n_kv + 1):
        if j < n_kv:
            s = j % NUM_STAGES
            mbarrier.wait(smem.kv_empty.index(s), ((j // NUM_STAGES) & 1) ^ 1)
            tile.load_key_block(inputs.k, inputs.jk, j, smem.k_ready.index(s), smem.k.index(s), BLOCK_N)
        if j > 0:
            sv = (j - 1) % NUM_STAGES
            mbarrier.wait(smem.kv_empty.index(NUM_STAGES + sv), (((j - 1) // NUM_STAGES) & 1) ^ 1)
            tile.load_key_block(inputs.v, inputs.jv, j - 1, smem.v_ready.index(sv), smem.v.index(sv), BLOCK_N)


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
def _consumer(cfg, outputs, smem, tile, C: gl.constexpr):
    """Consumer warpgroup C: BLOCK_M query rows, the ping-pong schedule over every key block, the epilogue."""
    BLOCK_M: gl.constexpr = cfg.BLOCK_M
    BLOCK_N: gl.constexpr = cfg.BLOCK_N
    HEAD_DIM: gl.constexpr = cfg.HEAD_DIM
    NUM_STAGES: gl.constexpr = cfg.NUM_STAGES
    dtype: gl.constexpr = cfg.dtype
    row_s: gl.constexpr = gl.SliceLayout(1, cfg.s_layout)
    row_o: gl.constexpr = gl.SliceLayout(1, cfg.o_layout)
    qk_scale = cfg.qk_scale
    n_kv = tile.n_kv
    k_bufs = smem.k
    v_bufs = smem.v
    k_ready = smem.k_ready
    v_ready = smem.v_ready
    kv_empty = smem.kv_empty

    q_buf = smem.q.index(C)
    q = q_buf.reshape([BLOCK_M, HEAD_DIM])
    my_turn = smem.turns.index(C)
    other_turn = smem.turns.index(1 - C)
    turn = 0

    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=row_s)
    l_i = gl.full([BLOCK_M], 0.0, gl.float32, layout=row_s)
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, layout=cfg.o_layout)
    s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=cfg.s_layout)
    mbarrier.wait(smem.q_bar, 0)

    if n_kv > 0:
        # Prologue: S_0 and its softmax.
        keys = tile.key_info(0)
        mbarrier.wait(k_ready.index(0), 0)
        # Consumer 0 passes first (a fresh barrier), 1 waits for it.
        mbarrier.wait(my_turn, (turn & 1) ^ (1 - C))
        turn += 1
        s = warpgroup_mma(
            q,
            k_bufs.index(0).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0)),
            s_zero,
            use_acc=False,
            is_async=True,
        )
        mbarrier.arrive(other_turn, count=1)
        s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
        mbarrier.arrive(kv_empty.index(0), count=1)  # K_0 consumed
        s = tile.mask_scores(cfg, s, keys, C)
        p, m_i, l_i, alpha = tile.softmax_step(s, m_i, l_i, qk_scale)

        # Steady state: iteration j issues S_j and P_{j-1} V_{j-1}.
        for j in range(1, n_kv):
            keys = tile.key_info(j)  # before the waits: what it loads arrives while the wgmmas run
            st = j % NUM_STAGES
            pst = (j - 1) % NUM_STAGES
            mbarrier.wait(k_ready.index(st), (j // NUM_STAGES) & 1)
            mbarrier.wait(v_ready.index(pst), ((j - 1) // NUM_STAGES) & 1)
            mbarrier.wait(my_turn, (turn & 1) ^ (1 - C))
            turn += 1
            # p stays fp32 until here, so no softmax instruction writes registers the in-flight wgmma reads.
            p_op = gl.convert_layout(p.to(dtype), cfg.p_layout)
            s = warpgroup_mma(
                q,
                k_bufs.index(st).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0)),
                s_zero,
                use_acc=False,
                is_async=True,
            )
            acc = warpgroup_mma(p_op, v_bufs.index(pst).reshape([BLOCK_N, HEAD_DIM]), acc, is_async=True)
            mbarrier.arrive(other_turn, count=1)
            s = warpgroup_mma_wait(num_outstanding=1, deps=(s,))  # S_j done, P V still in flight
            mbarrier.arrive(kv_empty.index(st), count=1)  # K_j consumed
            s = tile.mask_scores(cfg, s, keys, C)
            p, m_i, l_i, alpha = tile.softmax_step(s, m_i, l_i, qk_scale)
            acc = _wait_pv_in_own_block(acc, p_op, qk_scale)
            mbarrier.arrive(kv_empty.index(NUM_STAGES + pst), count=1)  # V_{j-1} consumed
            acc = acc * gl.convert_layout(alpha, row_o)[:, None]

        # Tail: P V of the last block.
        last = (n_kv - 1) % NUM_STAGES
        mbarrier.wait(v_ready.index(last), ((n_kv - 1) // NUM_STAGES) & 1)
        p_op = gl.convert_layout(p.to(dtype), cfg.p_layout)
        acc = warpgroup_mma(p_op, v_bufs.index(last).reshape([BLOCK_N, HEAD_DIM]), acc, is_async=True)
        acc, p_op = warpgroup_mma_wait(num_outstanding=0, deps=(acc, p_op))
        mbarrier.arrive(kv_empty.index(NUM_STAGES + last), count=1)

    # Epilogue: rows with no valid key (l = 0) get 0 and -inf instead of 0/0; a NaN keeps its row NaN (SDPA's).
    seen = l_i != 0.0
    lse = gl.where(seen, (m_i + gl.log2(gl.where(seen, l_i, 1.0))) * LN2, float("-inf"))
    inv_l = gl.where(seen, 1.0 / gl.where(seen, l_i, 1.0), 0.0)
    acc = acc * gl.convert_layout(inv_l, row_o)[:, None]
    q_row0 = tile.q_row0
    rows = q_row0 + C * BLOCK_M + gl.arange(0, BLOCK_M, layout=row_s)
    gl.store(
        outputs.lse
        + tile.lse_offset
        + (tile.lse_row0 + C * BLOCK_M + gl.arange(0, BLOCK_M, layout=row_s)).to(gl.int64)
        * outputs.stride_ls,
        lse,
        mask=rows < tile.q_rows,
    )
    # O reuses this warpgroup's Q buffer (its last reader, the final S wgmma, has completed).
    q.store(acc.to(dtype))
    fence_async_shared()
    if tile.q_spatial:
        tma.async_copy_shared_to_global(outputs.o, [tile.bz, tile.h, q_row0 + C * BLOCK_M, 0], q_buf)
    else:
        tma.async_copy_shared_to_global(outputs.jo, [tile.bz, tile.h, q_row0 + C * BLOCK_M, 0], q_buf)
    tma.store_wait(pendings=0)


@gluon.jit
def joint_attention_fwd_hopper_kernel(
    desc_q, desc_k, desc_v, desc_jq, desc_jk, desc_jv, desc_o, desc_jo, LSE,
    N_LEN, L_LEN,
    stride_lb, stride_lh, stride_ls,
    qk_scale,
    N, L, H,
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr,
    HAS_N_LEN: gl.constexpr, HAS_L_LEN: gl.constexpr, CONSUMER_REGS: gl.constexpr,
):  # fmt: skip
    """q/k/v/joint_*/out/joint_out as 4-D TMA descriptors (block [1, 1, rows, HEAD_DIM]); LSE [b, nh, N+L] f32;
    N_LEN/L_LEN: [b] valid lengths (unused without HAS_*_LEN); qk_scale = scale * log2(e), positive."""
    cfg = JointConfig(qk_scale, BLOCK_M, BLOCK_N, HEAD_DIM, NUM_STAGES, desc_q.dtype)
    inputs = JointInputs(desc_q, desc_k, desc_v, desc_jq, desc_jk, desc_jv)
    outputs = JointOutputs(desc_o, desc_jo, LSE, gl.to_tensor(stride_ls))
    tile = QueryTile.of_program(cfg, N, L, H, stride_lb, stride_lh, N_LEN, L_LEN, HAS_N_LEN, HAS_L_LEN)
    smem = SharedState.allocate(cfg, inputs)
    # The argument tuples are written inline: a tuple bound to a name first turns constexprs into tensors.
    gl.warp_specialize(
        [
            (_producer, (cfg, inputs, smem, tile)),
            (_consumer, (cfg, outputs, smem, tile, 0)),
            (_consumer, (cfg, outputs, smem, tile, 1)),
        ],
        [4, 4],
        [CONSUMER_REGS, CONSUMER_REGS],
    )
