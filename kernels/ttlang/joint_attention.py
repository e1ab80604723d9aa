"""Joint attention as a TT-Lang operation: one launch computes its share of out, joint_out and lse in place.

Entry point: `make_joint_attention(launch, scale)` -> a `ttl.operation` to call as
`op(q, k, v, joint_q, joint_k, joint_v, mask_tiles, out, joint_out, lse, joint_lse)`, all tiled 2-D ttnn tensors
of one dtype laid out as `schedule.py` says ([b * nh * S_tiles * 32, dh_tiles * 32]; lse [.., 32], value in column
0). In `mask_tiles` (`jointattn.runtime.ttlang.layout.mask_tiles`), tile (0, r) holds 0 in columns < r and -inf
from column r on; it also is the likeness tensor of every dataflow buffer (the compiler takes only its dtype, the
simulator checks each buffer's shape against it), so it has at least as many tile rows and columns as any block.
A call runs one `schedule.Launch`; `launch.run` runs a plan's.

Written for the TT-Lang compiler (kernels/ttlang/COMPILER.md): the kernels read only integers and floats of the
launch, the operation's tensors and its dataflow buffers; every loop is a `range()` over launch constants, every
`if` compares integers, each block shape has one named dataflow buffer, and the math is spelled as compiler 1.1.1
spells it (`spelling.py` maps it onto tt-lang-sim). `tests/test_ttlang_compiler_rules.py` checks all of that;
`compile_check.py` runs tt-lang 1.1.1's compiler on it (CPython 3.12, no device).

Kernels, per core (items `core * per_core` to `core * per_core + per_core - 1` of the launch, where they exist):
- `read_qkv` (data movement): per item, the query chunk (and, when carrying, the out/lse chunk to continue from),
  then the key pieces: K and V chunks of `k_chunk` tiles (spatial, then joint), then single tiles, each set's
  boundary tile last with its mask tile. Tiles wholly past a valid length are never read.
- `attend` (compute): online softmax over the pieces, the running max, sum and accumulator kept in dataflow
  buffers (as the matmul tutorial keeps its accumulator), starting from m = -inf, l = 0, acc = 0 (or from the
  carried m = lse, l = 1, acc = out):
      s = (q @ k^T) * scale  [+ mask on a boundary tile];  m' = max(m, rowmax s);  p = exp(s - m')
      alpha = exp(m - m');  l' = l * alpha + rowsum p;  acc' = acc * alpha + p @ v
  and finally out = acc / l, lse = m + log l (natural log). Every launch has at least one key piece (the plan
  runs none otherwise), and every piece holds a valid key, so m is finite from the first piece on. Each reduce and
  each p @ v is stored to a buffer of its own before it meets an elementwise operation: the compiler's pipeline
  refuses them fused ("failed to legalize operation 'ttl.reduce'", "body must contain at least one
  ttl.tile_store"; COMPILER.md).
- `write_out` (data movement): out and lse chunks back to DRAM.

Row statistics live in column 0 of (rows, 1)-tile blocks, where `reduce_*` puts them; `broadcast` spreads
column 0 back over a chunk.
"""

from __future__ import annotations

from functools import lru_cache

from .schedule import Launch
from .spelling import ttl


@lru_cache(maxsize=64)
def make_joint_attention(launch: Launch, scale: float):
    """The TT-Lang operation that runs `launch` (see the module docstring for its arguments)."""
    # The kernels' constants: ints and floats only, as the compiler captures them.
    dt = launch.d_tiles
    qs = launch.q_tiles
    kc = launch.k_chunk
    grid_cols = launch.grid[1]
    per_core = launch.items_per_core
    n_items = launch.items
    chunks_n = launch.chunks_n
    chunks_per_head = launch.chunks_n + launch.chunks_l
    first_n = launch.first_n
    first_l = launch.first_l
    n_tiles = launch.n_tiles
    l_tiles = launch.l_tiles
    full_n = launch.full_n
    full_l = launch.full_l
    singles_n = launch.singles_n
    singles_l = launch.singles_l
    tiles_n = launch.tiles_n
    tiles_l = launch.tiles_l
    edge_n = launch.edge_n
    edge_l = launch.edge_l
    full_pieces = launch.full_n + launch.full_l
    tile_pieces = launch.tiles_n + launch.tiles_l
    # Positions of the boundary tiles among the single-tile pieces; `tile_pieces` (never reached) when none.
    masked_n = launch.singles_n if launch.edge_n else tile_pieces
    masked_l = launch.tiles_n + launch.singles_l if launch.edge_l else tile_pieces
    carry = int(launch.carry)
    scale = float(scale)
    neg_inf = float("-inf")

    @ttl.operation(grid=launch.grid)
    def joint_attention(q, k, v, joint_q, joint_k, joint_v, mask_tiles, out, joint_out, lse, joint_lse):
        q_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(qs, dt), block_count=2)
        prev_o_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(qs, dt), block_count=2)
        prev_lse_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(qs, 1), block_count=2)
        k_chunk_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(kc, dt), block_count=2)
        v_chunk_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(kc, dt), block_count=2)
        k_tile_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(1, dt), block_count=2)
        v_tile_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(1, dt), block_count=2)
        mask_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(1, 1), block_count=2)
        ones_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(1, 1), block_count=1)
        s_chunk_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(qs, kc), block_count=1)
        p_chunk_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(qs, kc), block_count=1)
        s_tile_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(qs, 1), block_count=2)
        p_tile_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(qs, 1), block_count=1)
        m_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(qs, 1), block_count=2)
        alpha_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(qs, 1), block_count=1)
        row_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(qs, 1), block_count=1)
        m_next_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(qs, 1), block_count=1)
        l_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(qs, 1), block_count=2)
        pv_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(qs, dt), block_count=1)
        acc_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(qs, dt), block_count=2)
        o_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(qs, dt), block_count=2)
        lse_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(qs, 1), block_count=2)

        @ttl.datamovement()
        def read_qkv():
            node_x, node_y = ttl.node(dims=2)
            core = node_x * grid_cols + node_y
            for i in range(per_core):
                item = core * per_core + i
                if item < n_items:
                    head = item // chunks_per_head
                    chunk = item % chunks_per_head
                    if chunk < chunks_n:
                        row = head * n_tiles + first_n + chunk * qs
                        with q_dfb.reserve() as q_blk:
                            ttl.copy(q[row : row + qs, 0:dt], q_blk).wait()
                        if carry > 0:
                            with prev_o_dfb.reserve() as o_blk, prev_lse_dfb.reserve() as l_blk:
                                o_xf = ttl.copy(out[row : row + qs, 0:dt], o_blk)
                                l_xf = ttl.copy(lse[row : row + qs, 0:1], l_blk)
                                o_xf.wait()
                                l_xf.wait()
                    else:
                        row = head * l_tiles + first_l + (chunk - chunks_n) * qs
                        with q_dfb.reserve() as q_blk:
                            ttl.copy(joint_q[row : row + qs, 0:dt], q_blk).wait()
                        if carry > 0:
                            with prev_o_dfb.reserve() as o_blk, prev_lse_dfb.reserve() as l_blk:
                                o_xf = ttl.copy(joint_out[row : row + qs, 0:dt], o_blk)
                                l_xf = ttl.copy(joint_lse[row : row + qs, 0:1], l_blk)
                                o_xf.wait()
                                l_xf.wait()
                    for j in range(full_n):
                        key = head * n_tiles + j * kc
                        with k_chunk_dfb.reserve() as k_blk, v_chunk_dfb.reserve() as v_blk:
                            k_xf = ttl.copy(k[key : key + kc, 0:dt], k_blk)
                            v_xf = ttl.copy(v[key : key + kc, 0:dt], v_blk)
                            k_xf.wait()
                            v_xf.wait()
                    for j in range(full_l):
                        key = head * l_tiles + j * kc
                        with k_chunk_dfb.reserve() as k_blk, v_chunk_dfb.reserve() as v_blk:
                            k_xf = ttl.copy(joint_k[key : key + kc, 0:dt], k_blk)
                            v_xf = ttl.copy(joint_v[key : key + kc, 0:dt], v_blk)
                            k_xf.wait()
                            v_xf.wait()
                    for j in range(tiles_n):
                        key = head * n_tiles + full_n * kc + j
                        with k_tile_dfb.reserve() as k_blk, v_tile_dfb.reserve() as v_blk:
                            k_xf = ttl.copy(k[key : key + 1, 0:dt], k_blk)
                            v_xf = ttl.copy(v[key : key + 1, 0:dt], v_blk)
                            k_xf.wait()
                            v_xf.wait()
                        if j == singles_n:  # the boundary tile
                            with mask_dfb.reserve() as mask_blk:
                                ttl.copy(mask_tiles[0:1, edge_n : edge_n + 1], mask_blk).wait()
                    for j in range(tiles_l):
                        key = head * l_tiles + full_l * kc + j
                        with k_tile_dfb.reserve() as k_blk, v_tile_dfb.reserve() as v_blk:
                            k_xf = ttl.copy(joint_k[key : key + 1, 0:dt], k_blk)
                            v_xf = ttl.copy(joint_v[key : key + 1, 0:dt], v_blk)
                            k_xf.wait()
                            v_xf.wait()
                        if j == singles_l:
                            with mask_dfb.reserve() as mask_blk:
                                ttl.copy(mask_tiles[0:1, edge_l : edge_l + 1], mask_blk).wait()

        @ttl.compute()
        def attend():
            node_x, node_y = ttl.node(dims=2)
            core = node_x * grid_cols + node_y
            if core * per_core < n_items:  # a core with work (the simulator wants every waited block used)
                with ones_dfb.reserve() as one_blk:
                    one_blk.store(ttl.math.fill(one_blk, 1.0))
                with ones_dfb.wait() as ones:  # the reduce scaler
                    for i in range(per_core):
                        if core * per_core + i < n_items:
                            if carry > 0:  # continue from (out, lse): m = lse, l = 1, acc = out
                                with prev_o_dfb.wait() as o_blk, prev_lse_dfb.wait() as lse_blk:
                                    with m_dfb.reserve() as m_new:
                                        m_new.store(lse_blk)
                                    with l_dfb.reserve() as l_new:
                                        l_new.store(ttl.math.fill(l_new, 1.0))
                                    with acc_dfb.reserve() as acc_new:
                                        acc_new.store(o_blk)
                            else:
                                with m_dfb.reserve() as m_new:
                                    m_new.store(ttl.math.fill(m_new, neg_inf))
                                with l_dfb.reserve() as l_new:
                                    l_new.store(ttl.math.fill(l_new, 0.0))
                                with acc_dfb.reserve() as acc_new:
                                    acc_new.store(ttl.math.fill(acc_new, 0.0))
                            with q_dfb.wait() as q_blk:
                                for _ in range(full_pieces):
                                    with k_chunk_dfb.wait() as k_blk, s_chunk_dfb.reserve() as s_blk:
                                        s_blk.store(
                                            q_blk @ ttl.math.transpose(k_blk) * ttl.math.fill(s_blk, scale)
                                        )
                                    with s_chunk_dfb.wait() as s_blk:
                                        with row_dfb.reserve() as row_max:
                                            row_max.store(ttl.math.reduce_max(s_blk, ones, dims=[1]))
                                        with row_dfb.wait() as row_max, m_dfb.wait() as m_old:
                                            with m_next_dfb.reserve() as m_next:
                                                m_next.store(ttl.math.max(m_old, row_max))
                                            with alpha_dfb.reserve() as alpha:
                                                alpha.store(
                                                    ttl.math.exp(m_old - ttl.math.max(m_old, row_max))
                                                )
                                        with (
                                            m_next_dfb.wait() as m_next,
                                            p_chunk_dfb.reserve() as p_blk,
                                            m_dfb.reserve() as m_new,
                                        ):
                                            p_blk.store(
                                                ttl.math.exp(
                                                    s_blk - ttl.math.broadcast(m_next, p_blk, dims=[1])
                                                )
                                            )
                                            m_new.store(m_next)
                                    with p_chunk_dfb.wait() as p_blk:
                                        with row_dfb.reserve() as row_sum:
                                            row_sum.store(ttl.math.reduce_sum(p_blk, ones, dims=[1]))
                                        with v_chunk_dfb.wait() as v_blk, pv_dfb.reserve() as pv:
                                            pv.store(p_blk @ v_blk)
                                    with alpha_dfb.wait() as alpha:
                                        with (
                                            row_dfb.wait() as row_sum,
                                            l_dfb.wait() as l_old,
                                            l_dfb.reserve() as l_new,
                                        ):
                                            l_new.store(l_old * alpha + row_sum)
                                        with (
                                            pv_dfb.wait() as pv,
                                            acc_dfb.wait() as acc_old,
                                            acc_dfb.reserve() as acc_new,
                                        ):
                                            acc_new.store(
                                                acc_old * ttl.math.broadcast(alpha, acc_new, dims=[1]) + pv
                                            )
                                for j in range(tile_pieces):
                                    with k_tile_dfb.wait() as k_blk, s_tile_dfb.reserve() as s_blk:
                                        s_blk.store(
                                            q_blk @ ttl.math.transpose(k_blk) * ttl.math.fill(s_blk, scale)
                                        )
                                    # a boundary tile: mask its columns past the valid length
                                    if j == masked_n or j == masked_l:
                                        with (
                                            s_tile_dfb.wait() as s_blk,
                                            mask_dfb.wait() as mask_blk,
                                            s_tile_dfb.reserve() as masked,
                                        ):
                                            masked.store(
                                                s_blk + ttl.math.broadcast(mask_blk, masked, dims=[0])
                                            )
                                    with s_tile_dfb.wait() as s_blk:
                                        with row_dfb.reserve() as row_max:
                                            row_max.store(ttl.math.reduce_max(s_blk, ones, dims=[1]))
                                        with row_dfb.wait() as row_max, m_dfb.wait() as m_old:
                                            with m_next_dfb.reserve() as m_next:
                                                m_next.store(ttl.math.max(m_old, row_max))
                                            with alpha_dfb.reserve() as alpha:
                                                alpha.store(
                                                    ttl.math.exp(m_old - ttl.math.max(m_old, row_max))
                                                )
                                        with (
                                            m_next_dfb.wait() as m_next,
                                            p_tile_dfb.reserve() as p_blk,
                                            m_dfb.reserve() as m_new,
                                        ):
                                            p_blk.store(
                                                ttl.math.exp(
                                                    s_blk - ttl.math.broadcast(m_next, p_blk, dims=[1])
                                                )
                                            )
                                            m_new.store(m_next)
                                    with p_tile_dfb.wait() as p_blk:
                                        with row_dfb.reserve() as row_sum:
                                            row_sum.store(ttl.math.reduce_sum(p_blk, ones, dims=[1]))
                                        with v_tile_dfb.wait() as v_blk, pv_dfb.reserve() as pv:
                                            pv.store(p_blk @ v_blk)
                                    with alpha_dfb.wait() as alpha:
                                        with (
                                            row_dfb.wait() as row_sum,
                                            l_dfb.wait() as l_old,
                                            l_dfb.reserve() as l_new,
                                        ):
                                            l_new.store(l_old * alpha + row_sum)
                                        with (
                                            pv_dfb.wait() as pv,
                                            acc_dfb.wait() as acc_old,
                                            acc_dfb.reserve() as acc_new,
                                        ):
                                            acc_new.store(
                                                acc_old * ttl.math.broadcast(alpha, acc_new, dims=[1]) + pv
                                            )
                            with m_dfb.wait() as m_fin, l_dfb.wait() as l_sum, acc_dfb.wait() as acc_fin:
                                with row_dfb.reserve() as inverse:
                                    inverse.store(ttl.math.recip(l_sum))
                                with lse_dfb.reserve() as lse_blk:
                                    lse_blk.store(m_fin + ttl.math.log(l_sum))
                                with row_dfb.wait() as inverse, o_dfb.reserve() as o_blk:
                                    o_blk.store(acc_fin * ttl.math.broadcast(inverse, o_blk, dims=[1]))

        @ttl.datamovement()
        def write_out():
            node_x, node_y = ttl.node(dims=2)
            core = node_x * grid_cols + node_y
            for i in range(per_core):
                item = core * per_core + i
                if item < n_items:
                    head = item // chunks_per_head
                    chunk = item % chunks_per_head
                    with o_dfb.wait() as o_blk, lse_dfb.wait() as lse_blk:
                        if chunk < chunks_n:
                            row = head * n_tiles + first_n + chunk * qs
                            o_xf = ttl.copy(o_blk, out[row : row + qs, 0:dt])
                            l_xf = ttl.copy(lse_blk, lse[row : row + qs, 0:1])
                            o_xf.wait()
                            l_xf.wait()
                        else:
                            row = head * l_tiles + first_l + (chunk - chunks_n) * qs
                            o_xf = ttl.copy(o_blk, joint_out[row : row + qs, 0:dt])
                            l_xf = ttl.copy(lse_blk, joint_lse[row : row + qs, 0:1])
                            o_xf.wait()
                            l_xf.wait()

    return joint_attention
