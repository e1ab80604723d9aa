"""The "triton" runtime of the block-sparse op: host launchers of `kernels/sparse_joint_attention_{fwd,bwd}.py`.

The kernels' tiles sit inside the mask's blocks: BLOCK_M divides the mask's query block and BLOCK_N its key
block (the largest powers of two up to the dense kernels' tiles that do: `sparse_config`), so mask blocks must be
multiples of 16 (the MMA's K step); the forward gathers key blocks smaller than its key tile into full tiles.
The mask's [Bm, Hm] leading dims are broadcast to [b, nh] by stride 0. CUDA tensors, or CPU tensors under
TRITON_INTERPRET=1 (tests). On Hopper the forward runs the Gluon kernel instead where its envelope takes the
call (`forward_kernel`, `sparse_hopper_launch.py`), and so does the backward (`backward_kernel`). The backward's
dk/dv kernels (Triton's and Gluon's) walk, per key block, the query blocks that list it: those transposed lists
are built here with a few torch ops, once per layout (`transposed_lists`).
"""

from __future__ import annotations

import weakref
from dataclasses import replace

import torch

from ..kernels.configs import backward_launch_config, forward_launch_config, head_block
from .dispatch import describe, sparse_hopper_unsupported, sparse_triton_unsupported, tma_addressable
from .sparse_layout import SpatialLayout, block_maps, kernel_bits
from .validation import host_lengths

LOG2E = 1.4426950408889634
MAX_TILE = 64


def tile_for(block: int, cap: int = MAX_TILE) -> int:
    """The largest power of two <= cap dividing `block` (0 if below 16)."""
    tile = cap
    while tile >= 16 and block % tile:
        tile //= 2
    return tile if tile >= 16 else 0


def sparse_config(layout: SpatialLayout, dh: int, dtype, *, backward: bool):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages): the dense kernels' documented config for dh and dtype, its tiles
    shrunk to divide the mask's blocks. The forward keeps the dense key tile for key blocks that divide it (16 or
    32 keys: gathered, several listed blocks per tile), takes 4 warps for tiles below 128 x 64 and 2 stages for
    key blocks of a whole 128-key tile at dh 128 (shared memory); the backward keeps the dense backward's warps
    whatever its tiles (with 4, its dk/dv kernel spilled 708 bytes a thread at dh 128 with 64 x 64 tiles
    compiled for sm_90, 32 with 8) and key tiles of at most 64 (`tests/test_sparse_build.py`)."""
    dense = (backward_launch_config if backward else forward_launch_config)(dh, dtype, 1 << 30, 1 << 30)
    block_m, block_n = tile_for(layout.q_block, dense.block_m), tile_for(layout.kv_block, dense.block_n)
    if backward:
        # Key blocks of 128 keys and more: the dk/dv kernel's 64 x 128 tile spilled 144 (dh 64) and 436 (dh 128)
        # bytes a thread compiled for sm_90; 64 x 64, 0 and 32.
        block_n = min(block_n, MAX_TILE)
        return block_m, block_n, dense.num_warps, dense.num_stages
    stages = dense.num_stages
    if layout.kv_block < dense.block_n and dense.block_n % layout.kv_block == 0:
        block_n = dense.block_n
    elif block_n * dh >= 128 * 128:
        # Key blocks of at least the tile: the nested block/sub-tile loop pipelines its K, V loads in both
        # loops, and 3 stages asked for 278-360 KB of shared memory at dh 128 (sm_90 has 227); 2 fit.
        stages = min(stages, 2)
    small = block_m * block_n < min(128 * 64, dense.block_m * dense.block_n)
    return block_m, block_n, 4 if small else dense.num_warps, stages


class SparseTritonRuntime:
    name = "triton"

    def unsupported(self, call, layout, *, backward=False, grad_lse=None) -> str | None:
        """Why our sparse kernels cannot run the call (`dispatch.sparse_triton_unsupported`), or None."""
        problem = describe(call, backward=backward, grad_lse=grad_lse)
        return sparse_triton_unsupported(problem, layout.q_block, layout.kv_block)

    def forward(self, call, layout, out, joint_out, lse) -> None:
        call = without_whole_spatial_lengths(call)
        if forward_kernel(call, layout, out, joint_out) == "hopper":
            from .sparse_hopper_launch import launch_sparse_forward_hopper

            launch_sparse_forward_hopper(call, layout, out, joint_out, lse)
        else:
            launch_sparse_forward(call, layout, out, joint_out, lse)

    def backward(self, call, layout, out, joint_out, lse, grad_out, grad_joint_out, grad_lse):
        call = without_whole_spatial_lengths(call)
        if backward_kernel(call, layout, grad_lse) == "hopper":
            from .sparse_hopper_launch import launch_sparse_backward_hopper

            return launch_sparse_backward_hopper(
                call, layout, out, joint_out, lse, grad_out, grad_joint_out, grad_lse
            )
        from .sparse_triton_backward import launch_sparse_backward

        return launch_sparse_backward(call, layout, out, joint_out, lse, grad_out, grad_joint_out, grad_lse)


def without_whole_spatial_lengths(call):
    """The call without `logical_n` where every batch entry's spatial set is whole (lengths read on the host
    once per tensor and version; kept inside a CUDA graph capture, where no host read may happen). Mochi's
    fused layers pass the lengths their key mask was checked to have, N for every video, and spatial lengths
    keep the Hopper kernels out (`dispatch.sparse_hopper_unsupported`)."""
    lengths = call.logical_n
    if lengths is None or (call.q.is_cuda and torch.cuda.is_current_stream_capturing()):
        return call
    n = call.q.shape[2]
    return replace(call, logical_n=None) if all(x == n for x in host_lengths(lengths)) else call


def forward_kernel(call, layout, out, joint_out) -> str:
    """Which kernel runs a sparse forward: "hopper" (the Gluon kernel, where its envelope takes the call and
    its TMA stores can address the outputs) or "triton"."""
    if not call.q.is_cuda:
        return "triton"
    spatial_padded = call.logical_n is not None
    if sparse_hopper_unsupported(describe(call), layout.q_block, layout.kv_block, spatial_padded) is not None:
        return "triton"
    return "hopper" if all(tma_addressable(t) for t in (out, joint_out) if t.numel()) else "triton"


def backward_kernel(call, layout, grad_lse=None) -> str:
    """Which kernels run a sparse backward: "hopper" (the Gluon kernel, where its envelope takes the call; the
    launcher copies output gradients TMA cannot address) or "triton"."""
    if not call.q.is_cuda:
        return "triton"
    problem = describe(call, backward=True, grad_lse=grad_lse)
    spatial_padded = call.logical_n is not None
    reason = sparse_hopper_unsupported(problem, layout.q_block, layout.kv_block, spatial_padded)
    return "triton" if reason is not None else "hopper"


def stand_ins(call, *pairs):
    """An empty token set's tensors replaced by the other set's (never read: their loops run zero times)."""
    fixed = []
    for a, b in pairs:
        fixed += [b if a.shape[2] == 0 else a, a if b.shape[2] == 0 else b]
    return fixed


def launch_sparse_forward(call, layout: SpatialLayout, out, joint_out, lse) -> None:
    import triton

    from ..kernels.sparse_joint_attention_fwd import sparse_joint_attention_fwd_kernel

    s = call.shape
    if s.b * s.nh == 0:
        return
    q, k, v, jq, jk, jv = call.with_stand_ins().tensors
    out, joint_out = stand_ins(call, (out, joint_out))
    block_m, block_n, warps, stages = sparse_config(layout, s.dh, q.dtype, backward=False)
    num, idx, fnum, fidx, bits = layout.expanded(s.b, s.nh).tensors
    bits = kernel_bits(bits)
    grid = (triton.cdiv(s.n, block_m) + triton.cdiv(s.l, block_m), s.b * s.nh)
    with torch.cuda.device(q.device) if q.is_cuda else _null():
        sparse_joint_attention_fwd_kernel[grid](
            q, k, v, jq, jk, jv, out, joint_out, lse, num, idx, fnum, fidx, bits,
            call.logical_n, call.logical_l,
            *q.stride(), *k.stride(), *v.stride(), *jq.stride(), *jk.stride(), *jv.stride(),
            *out.stride(), *joint_out.stride(), *lse.stride(),
            *num.stride(), *idx.stride(), *fnum.stride(), *fidx.stride(), *bits.stride(),
            call.scale * LOG2E, s.n, s.l, s.nh,
            HEAD_DIM=s.dh, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=head_block(s.dh),
            Q_BLOCK=layout.q_block, KV_BLOCK=layout.kv_block,
            HAS_N_LEN=call.logical_n is not None, HAS_L_LEN=call.logical_l is not None,
            POSITIVE_SCALE=call.scale > 0, DOT_PRECISION=_dot_precision(q.dtype),
            num_warps=warps, num_stages=stages,
        )  # fmt: skip


def _dot_precision(dtype):
    return "ieee" if dtype == torch.float32 else "tf32"


def _null():
    import contextlib

    return contextlib.nullcontext()


def transposed_lists(layout: SpatialLayout, n: int):
    """Per key block, the query blocks that list it: (count [Bm, Hm, KBn] int32, q blocks [Bm, Hm, KBn, QBn]
    int32, slot [Bm, Hm, KBn, QBn] int32: the partial-bits slot, or -1 for a full block).

    Kept with the layout's tensors, not the layout object: the op rebuilds its SpatialLayout from the same
    tensors on every call, and a pattern's tensors serve every backward of its layers, so the lists are built
    once (about 10 small launches, a third of the sparse backward's host time at SD3.5's size). They are
    rebuilt when any of the four list tensors is another object or was written in place, or N differs; an
    estimated mask's tensors are new each call and build them each call."""
    sources = layout.tensors[:4]
    stamp = (n, tuple(t._version for t in sources))
    cached = getattr(layout.kv_indices, _TRANSPOSED_ATTR, None)
    if cached is not None:
        refs, cached_stamp, lists = cached
        if cached_stamp == stamp and all(r() is t for r, t in zip(refs, sources)):
            return lists
    lists = _transposed_lists(layout, n)
    if not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()):
        # Not kept from inside a CUDA graph capture: those tensors live in the graph's memory pool.
        setattr(layout.kv_indices, _TRANSPOSED_ATTR, ([weakref.ref(t) for t in sources], stamp, lists))
    return lists


_TRANSPOSED_ATTR = "_jointattn_transposed_lists"  # on a layout's kv_indices tensor: lives and dies with it


def _transposed_lists(layout: SpatialLayout, n: int):
    bm_ = max(t.shape[0] for t in layout.tensors)
    hm = max(t.shape[1] for t in layout.tensors)
    full, slot = block_maps(layout.expanded(bm_, hm), n)  # [Bm, Hm, QBn, KBn]
    qbn = -(-n // layout.q_block)
    full, slot = full[:, :, :qbn], slot[:, :, :qbn]
    listed = (full | (slot >= 0)).transpose(2, 3)  # [Bm, Hm, KBn, QBn]
    order = torch.argsort((~listed).to(torch.int8), dim=-1, stable=True)
    slot_t = torch.where(full, -1, slot).transpose(2, 3).gather(-1, order)
    return (
        listed.sum(-1).to(torch.int32).contiguous(),
        order.to(torch.int32).contiguous(),
        slot_t.to(torch.int32).contiguous(),
    )
