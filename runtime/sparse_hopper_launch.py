"""Host launcher of the Gluon block-sparse forward (`kernels/sparse_joint_attention_fwd_hopper.py`).

`sparse_triton_runtime.SparseTritonRuntime.forward` calls `launch_sparse_forward_hopper` where `forward_kernel`
picks it (the envelope itself is `dispatch.sparse_hopper_unsupported`); otherwise the Triton sparse kernel runs
the call.
"""

from __future__ import annotations

import torch

from ..kernels.configs import hopper_forward_config
from . import fast_launch
from .hopper_launch import LOG2E, _descriptor


def launch_sparse_forward_hopper(call, layout, out, joint_out, lse) -> None:
    """The sparse forward into out, joint_out and lse (in place), one launch."""
    from ..kernels.sparse_joint_attention_fwd_hopper import sparse_joint_attention_fwd_hopper_kernel
    from .sparse_triton_runtime import stand_ins

    s = call.shape
    if s.b * s.nh == 0:
        return
    config = hopper_forward_config(s.dh)
    bm, bn = config.block_m, config.block_n
    box = min(layout.kv_block, bn)
    q, k, v, jq, jk, jv = call.with_stand_ins().tensors
    out, joint_out = stand_ins(call, (out, joint_out))
    descs = [
        _descriptor(t, rows)
        for t, rows in zip((q, k, v, jq, jk, jv, out, joint_out), (bm, box, box, bm, bn, bn, bm, bm))
    ]
    num, idx, fnum, fidx, bits = layout.expanded(s.b, s.nh).tensors
    grid = (-(-s.n // (2 * bm)) + -(-s.l // (2 * bm)), s.b * s.nh)
    with torch.cuda.device(q.device):
        fast_launch.launch(
            sparse_joint_attention_fwd_hopper_kernel, grid,
            *descs, lse, num, idx, fnum, fidx, bits,
            call.logical_l if call.logical_l is not None else lse,
            *lse.stride(),
            *num.stride(), *idx.stride(), *fnum.stride(), *fidx.stride(), *bits.stride(),
            float(call.scale) * LOG2E,
            s.n, s.l, s.nh,
            BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=s.dh, NUM_STAGES=config.num_stages,
            Q_BLOCK=layout.q_block, KV_BLOCK=layout.kv_block, HAS_L_LEN=call.logical_l is not None,
            CONSUMER_REGS=config.consumer_regs,
            num_warps=4,
        )  # fmt: skip
