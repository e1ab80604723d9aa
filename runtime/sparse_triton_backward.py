"""Host launcher of the block-sparse backward (`kernels/sparse_joint_attention_bwd.py`): the dense preprocess
kernel, then the sparse dk/dv and dq kernels (see `sparse_triton_runtime.py` for tiles and broadcasting). The dq
kernel gathers key blocks smaller than its tile, as the forward does; the dk/dv kernel's key tile sits inside
one key block."""

from __future__ import annotations

import contextlib

import torch

from ..kernels.configs import backward_launch_config, head_block
from .sparse_layout import SpatialLayout, kernel_bits
from .sparse_triton_runtime import (
    LOG2E,
    _dot_precision,
    sparse_config,
    stand_ins,
    transposed_lists,
)


def launch_sparse_backward(
    call, layout: SpatialLayout, out, joint_out, lse, grad_out, grad_joint_out, grad_lse
):
    """(dq, dk, dv, djoint_q, djoint_k, djoint_v) of (out, joint_out, lse), in the input dtype."""
    import triton

    from ..kernels.joint_attention_bwd import joint_attention_bwd_preprocess_kernel
    from ..kernels.sparse_joint_attention_bwd import (
        sparse_joint_attention_bwd_dkdv_kernel,
        sparse_joint_attention_bwd_dq_kernel,
    )

    grads = tuple(torch.empty_like(t) for t in call.tensors)
    s = call.shape
    b, nh, n, l, dh = s.b, s.nh, s.n, s.l, s.dh  # noqa: E741
    if b * nh == 0:
        return grads
    q, k, v, jq, jk, jv = call.with_stand_ins().tensors
    out, joint_out = stand_ins(call, (out, joint_out))
    grad_out, grad_joint_out = stand_ins(call, (grad_out, grad_joint_out))
    dq, djq, dk, djk, dv, djv = stand_ins(
        call, (grads[0], grads[3]), (grads[1], grads[4]), (grads[2], grads[5])
    )
    block_m, block_n, warps, stages = sparse_config(layout, dh, q.dtype, backward=True)
    dq_block_n = gathered_key_tile(layout, dh, q.dtype, block_n)
    block_d = head_block(dh)
    num, idx, fnum, fidx, bits = layout.expanded(b, nh).tensors
    bits = kernel_bits(bits)
    t_num, t_qb, t_slot = (t.expand(b, nh, *t.shape[2:]) for t in transposed_lists(layout, n))
    stats = torch.empty((2, b, nh, n + l), dtype=torch.float32, device=q.device)
    delta, m = stats[0], stats[1]
    common = dict(
        HEAD_DIM=dh, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, Q_BLOCK=layout.q_block,
        KV_BLOCK=layout.kv_block, HAS_N_LEN=call.logical_n is not None, HAS_L_LEN=call.logical_l is not None,
        DOT_PRECISION=_dot_precision(q.dtype), num_warps=warps, num_stages=stages,
    )  # fmt: skip
    inputs = (*q.stride(), *k.stride(), *v.stride(), *jq.stride(), *jk.stride(), *jv.stride(),
              *grad_out.stride(), *grad_joint_out.stride())  # fmt: skip
    device = torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext()
    with device:
        pre = 64
        joint_attention_bwd_preprocess_kernel[(triton.cdiv(n, pre) + triton.cdiv(l, pre), b * nh)](
            out, joint_out, grad_out, grad_joint_out, lse, grad_lse, delta, m,
            *out.stride(), *joint_out.stride(), *grad_out.stride(), *grad_joint_out.stride(),
            *lse.stride(), *(grad_lse.stride() if grad_lse is not None else (0, 0, 0)),
            n, l, nh, HEAD_DIM=dh, BLOCK_M=pre, BLOCK_D=block_d, HAS_DLSE=grad_lse is not None,
        )  # fmt: skip
        sparse_joint_attention_bwd_dkdv_kernel[(triton.cdiv(n, block_n) + triton.cdiv(l, block_n), b * nh)](
            q, k, v, jq, jk, jv, grad_out, grad_joint_out, m, delta, dk, dv, djk, djv,
            t_num, t_qb, t_slot, bits, call.logical_n, call.logical_l, *inputs,
            *dk.stride(), *dv.stride(), *djk.stride(), *djv.stride(),
            *t_num.stride(), *t_qb.stride(), *t_slot.stride(), *bits.stride(),
            call.scale, call.scale * LOG2E, n, l, nh, **common,
        )  # fmt: skip
        sparse_joint_attention_bwd_dq_kernel[(triton.cdiv(n, block_m) + triton.cdiv(l, block_m), b * nh)](
            q, k, v, jq, jk, jv, grad_out, grad_joint_out, m, delta, dq, djq,
            num, idx, fnum, fidx, bits, call.logical_n, call.logical_l, *inputs,
            *dq.stride(), *djq.stride(),
            *num.stride(), *idx.stride(), *fnum.stride(), *fidx.stride(), *bits.stride(),
            call.scale, call.scale * LOG2E, n, l, nh, **dict(common, BLOCK_N=dq_block_n),
        )  # fmt: skip
    return grads


# The gathered dq tile's widest key tile: 64x128 spills (404 bytes a thread at dh 128, bf16, compiled for sm_90
# with a launch's specialization), 64x64 does not.
MAX_GATHERED_DQ_TILE = 64


def gathered_key_tile(layout: SpatialLayout, dh: int, dtype, block_n: int) -> int:
    """The dq kernel's key tile: the dense backward's (at most MAX_GATHERED_DQ_TILE) where the mask's key blocks
    are smaller and divide it (gathered, as in the forward), else the dk/dv kernel's tile (which must sit inside
    one key block: its query loop is that block's)."""
    tile = min(backward_launch_config(dh, dtype, 1 << 30, 1 << 30).block_n, MAX_GATHERED_DQ_TILE)
    return tile if layout.kv_block < tile and tile % layout.kv_block == 0 else block_n
