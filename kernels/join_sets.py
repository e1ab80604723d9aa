"""Joining token sets along the sequence: out = cat([a[:, :, :rows_a], b[:, :, :rows_b]], dim=2), up to five
pairs in one launch.

Why: the sdpa path joins its inputs before PyTorch's attention kernels (q, k, v in the forward; q, k, v, out and
dO in the backward). `torch.cat` copies the model's layouts (heads as a strided middle dim, [b, S, nh, dh]
transposed) element by element at ~0.7 TB/s on an H200: 0.40 ms of a 1.9 ms training step at Flux's size
(`benchmarks/results/profile_point-h200.json`). Here each program copies a [BLOCK_R, dh] tile with vector loads
of the contiguous head dim, and every pair of a call goes in one launch.

Entry point: `join_sets_kernel`, launched by `jointattn.runtime.join.join_pairs`. Grid: (row blocks of the
longest joined output, b * nh, pairs). Outputs are [b, nh, rows_a + rows_b, dh] with packed head, row and dh
strides; their batch stride is packed too, or, for the pairs in PRIVATE_MASK (bit p for pair p), packed plus
BATCH_PAD elements (`runtime/join.py`'s private layout, which keys our cuDNN backward graphs apart from everyone
else's); inputs any strides.
"""

from __future__ import annotations

import triton
import triton.language as tl

# fmt: off


@triton.jit
def _join_one(A, B, OUT, rows_a, rows_b, H, sab, sah, sas, sad, sbb, sbh, sbs, sbd,
              HEAD_DIM: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, BATCH_PAD: tl.constexpr):
    """One program's rows of one pair into OUT: rows below rows_a from A, the next rows_b from B."""
    pid_r = tl.program_id(0)
    pid_bh = tl.program_id(1)
    bz = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    total = rows_a + rows_b
    if pid_r * BLOCK_R < total:
        r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
        d = tl.arange(0, BLOCK_D)
        d_ok = (d < HEAD_DIM)[None, :]
        in_a = r < rows_a
        in_b = (r >= rows_a) & (r < total)
        ra = r.to(tl.int64)
        rb = (r - rows_a).to(tl.int64)
        xa = tl.load(A + bz * sab + h * sah + ra[:, None] * sas + d[None, :] * sad, mask=in_a[:, None] & d_ok)
        xb = tl.load(B + bz * sbb + h * sbh + rb[:, None] * sbs + d[None, :] * sbd, mask=in_b[:, None] & d_ok)
        x = tl.where(in_a[:, None], xa, xb)
        o_row = bz * (H * total * HEAD_DIM + BATCH_PAD) + h * total * HEAD_DIM  # batch stride padded where private
        o_ptrs = OUT + o_row + ra[:, None] * HEAD_DIM + d[None, :]
        tl.store(o_ptrs, x, mask=(r < total)[:, None] & d_ok)


@triton.jit
def join_sets_kernel(
    A0, B0, O0, A1, B1, O1, A2, B2, O2, A3, B3, O3, A4, B4, O4,
    ra0, rb0, ra1, rb1, ra2, rb2, ra3, rb3, ra4, rb4,
    sa0b, sa0h, sa0s, sa0d, sb0b, sb0h, sb0s, sb0d,
    sa1b, sa1h, sa1s, sa1d, sb1b, sb1h, sb1s, sb1d,
    sa2b, sa2h, sa2s, sa2d, sb2b, sb2h, sb2s, sb2d,
    sa3b, sa3h, sa3s, sa3d, sb3b, sb3h, sb3s, sb3d,
    sa4b, sa4h, sa4s, sa4d, sb4b, sb4h, sb4s, sb4d,
    H,
    HEAD_DIM: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, PRIVATE_MASK: tl.constexpr,
    BATCH_PAD: tl.constexpr,
):
    """Pair p = program_id(2) of up to five; unused pairs' arguments are never read."""
    pair = tl.program_id(2)
    if pair == 0:
        _join_one(A0, B0, O0, ra0, rb0, H, sa0b, sa0h, sa0s, sa0d, sb0b, sb0h, sb0s, sb0d, HEAD_DIM, BLOCK_R, BLOCK_D,
                  ((PRIVATE_MASK >> 0) & 1) * BATCH_PAD)
    elif pair == 1:
        _join_one(A1, B1, O1, ra1, rb1, H, sa1b, sa1h, sa1s, sa1d, sb1b, sb1h, sb1s, sb1d, HEAD_DIM, BLOCK_R, BLOCK_D,
                  ((PRIVATE_MASK >> 1) & 1) * BATCH_PAD)
    elif pair == 2:
        _join_one(A2, B2, O2, ra2, rb2, H, sa2b, sa2h, sa2s, sa2d, sb2b, sb2h, sb2s, sb2d, HEAD_DIM, BLOCK_R, BLOCK_D,
                  ((PRIVATE_MASK >> 2) & 1) * BATCH_PAD)
    elif pair == 3:
        _join_one(A3, B3, O3, ra3, rb3, H, sa3b, sa3h, sa3s, sa3d, sb3b, sb3h, sb3s, sb3d, HEAD_DIM, BLOCK_R, BLOCK_D,
                  ((PRIVATE_MASK >> 3) & 1) * BATCH_PAD)
    else:
        _join_one(A4, B4, O4, ra4, rb4, H, sa4b, sa4h, sa4s, sa4d, sb4b, sb4h, sb4s, sb4d, HEAD_DIM, BLOCK_R, BLOCK_D,
                  ((PRIVATE_MASK >> 4) & 1) * BATCH_PAD)
