"""Forward Triton kernel of block-sparse joint attention: the dense kernel's schedule (`joint_attention_fwd.py`,
whose tile loads, online-softmax steps and text-key loop it reuses) with the spatial key loop of a spatial query
tile driven by the mask's block lists.

Entry point: `sparse_joint_attention_fwd_kernel`, launched by `jointattn.runtime.sparse_triton_runtime` on a
grid of (query tiles of the spatial set + query tiles of the text set, b * nh). A spatial query tile (BLOCK_M
rows inside one mask query block of Q_BLOCK rows) walks
- the full key blocks of its row (`full_kv_indices`): every key attended, no element mask;
- the partial key blocks (`kv_indices`): the element mask is read from `partial_bits` (slot i of the list);
- every valid text key (the dense kernel's `attend_token_set`).
Blocks in neither list are never loaded. A key block of KV_BLOCK >= BLOCK_N keys is walked in BLOCK_N sub-tiles;
smaller blocks (16 or 32 keys) are gathered, BLOCK_N / KV_BLOCK listed blocks per tile (FG-Attn's fine-grained
mode: full tensor-core tiles whatever the block size). Each list is one flat, branch-free loop over its tiles,
which Triton software-pipelines. Keys past the spatial valid length are masked. Text query tiles attend every
valid key, as in the dense kernel.

A row may see no key in a partial sub-tile (or at all): `masked_step` then keeps its running max at -inf and
adds nothing, where the dense step assumes every block holds a valid key.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .joint_attention_fwd import attend_token_set, load_tile, store_tile, valid_length

# fmt: off


@triton.jit
def masked_step(acc, l_i, m_i, q, k, v, allowed, qk_scale, DOT_PRECISION: tl.constexpr):
    """Folds one key tile into (acc, l_i, m_i), counting only the `allowed` [BLOCK_M, BLOCK_N] scores; rows
    that allow none stay as they were (no -inf - -inf)."""
    qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
    s = tl.where(allowed, qk * qk_scale, float("-inf"))
    m_ij = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_ij == float("-inf"), 0.0, m_ij)
    p = tl.math.exp2(s - m_safe[:, None])
    alpha = tl.math.exp2(m_i - m_safe)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
    l_i = l_i * alpha + tl.sum(p, 1)
    return acc, l_i, m_ij


@triton.jit
def partial_tile_mask(bits_ptr, r_in, c_in, stride_r, stride_w):
    """[len(r_in), len(c_in)] bool from one partial block's bits (row r_in, key c_in within the block)."""
    words = tl.load(bits_ptr + r_in[:, None] * stride_r + (c_in // 32)[None, :] * stride_w)
    return ((words >> (c_in % 32)[None, :]) & 1) != 0


@triton.jit
def list_tiles(count, KV_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr):
    """How many key tiles of BLOCK_N keys cover `count` listed blocks: KV_BLOCK / BLOCK_N tiles per block, or,
    for blocks smaller than a tile, BLOCK_N / KV_BLOCK blocks gathered into each tile."""
    if KV_BLOCK >= BLOCK_N:
        return count * (KV_BLOCK // BLOCK_N)
    return tl.cdiv(count, BLOCK_N // KV_BLOCK)


@triton.jit
def list_tile_keys(t, count, idx_ptr, stride_idx, key_end, KV_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr):
    """Tile t of a block list: per key lane its key index, list slot, column within its block, and whether it is
    a listed key below key_end. Blocks of at least a tile are walked a sub-tile at a time (contiguous keys);
    smaller blocks are gathered, BLOCK_N / KV_BLOCK listed blocks per tile (FG-Attn's packing: full tensor-core
    tiles from 16-key blocks, each block's rows contiguous)."""
    lane = tl.arange(0, BLOCK_N)
    if KV_BLOCK >= BLOCK_N:
        i = t // (KV_BLOCK // BLOCK_N)
        sub = t - i * (KV_BLOCK // BLOCK_N)
        kb = tl.load(idx_ptr + i * stride_idx)
        c_in = sub * BLOCK_N + lane
        keys = kb * KV_BLOCK + c_in
        slots = i + 0 * lane
        valid = keys < key_end
    else:
        slots = t * (BLOCK_N // KV_BLOCK) + lane // KV_BLOCK
        listed = slots < count
        kb = tl.load(idx_ptr + slots * stride_idx, mask=listed, other=0)
        c_in = lane % KV_BLOCK
        keys = kb * KV_BLOCK + c_in
        valid = listed & (keys < key_end)
    return keys, slots, c_in, valid


@triton.jit
def load_keys(base, keys, valid, stride_s, stride_d, BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr):
    """[BLOCK_N, BLOCK_D] rows `keys` of one (batch, head) slice; rows not `valid` and columns >= HEAD_DIM read
    as zero (a padded or unlisted row is never loaded)."""
    cols = tl.arange(0, BLOCK_D)
    ptrs = base + keys[:, None] * stride_s + cols[None, :] * stride_d
    return tl.load(ptrs, mask=valid[:, None] & (cols < HEAD_DIM)[None, :], other=0.0)


@triton.jit
def tile_bits(bits_ptr, slots, r_in, c_in, stride_p, stride_r, stride_w):
    """[BLOCK_M, BLOCK_N] bool: the partial blocks' bits for rows r_in and key lanes (slot, column c_in)."""
    words = tl.load(bits_ptr + slots[None, :] * stride_p + r_in[:, None] * stride_r + (c_in // 32)[None, :] * stride_w)
    return ((words >> (c_in % 32)[None, :]) & 1) != 0


@triton.jit
def load_list_tile(
    t, count, idx_ptr, stride_idx, n_end, k_base, v_base, stride_ks, stride_kd, stride_vs, stride_vd,
    bits_ptr, stride_bp, stride_br, stride_bw, r_in,
    PARTIAL: tl.constexpr, KV_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HEAD_DIM: tl.constexpr,
):
    """Tile t of a block list, as the forward and the dq kernel walk it: (k, v, allowed [BLOCK_M, BLOCK_N])."""
    keys, slots, c_in, valid = list_tile_keys(t, count, idx_ptr, stride_idx, n_end, KV_BLOCK, BLOCK_N)
    k = load_keys(k_base, keys, valid, stride_ks, stride_kd, BLOCK_D, HEAD_DIM)
    v = load_keys(v_base, keys, valid, stride_vs, stride_vd, BLOCK_D, HEAD_DIM)
    allowed = valid[None, :] & (r_in >= 0)[:, None]
    if PARTIAL:
        allowed = allowed & tile_bits(bits_ptr, slots, r_in, c_in, stride_bp, stride_br, stride_bw)
    return k, v, allowed


@triton.jit
def attend_block_list(
    acc, l_i, m_i, q, k_base, v_base, n_end, stride_ks, stride_kd, stride_vs, stride_vd, qk_scale,
    num_ptr, idx_ptr, stride_idx, bits_ptr, stride_bp, stride_br, stride_bw, r_in,
    PARTIAL: tl.constexpr, KV_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HEAD_DIM: tl.constexpr, POSITIVE_SCALE: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Attends q to the spatial key blocks of one list (full, or partial with their bits): one flat loop over
    the list's key tiles, branch-free, so that Triton pipelines it (the index loads with the tiles they name)."""
    count = tl.load(num_ptr)
    for t in tl.range(0, list_tiles(count, KV_BLOCK, BLOCK_N)):
        k, v, allowed = load_list_tile(t, count, idx_ptr, stride_idx, n_end, k_base, v_base, stride_ks, stride_kd,
                                       stride_vs, stride_vd, bits_ptr, stride_bp, stride_br, stride_bw, r_in,
                                       PARTIAL, KV_BLOCK, BLOCK_N, BLOCK_D, HEAD_DIM)
        acc, l_i, m_i = masked_step(acc, l_i, m_i, q, k, v, allowed, qk_scale, DOT_PRECISION)
    return acc, l_i, m_i


@triton.jit
def sparse_joint_attention_fwd_kernel(
    Q, K, V, JQ, JK, JV, Out, JointOut, LSE,
    NUM, IDX, FNUM, FIDX, BITS,
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
    stride_nb, stride_nh, stride_nq,
    stride_ib, stride_ih, stride_iq, stride_ik,
    stride_fnb, stride_fnh, stride_fnq,
    stride_fib, stride_fih, stride_fiq, stride_fik,
    stride_bb, stride_bh, stride_bq, stride_bp, stride_br, stride_bw,
    qk_scale,
    N, L, H,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    Q_BLOCK: tl.constexpr, KV_BLOCK: tl.constexpr,
    HAS_N_LEN: tl.constexpr, HAS_L_LEN: tl.constexpr, POSITIVE_SCALE: tl.constexpr, DOT_PRECISION: tl.constexpr,
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
    jk_base = JK + bz64 * stride_jkb + h64 * stride_jkh
    jv_base = JV + bz64 * stride_jvb + h64 * stride_jvh

    spatial_blocks = tl.cdiv(N, BLOCK_M)
    is_spatial = pid_m < spatial_blocks
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    if is_spatial:
        row0 = pid_m * BLOCK_M
        q = load_tile(Q + bz64 * stride_qb + h64 * stride_qh, None, 0, 0, row0, N, stride_qs, stride_qd,
                      BLOCK_M, BLOCK_D, HEAD_DIM, True, False)
        qb = row0 // Q_BLOCK
        r_in = row0 - qb * Q_BLOCK + tl.arange(0, BLOCK_M)
        acc, l_i, m_i = attend_block_list(
            acc, l_i, m_i, q, k_base, v_base, n_end, stride_ks, stride_kd, stride_vs, stride_vd, qk_scale,
            FNUM + bz64 * stride_fnb + h64 * stride_fnh + qb * stride_fnq,
            FIDX + bz64 * stride_fib + h64 * stride_fih + qb * stride_fiq, stride_fik,
            BITS, 0, 0, 0, r_in,
            False, KV_BLOCK, BLOCK_N, BLOCK_D, HEAD_DIM, POSITIVE_SCALE, DOT_PRECISION,
        )
        acc, l_i, m_i = attend_block_list(
            acc, l_i, m_i, q, k_base, v_base, n_end, stride_ks, stride_kd, stride_vs, stride_vd, qk_scale,
            NUM + bz64 * stride_nb + h64 * stride_nh + qb * stride_nq,
            IDX + bz64 * stride_ib + h64 * stride_ih + qb * stride_iq, stride_ik,
            BITS + bz64 * stride_bb + h64 * stride_bh + qb * stride_bq, stride_bp, stride_br, stride_bw, r_in,
            True, KV_BLOCK, BLOCK_N, BLOCK_D, HEAD_DIM, POSITIVE_SCALE, DOT_PRECISION,
        )
    else:
        row0 = (pid_m - spatial_blocks) * BLOCK_M
        q = load_tile(JQ + bz64 * stride_jqb + h64 * stride_jqh, None, 0, 0, row0, L, stride_jqs, stride_jqd,
                      BLOCK_M, BLOCK_D, HEAD_DIM, True, False)
        acc, l_i, m_i = attend_token_set(
            acc, l_i, m_i, q, k_base, v_base, None, None, bz, h, n_end, stride_ks, stride_kd, stride_vs, stride_vd,
            qk_scale, BLOCK_N, BLOCK_D, HEAD_DIM, POSITIVE_SCALE, DOT_PRECISION, False, False,
        )
    acc, l_i, m_i = attend_token_set(
        acc, l_i, m_i, q, jk_base, jv_base, None, None, bz, h, l_end, stride_jks, stride_jkd, stride_jvs, stride_jvd,
        qk_scale, BLOCK_N, BLOCK_D, HEAD_DIM, POSITIVE_SCALE, DOT_PRECISION, False, False,
    )

    seen = l_i != 0.0
    inv_l = tl.where(seen, 1.0 / tl.where(seen, l_i, 1.0), 0.0)
    out = (acc * inv_l[:, None]).to(Q.dtype.element_ty)
    lse = tl.where(seen, (m_i + tl.math.log2(tl.where(seen, l_i, 1.0))) * 0.6931471805599453, float("-inf"))
    rows = row0 + tl.arange(0, BLOCK_M)
    lse_base = LSE + bz64 * stride_lb + h64 * stride_lh
    if is_spatial:
        store_tile(Out + bz64 * stride_ob + h64 * stride_oh, None, bz, h, row0, N, stride_os, stride_od, out,
                   BLOCK_M, BLOCK_D, HEAD_DIM, False)
        tl.store(lse_base + rows * stride_ls, lse, mask=rows < N)
    else:
        store_tile(JointOut + bz64 * stride_job + h64 * stride_joh, None, bz, h, row0, L, stride_jos, stride_jod,
                   out, BLOCK_M, BLOCK_D, HEAD_DIM, False)
        tl.store(lse_base + (N + rows) * stride_ls, lse, mask=rows < L)
# fmt: on
