"""Host launchers of the Gluon block-sparse kernels (`kernels/sparse_joint_attention_{fwd,bwd}_hopper.py`).

`sparse_triton_runtime.SparseTritonRuntime` calls `launch_sparse_forward_hopper` where `forward_kernel` picks it
and `launch_sparse_backward_hopper` where `backward_kernel` does (the envelope itself is
`dispatch.sparse_hopper_unsupported`); otherwise the Triton sparse kernels run the pass.
"""

from __future__ import annotations

import torch

from ..kernels.configs import hopper_sparse_backward_config, hopper_sparse_forward_config
from . import fast_launch
from .hopper_launch import LOG2E, _descriptor
from .sparse_layout import kernel_bits


def launch_sparse_forward_hopper(call, layout, out, joint_out, lse) -> None:
    """The sparse forward into out, joint_out and lse (in place), one launch."""
    from ..kernels.sparse_joint_attention_fwd_hopper import sparse_joint_attention_fwd_hopper_kernel
    from .sparse_triton_runtime import stand_ins

    s = call.shape
    if s.b * s.nh == 0:
        return
    config = hopper_sparse_forward_config(s.dh)
    bm, bn = config.block_m, config.block_n
    box = min(layout.kv_block, bn)
    q, k, v, jq, jk, jv = call.with_stand_ins().tensors
    out, joint_out = stand_ins(call, (out, joint_out))
    descs = [
        _descriptor(t, rows)
        for t, rows in zip((q, k, v, jq, jk, jv, out, joint_out), (bm, box, box, bm, bn, bn, bm, bm))
    ]
    num, idx, fnum, fidx, bits = layout.expanded(s.b, s.nh).tensors
    bits = kernel_bits(bits)
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


def launch_sparse_backward_hopper(call, layout, out, joint_out, lse, grad_out, grad_joint_out, grad_lse):
    """(dq, dk, dv, djoint_q, djoint_k, djoint_v) of (out, joint_out, lse), in the input dtype: the dense
    backward's preprocess, the Gluon sparse kernel (dK, dV written in place, dQ of both sets added into one
    zeroed float32 [b, nh, N+L, dh] buffer), then dQ copied out in the input dtype."""
    from ..kernels.sparse_joint_attention_bwd_hopper import sparse_joint_attention_bwd_hopper_kernel
    from .hopper_backward_launch import _accumulator_descriptor, _addressable
    from .sparse_triton_runtime import stand_ins, transposed_lists
    from .triton_runtime import backward_preprocess

    grads = tuple(torch.empty_like(t) for t in call.tensors)
    s = call.shape
    if s.b * s.nh == 0:
        return grads
    b, nh, n, l, dh = s.b, s.nh, s.n, s.l, s.dh  # noqa: E741
    config = hopper_sparse_backward_config(dh, layout.kv_block)
    bm, bn = config.block_m, config.keys_per_wg
    q, k, v, jq, jk, jv = call.with_stand_ins().tensors
    out, joint_out = stand_ins(call, (out, joint_out))
    # Output gradients come from autograd in any layout (an expanded one, say): TMA reads a copy then.
    grad_out, grad_joint_out = stand_ins(call, (_addressable(grad_out), _addressable(grad_joint_out)))
    _, dk, dv, _, djk, djv = grads
    dk, djk, dv, djv = stand_ins(call, (dk, djk), (dv, djv))
    delta, m = backward_preprocess(out, joint_out, lse, grad_out, grad_joint_out, grad_lse, b, nh, n, l, dh)
    accumulator = torch.zeros((b, nh, n + l, dh), dtype=torch.float32, device=q.device)
    acc_a, acc_b = stand_ins(call, (accumulator[:, :, :n], accumulator[:, :, n:]))
    descs = [
        _descriptor(t, rows)
        for t, rows in zip((q, k, v, jq, jk, jv, grad_out, grad_joint_out), (bm, bn, bn, bm, bn, bn, bm, bm))
    ]
    descs += [_accumulator_descriptor(acc_a, bm, dh), _accumulator_descriptor(acc_b, bm, dh)]
    t_num, t_qb, t_slot = (t.expand(b, nh, *t.shape[2:]) for t in transposed_lists(layout, n))
    bits = layout.expanded(b, nh).partial_bits
    has_partial = bits.shape[3] > 0  # else the kernel is built without the partial path (fewer spills)
    bits = kernel_bits(bits)
    grid = (-(-n // config.block_n) + -(-l // config.block_n), b * nh)
    with torch.cuda.device(q.device):
        fast_launch.launch(
            sparse_joint_attention_bwd_hopper_kernel, grid,
            *descs, m, delta, dk, dv, djk, djv, t_num, t_qb, t_slot, bits,
            call.logical_l if call.logical_l is not None else m,
            *dk.stride(), *dv.stride(), *djk.stride(), *djv.stride(),
            *t_num.stride(), *t_qb.stride(), *t_slot.stride(), *bits.stride(),
            float(call.scale) * LOG2E, float(call.scale),
            n, l, nh,
            BLOCK_M=bm, HEAD_DIM=dh, NUM_STAGES=config.num_stages,
            Q_BLOCK=layout.q_block, KV_BLOCK=layout.kv_block, HAS_L_LEN=call.logical_l is not None,
            CONSUMER_REGS=config.consumer_regs, SPLIT_KEYS=not config.alternate_steps,
            HAS_PARTIAL=has_partial, num_warps=4,
        )  # fmt: skip
    if n:
        grads[0].copy_(accumulator[:, :, :n])
    if l:
        grads[3].copy_(accumulator[:, :, n:])
    return grads
