"""Joint attention as a TT-Lang operation: one launch computes out, joint_out and lse of both token sets in place.

Entry point: `make_joint_attention(plan, scale)` -> a `ttl.operation` to call as
`op(q, k, v, joint_q, joint_k, joint_v, mask_tiles, out, joint_out, lse, joint_lse)`, all tiled 2-D ttnn tensors
laid out as `schedule.py` says ([b * nh * S_tiles * 32, dh_tiles * 32]; lse [.., 32], value in column 0).
`mask_tiles` is [32, 32 * 32]: tile r holds 0 in columns < r and -inf from column r on (`jointattn.runtime.ttlang
.layout.mask_tiles`).
The plan (`schedule.plan_joint_attention`) fixes everything the host knows: chunk shapes, per-batch key pieces,
the work of each core. There is no index primitive in TT-Lang, so valid lengths are this shape metadata, not
tensors.

Kernels, per core (its run of work items):
- `read_qkv` (data movement): per item, the query chunk (and, on ring steps, the out/lse chunk to continue from),
  then each key piece's K and V tiles, and for a boundary tile its mask tile. Tiles wholly past a valid length
  are never read. One dataflow buffer per distinct chunk shape, so tail chunks are read as they are.
- `attend` (compute): online softmax over the pieces, the running max, sum and accumulator kept in dataflow
  buffers (as the matmul tutorial keeps its accumulator):
      s = (q @ k^T) * scale  [+ mask on the boundary tile];  m' = max(m, rowmax s);  p = exp(s - m')
      l' = l * exp(m - m') + rowsum p;  acc' = acc * exp(m - m') + p @ v
  and finally out = acc / l, lse = m + log l (natural log). The first piece starts the state (no -inf
  arithmetic); a batch that sees no valid key writes 0 and lse -inf.
- `write_out` (data movement): out and lse chunks back to DRAM.

Row statistics live in column 0 of (rows, 1)-tile blocks, where `reduce_*` puts them; `broadcast` spreads
column 0 back over a chunk.

This module imports `ttl` and `ttnn` by name, as kernels for the TT-Lang compiler do; the simulator's worker
(`sim_worker.py`) puts tt-lang-sim's versions under those names first.
"""

from __future__ import annotations

import ttl  # the compiler's, or tt-lang-sim's under that name

from .schedule import SPATIAL, TILE, JointPlan


def make_joint_attention(plan: JointPlan, scale: float):
    """The TT-Lang operation that runs `plan` (see the module docstring for its arguments)."""
    dt = plan.d_tiles
    neg_inf = float("-inf")
    row_tiles = {SPATIAL: plan.set_tiles(SPATIAL), 1: plan.set_tiles(1)}

    @ttl.operation(grid=plan.grid)
    def joint_attention(q, k, v, joint_q, joint_k, joint_v, mask_tiles, out, joint_out, lse, joint_lse):
        q_dfb = {
            s: ttl.make_dataflow_buffer_like(out, shape=(s, dt), block_count=2) for s in plan.query_shapes
        }
        k_dfb = {s: ttl.make_dataflow_buffer_like(out, shape=(s, dt), block_count=2) for s in plan.key_shapes}
        v_dfb = {s: ttl.make_dataflow_buffer_like(out, shape=(s, dt), block_count=2) for s in plan.key_shapes}
        mask_dfb = ttl.make_dataflow_buffer_like(mask_tiles, shape=(1, 1), block_count=2)
        m_dfb = {
            s: ttl.make_dataflow_buffer_like(lse, shape=(s, 1), block_count=2) for s in plan.query_shapes
        }
        l_dfb = {
            s: ttl.make_dataflow_buffer_like(lse, shape=(s, 1), block_count=2) for s in plan.query_shapes
        }
        acc_dfb = {
            s: ttl.make_dataflow_buffer_like(out, shape=(s, dt), block_count=2) for s in plan.query_shapes
        }
        o_dfb = {
            s: ttl.make_dataflow_buffer_like(out, shape=(s, dt), block_count=2) for s in plan.query_shapes
        }
        lse_dfb = {
            s: ttl.make_dataflow_buffer_like(lse, shape=(s, 1), block_count=2) for s in plan.query_shapes
        }
        if plan.carries:
            prev_o_dfb = {
                s: ttl.make_dataflow_buffer_like(out, shape=(s, dt), block_count=2) for s in plan.query_shapes
            }
            prev_lse_dfb = {
                s: ttl.make_dataflow_buffer_like(lse, shape=(s, 1), block_count=2) for s in plan.query_shapes
            }

        @ttl.datamovement()
        def read_qkv():
            for item in plan.core_items(ttl.node(dims=1)):
                rows = slice(item.row, item.row + item.count)
                spatial = item.token_set == SPATIAL
                if item.pieces:  # an item with no key to attend to needs no query either
                    with q_dfb[item.count].reserve() as q_blk:
                        ttl.copy((q if spatial else joint_q)[rows, 0:dt], q_blk).wait()
                if item.carry:
                    with (
                        prev_o_dfb[item.count].reserve() as o_blk,
                        prev_lse_dfb[item.count].reserve() as l_blk,
                    ):
                        o_xf = ttl.copy((out if spatial else joint_out)[rows, 0:dt], o_blk)
                        l_xf = ttl.copy((lse if spatial else joint_lse)[rows, 0:1], l_blk)
                        o_xf.wait()
                        l_xf.wait()
                head_row = item.batch * plan.nh + item.head
                for piece in item.pieces:
                    first = head_row * row_tiles[piece.token_set] + piece.start
                    keys = slice(first, first + piece.count)
                    key_src, value_src = (k, v) if piece.token_set == SPATIAL else (joint_k, joint_v)
                    with k_dfb[piece.count].reserve() as k_blk, v_dfb[piece.count].reserve() as v_blk:
                        k_xf = ttl.copy(key_src[keys, 0:dt], k_blk)
                        v_xf = ttl.copy(value_src[keys, 0:dt], v_blk)
                        k_xf.wait()
                        v_xf.wait()
                    if piece.valid_rows < TILE:
                        with mask_dfb.reserve() as mask_blk:
                            r = piece.valid_rows
                            ttl.copy(mask_tiles[0:1, r : r + 1], mask_blk).wait()

        @ttl.compute()
        def attend():
            for item in plan.core_items(ttl.node(dims=1)):
                qs = item.count
                m_buf, l_buf, acc_buf = m_dfb[qs], l_dfb[qs], acc_dfb[qs]
                started = item.carry
                if item.carry:  # continue from (out, lse): m = lse, l = 1, acc = out
                    with prev_o_dfb[qs].wait() as o_blk, prev_lse_dfb[qs].wait() as l_blk:
                        with m_buf.reserve() as m_new, l_buf.reserve() as l_new, acc_buf.reserve() as acc_new:
                            m_new.store(l_blk)
                            l_new.store(ttl.block.fill(1.0, shape=(qs, 1)))
                            acc_new.store(o_blk)
                if item.pieces:
                    q_blk = q_dfb[qs].wait()
                for piece in item.pieces:
                    ks = piece.count
                    with k_dfb[ks].wait() as k_blk, v_dfb[ks].wait() as v_blk:
                        s = (q_blk @ ttl.block.transpose(k_blk)) * ttl.block.fill(scale, shape=(qs, ks))
                        if piece.valid_rows < TILE:
                            with mask_dfb.wait() as mask_blk:
                                s = s + ttl.block.broadcast(mask_blk, dims=[0], shape=(qs, 1))
                        row_max = ttl.math.reduce_max(s, dims=[-1], shape=(qs, 1))
                        if started:
                            with m_buf.wait() as m_old, l_buf.wait() as l_old, acc_buf.wait() as acc_old:
                                m = ttl.math.max(m_old, row_max)
                                alpha = ttl.math.exp(m_old - m)
                                p = ttl.math.exp(s - ttl.block.broadcast(m, dims=[-1], shape=(qs, ks)))
                                with m_buf.reserve() as m_new:
                                    m_new.store(m)
                                with l_buf.reserve() as l_new:
                                    l_new.store(
                                        l_old * alpha + ttl.math.reduce_sum(p, dims=[-1], shape=(qs, 1))
                                    )
                                with acc_buf.reserve() as acc_new:
                                    rescale = ttl.block.broadcast(alpha, dims=[-1], shape=(qs, dt))
                                    acc_new.store(acc_old * rescale + p @ v_blk)
                        else:
                            p = ttl.math.exp(s - ttl.block.broadcast(row_max, dims=[-1], shape=(qs, ks)))
                            with m_buf.reserve() as m_new:
                                m_new.store(row_max)
                            with l_buf.reserve() as l_new:
                                l_new.store(ttl.math.reduce_sum(p, dims=[-1], shape=(qs, 1)))
                            with acc_buf.reserve() as acc_new:
                                acc_new.store(p @ v_blk)
                            started = True
                if item.pieces:
                    q_blk.pop()
                with o_dfb[qs].reserve() as o_blk, lse_dfb[qs].reserve() as lse_blk:
                    if started:
                        with m_buf.wait() as m, l_buf.wait() as l_sum, acc_buf.wait() as acc:
                            inverse = ttl.block.broadcast(ttl.math.recip(l_sum), dims=[-1], shape=(qs, dt))
                            o_blk.store(acc * inverse)
                            lse_blk.store(m + ttl.math.log(l_sum))
                    else:  # no valid key for this batch: 0 and lse -inf
                        o_blk.store(ttl.block.fill(0.0, shape=(qs, dt)))
                        lse_blk.store(ttl.block.fill(neg_inf, shape=(qs, 1)))

        @ttl.datamovement()
        def write_out():
            for item in plan.core_items(ttl.node(dims=1)):
                rows = slice(item.row, item.row + item.count)
                spatial = item.token_set == SPATIAL
                with o_dfb[item.count].wait() as o_blk, lse_dfb[item.count].wait() as lse_blk:
                    o_xf = ttl.copy(o_blk, (out if spatial else joint_out)[rows, 0:dt])
                    l_xf = ttl.copy(lse_blk, (lse if spatial else joint_lse)[rows, 0:1])
                    o_xf.wait()
                    l_xf.wait()

    return joint_attention
