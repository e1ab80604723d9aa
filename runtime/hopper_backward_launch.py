"""Host launcher of the Gluon Hopper backward (`kernels/joint_attention_bwd_hopper.py`).

Entry point: `launch_backward_hopper(call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse, grads)`,
called by `triton_runtime.launch_backward` where the dispatcher (`dispatch.py`, which states the envelope)
picks the Hopper kernel for the backward, or where it is asked for. Three steps:
1. the Triton preprocess (`backward_preprocess`): delta and m per query row of both sets;
2. the Gluon kernel: dK, dV, djoint_K, djoint_V written in place, dQ of both sets added into one zeroed
   float32 [b, nh, N+L, dh] buffer by TMA reduce-adds;
3. the postprocess: dq and djoint_q copied out of that buffer in the input dtype.
"""

from __future__ import annotations

import functools

import torch

from ..kernels.configs import HopperBackwardConfig, hopper_backward_config
from . import fast_launch
from .dispatch import tma_addressable
from .hopper_launch import LOG2E, _descriptor

try:
    import triton
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    from ..kernels.joint_attention_bwd_hopper import joint_attention_bwd_hopper_kernel

    _IMPORT_ERROR: Exception | None = None
except ImportError as error:  # pragma: no cover - Gluon is experimental; other Triton versions may lack it
    _IMPORT_ERROR = error


@functools.cache
def _accumulator_layout(rows: int, cols: int):
    return gl.NVMMASharedLayout.get_default_for([1, 1, rows, cols], gl.float32)


def _accumulator_descriptor(t: torch.Tensor, rows: int, cols: int) -> TensorDescriptor:
    """A 4-D descriptor over a float32 dQ buffer [b, nh, S, dh]; one box is [1, 1, rows, cols] (what one
    consumer warpgroup of the kernel reduce-adds: all of dQ's columns, or half with `split_dq`)."""
    return fast_launch.descriptor(TensorDescriptor, t, [1, 1, rows, cols], _accumulator_layout(rows, cols))


def _addressable(t: torch.Tensor) -> torch.Tensor:
    return t if t.numel() == 0 or tma_addressable(t) else t.clone(memory_format=torch.contiguous_format)


def launch_backward_hopper(
    call,
    out,
    joint_out,
    lse,
    grad_out,
    grad_joint_out,
    grad_lse,
    grads,
    config: HopperBackwardConfig | None = None,
) -> None:
    """Gradients of joint attention on Hopper into `grads` (dq, dk, dv, djoint_q, djoint_k, djoint_v, any
    strides, written completely; see `launch_backward`). The caller has asked the dispatcher; `call` is the
    real call (stand-ins for an empty token set are applied here)."""
    from .triton_runtime import _stand_in, backward_preprocess

    b, nh, n, l, dh = (getattr(call.shape, f) for f in ("b", "nh", "n", "l", "dh"))  # noqa: E741
    config = config or hopper_backward_config(dh)
    run = call.with_stand_ins()
    out, joint_out = _stand_in(out, joint_out), _stand_in(joint_out, out)
    # The output gradients come from autograd in any layout (an expanded one, say): TMA reads a copy then.
    grad_out, grad_joint_out = _addressable(grad_out), _addressable(grad_joint_out)
    grad_out, grad_joint_out = _stand_in(grad_out, grad_joint_out), _stand_in(grad_joint_out, grad_out)
    dq, dk, dv, djq, djk, djv = grads
    dk, djk = _stand_in(dk, djk), _stand_in(djk, dk)
    dv, djv = _stand_in(dv, djv), _stand_in(djv, dv)

    delta, m = backward_preprocess(out, joint_out, lse, grad_out, grad_joint_out, grad_lse, b, nh, n, l, dh)
    accumulator = torch.zeros((b, nh, n + l, dh), dtype=torch.float32, device=dq.device)
    acc_a, acc_b = accumulator[:, :, :n], accumulator[:, :, n:]
    acc_a, acc_b = _stand_in(acc_a, acc_b), _stand_in(acc_b, acc_a)

    bm, bk = config.block_m, config.keys_per_wg
    descs = [
        _descriptor(t, rows)
        for t, rows in zip((*run.tensors, grad_out, grad_joint_out), (bm, bk, bk, bm, bk, bk, bm, bm))
    ]
    cols = config.dq_cols(dh)
    descs += [_accumulator_descriptor(acc_a, bm, cols), _accumulator_descriptor(acc_b, bm, cols)]
    logical_n, logical_l, scale = call.logical_n, call.logical_l, call.scale
    # N + L >= 1: the grid is never empty
    grid = (triton.cdiv(n, config.block_n) + triton.cdiv(l, config.block_n), b * nh)
    fast_launch.launch(
        joint_attention_bwd_hopper_kernel, grid,
        *descs, m, delta, dk, dv, djk, djv,
        logical_n if logical_n is not None else m, logical_l if logical_l is not None else m,
        *dk.stride(), *dv.stride(), *djk.stride(), *djv.stride(),
        float(scale) * LOG2E, float(scale),
        n, l, nh,
        BLOCK_M=bm, KEYS_PER_WG=bk, HEAD_DIM=dh, NUM_STAGES=config.num_stages,
        HAS_N_LEN=logical_n is not None, HAS_L_LEN=logical_l is not None,
        CONSUMER_REGS=config.consumer_regs,
        num_warps=4,
    )  # fmt: skip
    # Postprocess: dQ in the input dtype.
    if n:
        dq.copy_(accumulator[:, :, :n])
    if l:
        djq.copy_(accumulator[:, :, n:])
