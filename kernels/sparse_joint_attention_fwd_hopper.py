"""Forward block-sparse joint attention for Hopper (sm_90a) in Gluon: the dense Hopper kernel's schedule
(`joint_attention_fwd_hopper.py`: its TMA producer, ping-pong consumers and epilogue, unchanged) over a key
sequence that the mask's block lists drive.

Entry point: `sparse_joint_attention_fwd_hopper_kernel`, launched by `jointattn.runtime.sparse_hopper_launch`
on the dense kernel's grid (CTAs of 2 * BLOCK_M query rows: the spatial set's, then the text set's; b * nh). The
schedule is generic over its `tile`: the dense kernel's `QueryTile` walks every key block; `SparseQueryTile`
here walks, for a spatial query CTA (its rows inside one mask query block of Q_BLOCK rows), the key tiles of
- the full blocks the mask lists for its query block (`full_kv_indices`): no element mask;
- the partial blocks (`kv_indices`): the element mask read from `partial_bits`;
- every valid text key (the dense kernel's text blocks, padding by valid length);
and, for a text query CTA, every spatial key (dense, BOX-row pieces) and every valid text key. Blocks in
neither list are never loaded.

Key tiles of BLOCK_N keys are built from pieces of BOX = min(KV_BLOCK, BLOCK_N) rows, one TMA load each into
its slice of the stage buffer: a block of KV_BLOCK >= BLOCK_N keys gives KV_BLOCK / BLOCK_N tiles, smaller
blocks (16, 32, 64 keys) are gathered BLOCK_N / KV_BLOCK to a tile (FG-Attn's fine-grained mode: full wgmma
tiles whatever the block size). A list's last tile may hold fewer pieces: the missing ones are loaded from
past the tensor's end (TMA fills them with zeros) and masked, so no key outside the lists is read.

Not taken here (the Triton sparse kernel runs them, `dispatch.sparse_hopper_unsupported` says why): a padded
spatial set (its partial last block could only be loaded by reading keys of the block before it), query
blocks that are not a multiple of the CTA's 2 * BLOCK_M rows, key blocks not a multiple of 16.
"""

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma
from triton.language.core import _aggregate as aggregate

from .joint_attention_fwd_hopper import (
    JointConfig,
    JointInputs,
    JointOutputs,
    SharedState,
    _consumer,
    _producer,
    _valid_length,
)

# Key sequence segments of a CTA, in order.
FULL = gl.constexpr(0)  # tiles of the full blocks listed for the query block
PARTIAL = gl.constexpr(1)  # tiles of its partial blocks
DENSE = gl.constexpr(2)  # every spatial key (text query CTAs)
TEXT = gl.constexpr(3)  # every valid text key


@aggregate
class BlockLists:
    """The mask's lists for one query block: counts and index rows of its full and partial blocks, and the
    partial blocks' bits (row 0 = the CTA's first query row; slot stride, row stride, word stride)."""

    full_count: gl.tensor
    full_idx: gl.tensor
    full_stride: gl.tensor
    part_count: gl.tensor
    part_idx: gl.tensor
    part_stride: gl.tensor
    bits: gl.tensor
    stride_bp: gl.tensor
    stride_br: gl.tensor
    stride_bw: gl.tensor

    @gluon.constexpr_function
    def __init__(
        self, full_count, full_idx, full_stride, part_count, part_idx, part_stride, bits, stride_bp, stride_br,
        stride_bw,
    ):  # fmt: skip
        self.full_count = full_count
        self.full_idx = full_idx
        self.full_stride = full_stride
        self.part_count = part_count
        self.part_idx = part_idx
        self.part_stride = part_stride
        self.bits = bits
        self.stride_bp = stride_bp
        self.stride_br = stride_br
        self.stride_bw = stride_bw


@aggregate
class SparseQueryTile:
    """One CTA's work (the fields the dense schedule reads, as `QueryTile`'s) and its key sequence: `n_full`
    tiles of full blocks, `n_part` of partial blocks, `n_dense` of every spatial key, then the text blocks;
    BOX-row pieces, G to a BLOCK_N-key tile, SUB to a KV_BLOCK-key block."""

    bz: gl.tensor
    h: gl.tensor
    q_row0: gl.tensor
    q_spatial: gl.tensor
    q_rows: gl.tensor
    lse_offset: gl.tensor
    lse_row0: gl.tensor
    n_kv: gl.tensor
    n_full: gl.tensor
    n_part: gl.tensor
    n_dense: gl.tensor
    n: gl.tensor
    len_b: gl.tensor
    lists: BlockLists
    KV_BLOCK: gl.constexpr
    BOX: gl.constexpr
    G: gl.constexpr
    SUB: gl.constexpr

    @gluon.constexpr_function
    def __init__(
        self, bz, h, q_row0, q_spatial, q_rows, lse_offset, lse_row0, n_kv, n_full, n_part, n_dense, n, len_b,
        lists, KV_BLOCK, BLOCK_N,
    ):  # fmt: skip
        self.bz = bz
        self.h = h
        self.q_row0 = q_row0
        self.q_spatial = q_spatial
        self.q_rows = q_rows
        self.lse_offset = lse_offset
        self.lse_row0 = lse_row0
        self.n_kv = n_kv
        self.n_full = n_full
        self.n_part = n_part
        self.n_dense = n_dense
        self.n = n
        self.len_b = len_b
        self.lists = lists
        box = min(KV_BLOCK, BLOCK_N)
        self.KV_BLOCK = gl.constexpr(KV_BLOCK)
        self.BOX = gl.constexpr(box)
        self.G = gl.constexpr(BLOCK_N // box)
        self.SUB = gl.constexpr(KV_BLOCK // box)

    @gluon.jit
    def segment(self, j):
        """Key tile j of the sequence: (segment, tile index within it)."""
        end_full = self.n_full
        end_part = end_full + self.n_part
        end_dense = end_part + self.n_dense
        kind = gl.where(
            j < end_full, FULL, gl.where(j < end_part, PARTIAL, gl.where(j < end_dense, DENSE, TEXT))
        )
        start = gl.where(
            kind == FULL, 0, gl.where(kind == PARTIAL, end_full, gl.where(kind == DENSE, end_part, end_dense))
        )
        return kind, j - start

    @gluon.jit
    def piece(self, kind, t, g):
        """Piece g of tile t of a spatial segment: (its first key, whether it exists)."""
        p = t * self.G + g
        lists = self.lists
        listed = kind != DENSE
        count = gl.where(kind == FULL, lists.full_count, lists.part_count) * self.SUB
        valid = gl.where(listed, p < count, p * self.BOX < self.n)
        slot = p // self.SUB
        sub = p - slot * self.SUB
        ptr = gl.where(
            kind == FULL, lists.full_idx + slot * lists.full_stride, lists.part_idx + slot * lists.part_stride
        )
        kb = gl.load(ptr, mask=valid & listed, other=0)
        first = gl.where(listed, kb * self.KV_BLOCK + sub * self.BOX, p * self.BOX)
        return first, valid

    @gluon.jit
    def load_key_block(self, spatial, joint, j, bar, buf, BLOCK_N: gl.constexpr):
        """Issues the TMA loads of key tile j (K through `spatial`/`joint`, or V) into `buf`, landing on `bar`:
        G pieces of a spatial segment (a missing piece from past the tensor's end: zeros), or one text block
        loaded to end at the valid text length (as the dense kernel)."""
        mbarrier.expect(bar, joint.block_type.nbytes)
        kind, t = self.segment(j)
        if kind == TEXT:
            row0 = t * BLOCK_N
            skip = gl.maximum(row0 + BLOCK_N - self.len_b, 0)
            tma.async_copy_global_to_shared(joint, [self.bz, self.h, row0 - skip, 0], bar, buf)
        else:
            for g in gl.static_range(self.G):
                first, valid = self.piece(kind, t, g)
                row = gl.where(valid, first, self.n)
                if self.G == 1:
                    tma.async_copy_global_to_shared(spatial, [self.bz, self.h, row, 0], bar, buf)
                else:
                    dst = buf.slice(g * self.BOX, self.BOX, dim=2)
                    tma.async_copy_global_to_shared(spatial, [self.bz, self.h, row, 0], bar, dst)

    @gluon.jit
    def key_info(self, j):
        """What `mask_scores` needs of key tile j, asked for before S_j is issued (its index loads then arrive
        while the wgmmas run): (segment, tile within it, whether no key of it needs a mask). A tile of full
        blocks is exact unless a piece is missing or ends past N; every other tile goes through `mask_scores`'
        mask (partial blocks need their bits; dense pieces and text blocks, which could be exact as well, are
        masked by their bounds)."""
        kind, t = self.segment(j)
        exact = kind < PARTIAL
        if exact:
            for g in gl.static_range(self.G):
                first, present = self.piece(kind, t, g)
                exact = exact & present & (first + self.BOX <= self.n)
        return kind, t, exact

    @gluon.jit
    def mask_scores(self, cfg, s, keys, C: gl.constexpr):
        """S_j of consumer C (`keys`: `key_info(j)`) at -inf where a key is not attended: past the valid text
        length, past N, in a missing piece, or (partial blocks) where the block's bits say so."""
        BLOCK_N: gl.constexpr = cfg.BLOCK_N
        BLOCK_M: gl.constexpr = cfg.BLOCK_M
        kind, t, exact = keys
        if not exact:
            cols = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, cfg.s_layout))
            lists = self.lists
            # Per key lane: its piece p of the segment, list slot and column within its block.
            p = t * self.G + cols // self.BOX
            lane = cols % self.BOX
            slot = p // self.SUB
            cin = (p - slot * self.SUB) * self.BOX + lane
            if kind == TEXT:
                skip = gl.maximum(t * BLOCK_N + BLOCK_N - self.len_b, 0)
                s = gl.where((cols >= skip)[None, :], s, float("-inf"))
            elif kind == PARTIAL:
                rows = C * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, cfg.s_layout))
                listed = (p < lists.part_count * self.SUB)[None, :] & (rows >= 0)[:, None]
                word_ptrs = (
                    lists.bits
                    + (slot * lists.stride_bp + (cin // 32) * lists.stride_bw)[None, :]
                    + (rows * lists.stride_br)[:, None]
                )
                # A missing piece reads no bits; bits past N are 0 (`partial_bits`).
                words = gl.load(word_ptrs, mask=listed, other=0)
                s = gl.where(((words >> (cin % 32)[None, :]) & 1) != 0, s, float("-inf"))
            else:
                full = kind == FULL
                valid = gl.where(full, p < lists.full_count * self.SUB, p * self.BOX < self.n)
                kb = gl.load(lists.full_idx + slot * lists.full_stride, mask=valid & full, other=0)
                key = gl.where(full, kb * self.KV_BLOCK + cin, p * self.BOX + lane)
                s = gl.where((valid & (key < self.n))[None, :], s, float("-inf"))
        return s

    @gluon.jit
    def softmax_step(self, s, m_i, l_i, qk_scale):
        """The online softmax step for a tile in which a row may see no key (its max stays -inf, it adds
        nothing)."""
        m_new = gl.maximum(m_i, gl.max(s, axis=1) * qk_scale)
        m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)
        p = gl.exp2(s * qk_scale - m_safe[:, None])
        alpha = gl.exp2(m_i - m_safe)
        l_new = l_i * alpha + gl.sum(p, axis=1)
        return p, m_new, l_new, alpha

    @gluon.jit
    def of_program(
        cfg, bz, h, q_row0, q_spatial, N, L, stride_lb, stride_lh, L_LEN, HAS_L_LEN: gl.constexpr, lists,
        KV_BLOCK: gl.constexpr,
    ):  # fmt: skip
        """The tile of the CTA at q_row0 of (batch bz, head h) (`_program_rows`) and its key sequence."""
        BLOCK_N: gl.constexpr = cfg.BLOCK_N
        box: gl.constexpr = min(KV_BLOCK, BLOCK_N)
        g: gl.constexpr = BLOCK_N // box
        sub: gl.constexpr = KV_BLOCK // box
        len_b = _valid_length(L_LEN, bz, L, HAS_L_LEN)
        n_full = gl.cdiv(lists.full_count * sub, g)
        n_part = gl.cdiv(lists.part_count * sub, g)
        n_dense = gl.where(q_spatial, 0, gl.cdiv(gl.cdiv(N, box), g))
        n_kv = n_full + n_part + n_dense + gl.cdiv(len_b, BLOCK_N)
        return SparseQueryTile(
            bz,
            h,
            q_row0,
            q_spatial,
            gl.where(q_spatial, N, L),
            bz.to(gl.int64) * stride_lb + h.to(gl.int64) * stride_lh,
            gl.where(q_spatial, q_row0, N + q_row0),
            gl.to_tensor(n_kv),
            gl.to_tensor(n_full),
            gl.to_tensor(n_part),
            gl.to_tensor(n_dense),
            gl.to_tensor(N),
            gl.to_tensor(len_b),
            lists,
            KV_BLOCK,
            BLOCK_N,
        )


@gluon.jit
def _program_rows(cfg, N, H):
    """This program's (batch, head, first query row, spatial?): grid axis 0 runs over the spatial set's CTAs of
    2 * BLOCK_M rows, then the text set's; axis 1 over b * nh (the dense kernel's grid)."""
    pid_m = gl.program_id(0)
    pid_bh = gl.program_id(1)
    spatial_tiles = gl.cdiv(N, 2 * cfg.BLOCK_M)
    q_spatial = pid_m < spatial_tiles
    q_row0 = gl.where(q_spatial, pid_m, pid_m - spatial_tiles) * (2 * cfg.BLOCK_M)
    return pid_bh // H, pid_bh % H, q_row0, q_spatial


@gluon.jit
def _lists_of(
    NUM, IDX, FNUM, FIDX, BITS,
    stride_nb, stride_nh, stride_nq, stride_ib, stride_ih, stride_iq, stride_ik,
    stride_fnb, stride_fnh, stride_fnq, stride_fib, stride_fih, stride_fiq, stride_fik,
    stride_bb, stride_bh, stride_bq, stride_bp, stride_br, stride_bw,
    bz, h, q_row0, q_spatial, Q_BLOCK: gl.constexpr,
):  # fmt: skip
    """The lists of the query block holding rows q_row0.. (counts 0 for a text query CTA)."""
    qb = q_row0 // Q_BLOCK
    r0 = q_row0 - qb * Q_BLOCK
    b64 = bz.to(gl.int64)
    h64 = h.to(gl.int64)
    q64 = qb.to(gl.int64)
    full_count = gl.load(FNUM + b64 * stride_fnb + h64 * stride_fnh + q64 * stride_fnq)
    part_count = gl.load(NUM + b64 * stride_nb + h64 * stride_nh + q64 * stride_nq)
    return BlockLists(
        gl.where(q_spatial, full_count, 0),
        FIDX + b64 * stride_fib + h64 * stride_fih + q64 * stride_fiq,
        gl.to_tensor(stride_fik),
        gl.where(q_spatial, part_count, 0),
        IDX + b64 * stride_ib + h64 * stride_ih + q64 * stride_iq,
        gl.to_tensor(stride_ik),
        BITS + b64 * stride_bb + h64 * stride_bh + q64 * stride_bq + r0.to(gl.int64) * stride_br,
        gl.to_tensor(stride_bp),
        gl.to_tensor(stride_br),
        gl.to_tensor(stride_bw),
    )


@gluon.jit
def sparse_joint_attention_fwd_hopper_kernel(
    desc_q, desc_k, desc_v, desc_jq, desc_jk, desc_jv, desc_o, desc_jo, LSE,
    NUM, IDX, FNUM, FIDX, BITS, L_LEN,
    stride_lb, stride_lh, stride_ls,
    stride_nb, stride_nh, stride_nq,
    stride_ib, stride_ih, stride_iq, stride_ik,
    stride_fnb, stride_fnh, stride_fnq,
    stride_fib, stride_fih, stride_fiq, stride_fik,
    stride_bb, stride_bh, stride_bq, stride_bp, stride_br, stride_bw,
    qk_scale,
    N, L, H,
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr,
    Q_BLOCK: gl.constexpr, KV_BLOCK: gl.constexpr, HAS_L_LEN: gl.constexpr, CONSUMER_REGS: gl.constexpr,
):  # fmt: skip
    """As the dense Hopper kernel (descriptors: the spatial k/v ones with boxes of min(KV_BLOCK, BLOCK_N) rows),
    plus the mask's tensors [b, nh, ...] (`SpatialLayout`, broadcast by stride 0) and their strides; the
    spatial set is unpadded, L_LEN: [b] valid text lengths (unused without HAS_L_LEN)."""
    cfg = JointConfig(qk_scale, BLOCK_M, BLOCK_N, HEAD_DIM, NUM_STAGES, desc_q.dtype)
    inputs = JointInputs(desc_q, desc_k, desc_v, desc_jq, desc_jk, desc_jv)
    outputs = JointOutputs(desc_o, desc_jo, LSE, gl.to_tensor(stride_ls))
    bz, h, q_row0, q_spatial = _program_rows(cfg, N, H)
    lists = _lists_of(
        NUM, IDX, FNUM, FIDX, BITS,
        stride_nb, stride_nh, stride_nq, stride_ib, stride_ih, stride_iq, stride_ik,
        stride_fnb, stride_fnh, stride_fnq, stride_fib, stride_fih, stride_fiq, stride_fik,
        stride_bb, stride_bh, stride_bq, stride_bp, stride_br, stride_bw,
        bz, h, q_row0, q_spatial, Q_BLOCK,
    )  # fmt: skip
    tile = SparseQueryTile.of_program(
        cfg, bz, h, q_row0, q_spatial, N, L, stride_lb, stride_lh, L_LEN, HAS_L_LEN, lists, KV_BLOCK
    )
    smem = SharedState.allocate(cfg, inputs)
    gl.warp_specialize(
        [
            (_producer, (cfg, inputs, smem, tile)),
            (_consumer, (cfg, outputs, smem, tile, 0)),
            (_consumer, (cfg, outputs, smem, tile, 1)),
        ],
        [4, 4],
        [CONSUMER_REGS, CONSUMER_REGS],
    )
