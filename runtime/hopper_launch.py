"""Host launcher of the Gluon Hopper forward kernel (`kernels/joint_attention_fwd_hopper.py`).

Entry points:
- `launch_forward_hopper(...)`: one launch writing out, joint_out and lse in place, like `launch_forward`.
  `triton_runtime.launch_forward` calls it where the dispatcher (`dispatch.py`) picks the Hopper kernel.
- `hopper_unsupported(tensors, scale)`: why the kernel cannot take a call (None if it can), as `dispatch.py`
  states its envelope: a CUDA device of compute capability 9.x (wgmma and TMA, which Blackwell's sm_100 does
  not run as sm_90a code), float16/bfloat16, dh 64, 128 or 256, a positive scale, every tensor TMA-addressable.
  `JOINTATTN_HOPPER_KERNEL=0` turns it off.
"""

from __future__ import annotations

import functools

import torch

from ..kernels.configs import HopperConfig, hopper_forward_config
from . import fast_launch

try:
    import triton
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    from ..kernels.joint_attention_fwd_hopper import joint_attention_fwd_hopper_kernel

    _IMPORT_ERROR: Exception | None = None
except ImportError as error:  # pragma: no cover - Gluon is experimental; other Triton versions may lack it
    _IMPORT_ERROR = error

LOG2E = 1.4426950408889634
_GLUON_DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}


def hopper_unsupported(tensors: tuple[torch.Tensor, ...], scale: float) -> str | None:
    """Why the Hopper kernel cannot run q, k, v, joint_q/k/v (the first six of `tensors`), or None; the
    envelope itself is stated in `dispatch.py`."""
    from .dispatch import describe_tensors, unsupported

    return unsupported("hopper", describe_tensors(tensors[:6], scale, padded=False))


@functools.cache
def _shared_layout(rows: int, dh: int, dtype: torch.dtype):
    return gl.NVMMASharedLayout.get_default_for([1, 1, rows, dh], getattr(gl, _GLUON_DTYPES[dtype]))


def _descriptor(t: torch.Tensor, rows: int) -> TensorDescriptor:
    """A 4-D descriptor over `t` as it is ([b, nh, S, dh], strides kept); one box is [1, 1, rows, dh]."""
    dh = t.shape[-1]
    return fast_launch.descriptor(TensorDescriptor, t, [1, 1, rows, dh], _shared_layout(rows, dh, t.dtype))


def launch_forward_hopper(
    call,
    out,
    joint_out,
    lse,
    n: int,
    l: int,  # noqa: E741
    config: HopperConfig | None = None,
) -> None:
    """Joint attention forward on Hopper into `out`, `joint_out` and `lse` (see `launch_forward`).

    The caller has asked the dispatcher, and passes the call with stand-ins for an empty token set
    (`JointCall.with_stand_ins`, never read: its loops run zero times; `n` and `l` are the real lengths) and the
    outputs likewise.
    """
    b, nh, _, dh = call.q.shape
    logical_n, logical_l, scale = call.logical_n, call.logical_l, call.scale
    config = config or hopper_forward_config(dh)
    bm, bn = config.block_m, config.block_n
    descs = [
        _descriptor(t, rows)
        for t, rows in zip((*call.tensors, out, joint_out), (bm, bn, bn, bm, bn, bn, bm, bm))
    ]
    grid = (triton.cdiv(n, 2 * bm) + triton.cdiv(l, 2 * bm), b * nh)
    fast_launch.launch(
        joint_attention_fwd_hopper_kernel, grid,
        *descs, lse,
        logical_n if logical_n is not None else lse, logical_l if logical_l is not None else lse,
        *lse.stride(),
        float(scale) * LOG2E,
        n, l, nh,
        BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=dh, NUM_STAGES=config.num_stages,
        HAS_N_LEN=logical_n is not None, HAS_L_LEN=logical_l is not None,
        CONSUMER_REGS=config.consumer_regs,
        num_warps=4,
    )  # fmt: skip
