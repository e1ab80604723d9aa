"""The "triton" runtime of `joint_attention`: host launchers of the Triton (and Gluon) kernels in `jointattn.kernels`.

Entry points (a call is a `JointCall`: six tensors, the scale and valid lengths; `JointCall.of` builds one):
- `launch_forward(call, out, joint_out, lse, config)`: one kernel launch that writes out [b,nh,N,dh], joint_out
  [b,nh,L,dh] and lse [b,nh,N+L] in place. Any strides; nothing is concatenated, copied or made contiguous.
  It runs the Gluon Hopper kernel (`hopper_launch.py`) where the dispatcher (`dispatch.py`) picks it over the
  Triton kernel, unless a Triton knob (`config`, `use_tma`, `warp_specialize`) or `hopper=False` asks for the
  Triton kernel.
- `launch_backward(call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse)`: three launches (preprocess,
  dk/dv, dq) returning the six input gradients.
- `TritonRuntime`: the runtime protocol of `registry.py` on top of both.

Internals: on Hopper (and newer) the forward reads q/k/v tiles through TMA tensor descriptors built on the
host as 4-D [b, nh, S, dh] views of each tensor (strides kept as they are); when a tensor's layout rules TMA
out (a stride that is not a multiple of 16 bytes, dh not a power of two, a tensor with no rows) it uses
strided pointer loads instead. Triton configs come from `kernels.configs.forward_launch_config` unless
`JOINTATTN_TRITON_AUTOTUNE=1` asks for a timed search over `forward_candidates`, cached per
(dh, dtype, N, L, padding); the search applies where the Triton kernel runs (not where the Hopper kernel does). CPU tensors run in Triton's interpreter when `TRITON_INTERPRET=1`.
Every grid walks b * nh on its second axis; past CUDA's 65535 there, both launchers run in batch chunks.
Launches go through `fast_launch` (bound once per specialization when `JOINTATTN_FAST_LAUNCH=1`).
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch

from ..kernels.configs import (
    LaunchConfig,
    backward_launch_config,
    forward_candidates,
    forward_launch_config,
    head_block,
)
from . import fast_launch
from .call import JointCall
from .dispatch import (
    _INTERPRETER_BF16,
    TRITON_DTYPES,
    Problem,
    choose,
    describe,
    tma_addressable,
    unsupported,
)
from .hopper_backward_launch import launch_backward_hopper
from .hopper_launch import launch_forward_hopper

try:
    import triton
    from triton.tools.tensor_descriptor import TensorDescriptor

    from ..kernels.joint_attention_bwd import (
        joint_attention_bwd_dkdv_kernel,
        joint_attention_bwd_dq_kernel,
        joint_attention_bwd_preprocess_kernel,
    )
    from ..kernels.joint_attention_fwd import LOG2E, joint_attention_fwd_kernel

    _IMPORT_ERROR: Exception | None = None
except ImportError as error:  # pragma: no cover - exercised only where triton is absent
    _IMPORT_ERROR = error

SUPPORTED_DTYPES = TRITON_DTYPES  # the limits live in dispatch.py (one statement of every kernel's envelope)
AUTOTUNE_ENV = "JOINTATTN_TRITON_AUTOTUNE"
# CUDA's limit on a grid's second axis. Every launch here walks b * nh on it (consecutive programs then share
# one head's keys in L2), so a larger b * nh is launched in batch chunks.
MAX_GRID_Y = 65535


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _check_interpretable(q: torch.Tensor) -> None:
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        raise TypeError(f"joint_attention triton kernels on CPU: {_INTERPRETER_BF16}")


def _strides4(t: torch.Tensor) -> tuple[int, int, int, int]:
    return tuple(t.stride())  # type: ignore[return-value]


def _dot_precision(dtype: torch.dtype) -> str:
    # float32 inputs get exact float32 products (tf32 would cost ~1e-3 relative error, see GUIDE numerics).
    return "ieee" if dtype == torch.float32 else "tf32"


def _stand_in(t: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """An output of an empty token set is never written (see `JointCall.with_stand_ins`)."""
    return other if t.shape[2] == 0 else t


def _descriptor(t: torch.Tensor, rows: int, block_d: int) -> TensorDescriptor:
    return fast_launch.descriptor(TensorDescriptor, t, [1, 1, rows, block_d])


def _batch_chunks(b: int, nh: int) -> list[slice]:
    """Slices of the batch whose b * nh fits the grid's second axis (one slice when all of it does)."""
    if nh > MAX_GRID_Y:
        raise ValueError(f"joint_attention: nh={nh}; a kernel launch holds at most {MAX_GRID_Y} heads")
    step = MAX_GRID_Y // nh
    return [slice(start, min(start + step, b)) for start in range(0, b, step)]


def _in_batch_chunks(call: JointCall, tensors, launch) -> None:
    """`launch(call_part, *tensor_parts)` once per batch chunk that fits a grid (once when all of the batch
    does), on the tensors' device (Triton launches on the current one). `tensors` are per-batch outputs (or
    None), sliced as the call is: the launches write straight into them."""
    b, nh = call.q.shape[0], call.q.shape[1]
    if b * nh == 0:
        return
    if _interpreting():
        _check_interpretable(call.q)
    with _on_device(call.q):
        for rows in _batch_chunks(b, nh):
            part = call if rows == slice(0, b) else call.rows(rows)
            launch(part, *(t if t is None or rows == slice(0, b) else t[rows] for t in tensors))


def _on_device(t: torch.Tensor):
    """The tensors' CUDA device made current for a launch: Triton launches on the current device."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def launch_forward(
    call: JointCall,
    out: torch.Tensor,
    joint_out: torch.Tensor,
    lse: torch.Tensor,
    config: LaunchConfig | None = None,
    *,
    use_tma: bool | None = None,
    warp_specialize: bool = False,
    hopper: bool | None = None,
) -> None:
    """Joint attention forward into preallocated `out`, `joint_out` (input dtype) and `lse` (float32).

    Args:
        call: q, k, v [b, nh, N, dh], joint_q, joint_k, joint_v [b, nh, L, dh] (any strides, one dtype and
            device), the scale (a float; may be zero or negative) and valid lengths ([b] tensors or None).
        out, joint_out, lse: outputs, written completely (every row, padded or not); any strides.
        config: tiles/warps/stages; None takes `forward_launch_config` (or the autotuned one, see module doc).
        use_tma: force TMA descriptors on/off (None: on where eligible); warp_specialize: Triton's automatic
            warp specialization of the key loop. Both are tuning knobs for the benchmark.
        hopper: run the Gluon Hopper kernel (`hopper_launch.py`): None where the dispatcher picks it and no
            Triton knob (config, use_tma, warp_specialize) was given; True insists (ValueError with the reason if
            it cannot); False never.
    """

    def launch(part, out, joint_out, lse):
        _launch_forward_one(part, out, joint_out, lse, config, use_tma, warp_specialize, hopper)

    _in_batch_chunks(call, (out, joint_out, lse), launch)


def _launch_forward_one(
    call: JointCall, out, joint_out, lse, config, use_tma, warp_specialize, hopper
) -> None:
    """`launch_forward` for a b * nh that fits one grid, the device current."""
    b, nh, n, l, dh = (getattr(call.shape, f) for f in ("b", "nh", "n", "l", "dh"))  # noqa: E741
    triton_knobs = config is not None or use_tma is not None or warp_specialize
    problem = describe(call)
    run = call.with_stand_ins()
    out, joint_out = _stand_in(out, joint_out), _stand_in(joint_out, out)
    # TMA also stores the outputs: a caller's outputs (a slice, say) must be addressable too.
    outputs_tma = all(tma_addressable(t) for t in (out, joint_out) if t.numel())
    if _run_hopper(run, problem, outputs_tma, out, joint_out, lse, hopper, triton_knobs):
        return
    if config is None:  # on the caller's tensors: each timed launch applies the stand-ins itself
        config = _forward_config(call, out, joint_out, lse)
    tensors = (*run.tensors, out, joint_out)
    block_d = head_block(dh)
    if use_tma is None:
        use_tma = _tma_eligible(problem, dh) and outputs_tma and n > 0 and l > 0
    if use_tma:
        bm, bn = config.block_m, config.block_n
        descs = [
            _descriptor(t, rows, block_d)
            for t, rows in zip(tensors, (bm, bn, bn, bm, bn, bn, bm, bm), strict=True)
        ]
    else:
        descs = [None] * 8
    q, k, v, joint_q, joint_k, joint_v = run.tensors
    grid = (triton.cdiv(n, config.block_m) + triton.cdiv(l, config.block_m), b * nh)
    fast_launch.launch(
        joint_attention_fwd_kernel, grid,
        q, k, v, joint_q, joint_k, joint_v, out, joint_out, lse,
        *descs,
        run.logical_n, run.logical_l,
        *_strides4(q), *_strides4(k), *_strides4(v),
        *_strides4(joint_q), *_strides4(joint_k), *_strides4(joint_v),
        *_strides4(out), *_strides4(joint_out),
        *lse.stride(),
        call.scale * LOG2E,
        n, l, nh,
        HEAD_DIM=dh,
        BLOCK_M=config.block_m,
        BLOCK_N=config.block_n,
        BLOCK_D=block_d,
        HAS_N_LEN=run.logical_n is not None,
        HAS_L_LEN=run.logical_l is not None,
        POSITIVE_SCALE=call.scale > 0,
        DOT_PRECISION=_dot_precision(q.dtype),
        USE_TMA=bool(use_tma),
        WARP_SPECIALIZE=bool(warp_specialize),
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )  # fmt: skip


def _tma_eligible(problem: Problem, dh: int) -> bool:
    """The Triton kernel's TMA loads need what the Hopper kernel's do (`Problem.tma_ok`: sm_90+, unit dh stride,
    16-byte aligned strides and base, rows present), a power-of-two dh (the box is the head block) and 16-bit
    data."""
    arch_ok = problem.arch is not None and int(problem.arch[3:]) >= 90
    return arch_ok and problem.tma_ok and head_block(dh) == dh and problem.dtype != torch.float32


def _run_hopper(
    run: JointCall, problem: Problem, outputs_tma: bool, out, joint_out, lse, hopper, triton_knobs: bool
) -> bool:
    """Launches the Gluon Hopper kernel (`run`: the call with stand-ins) if `hopper` asks for it, or (None) if
    no Triton knob was given and the dispatcher picks it over the Triton kernel for `problem`; returns whether
    it ran. Its TMA stores need the outputs addressable as well (`outputs_tma`)."""
    if hopper and triton_knobs:
        raise ValueError(
            "joint_attention: hopper=True takes no Triton knob (config, use_tma, warp_specialize)"
        )
    if hopper is False or (hopper is None and triton_knobs):
        return False
    if hopper:
        reason = unsupported("hopper", problem) or (
            None
            if outputs_tma
            else "an output's layout is not TMA-addressable (unit dh stride, 16-byte aligned)"
        )
        if reason is not None:
            raise ValueError(f"joint_attention: the Hopper kernel cannot run this call: {reason}")
    elif not outputs_tma or choose(problem, allowed=("hopper", "triton")).path != "hopper":
        return False
    launch_forward_hopper(run, out, joint_out, lse, problem.n, problem.l)
    return True


_TUNED: dict[tuple, LaunchConfig] = {}


def _forward_config(call: JointCall, out, joint_out, lse) -> LaunchConfig:
    """The documented default, or (JOINTATTN_TRITON_AUTOTUNE=1 on CUDA) the fastest kept candidate."""
    s = call.shape
    default = forward_launch_config(s.dh, call.q.dtype, s.n, s.l)
    if os.environ.get(AUTOTUNE_ENV, "0") != "1" or not call.q.is_cuda or _interpreting():
        return default
    key = (s.dh, call.q.dtype, s.n, s.l, call.logical_n is not None, call.logical_l is not None)
    if key not in _TUNED:
        from triton.testing import do_bench

        timings = {}
        for candidate in forward_candidates(s.dh, call.q.dtype):
            run = functools.partial(launch_forward, call, out, joint_out, lse, candidate)
            try:
                timings[candidate] = do_bench(run, warmup=5, rep=20, return_mode="median")
            except Exception:  # a candidate that does not compile or launch here is skipped, not fatal
                continue
        _TUNED[key] = min(timings, key=timings.get) if timings else default
    return _TUNED[key]


def launch_backward(
    call: JointCall,
    out,
    joint_out,
    lse,
    grad_out,
    grad_joint_out,
    grad_lse,
    config: LaunchConfig | None = None,
    dq_config: LaunchConfig | None = None,
    *,
    hopper: bool | None = None,
):
    """Gradients (dq, dk, dv, djoint_q, djoint_k, djoint_v) of (out, joint_out, lse), in the input dtype.

    `grad_lse` may be None (lse unused) or a float tensor [b, nh, N+L]: the gradient through lse is folded
    into delta (dS = P * (dP - (rowsum(dO * O) - dlse))). Padded keys get zero gradients; every query row
    gets its gradient. `config` sets the dk/dv kernel's tiles (and the dq kernel's unless `dq_config` is given:
    block_m is the query tile, block_n the key tile in both). `hopper`: run the Gluon Hopper backward
    (`hopper_backward_launch.py`): None where the dispatcher picks it for the backward and no Triton config was
    given; True insists (ValueError with the reason if it cannot); False never.
    """
    grads = tuple(torch.empty_like(t) for t in call.tensors)

    def launch(part, *tensors):
        _launch_backward_one(part, *tensors[:6], config, dq_config, tensors[6:], hopper)

    _in_batch_chunks(call, (out, joint_out, lse, grad_out, grad_joint_out, grad_lse, *grads), launch)
    return grads


def backward_preprocess(out, joint_out, lse, grad_out, grad_joint_out, grad_lse, b, nh, n, l, dh):  # noqa: E741
    """The backward's per-row statistics, float32 [b, nh, N+L] each, contiguous: delta = rowsum(dO * O) - dlse
    and m = lse * log2(e) (+inf where lse = -inf). Outputs and their gradients: stand-ins applied."""
    stats = torch.empty((2, b, nh, n + l), dtype=torch.float32, device=out.device)
    delta, m = stats[0], stats[1]
    pre_block = 64
    pre_grid = (triton.cdiv(n, pre_block) + triton.cdiv(l, pre_block), b * nh)
    fast_launch.launch(
        joint_attention_bwd_preprocess_kernel, pre_grid,
        out, joint_out, grad_out, grad_joint_out, lse, grad_lse, delta, m,
        *_strides4(out), *_strides4(joint_out), *_strides4(grad_out), *_strides4(grad_joint_out),
        *lse.stride(), *(grad_lse.stride() if grad_lse is not None else (0, 0, 0)),
        n, l, nh,
        HEAD_DIM=dh, BLOCK_M=pre_block, BLOCK_D=head_block(dh), HAS_DLSE=grad_lse is not None,
    )  # fmt: skip
    return delta, m


def _launch_backward_one(
    call: JointCall, out, joint_out, lse, grad_out, grad_joint_out, grad_lse, config, dq_config, grads, hopper
):
    """`launch_backward` into `grads` for a b * nh that fits one grid, the device current."""
    b, nh, n, l, dh = (getattr(call.shape, f) for f in ("b", "nh", "n", "l", "dh"))  # noqa: E741
    if _run_hopper_backward(
        call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse, grads, hopper, config or dq_config
    ):
        return
    config = config or backward_launch_config(dh, call.q.dtype, n, l)
    dq_config = dq_config or config
    block_d = head_block(dh)
    q, k, v, joint_q, joint_k, joint_v = call.with_stand_ins().tensors
    dq, dk, dv, djq, djk, djv = grads
    out, joint_out = _stand_in(out, joint_out), _stand_in(joint_out, out)
    grad_out, grad_joint_out = _stand_in(grad_out, grad_joint_out), _stand_in(grad_joint_out, grad_out)
    dq, djq = _stand_in(dq, djq), _stand_in(djq, dq)
    dk, djk = _stand_in(dk, djk), _stand_in(djk, dk)
    dv, djv = _stand_in(dv, djv), _stand_in(djv, dv)
    logical_n, logical_l = call.logical_n, call.logical_l

    delta, m = backward_preprocess(out, joint_out, lse, grad_out, grad_joint_out, grad_lse, b, nh, n, l, dh)

    def tiles(c: LaunchConfig) -> dict:
        return dict(
            HEAD_DIM=dh,
            BLOCK_M=c.block_m,
            BLOCK_N=c.block_n,
            BLOCK_D=block_d,
            HAS_N_LEN=logical_n is not None,
            HAS_L_LEN=logical_l is not None,
            DOT_PRECISION=_dot_precision(q.dtype),
            num_warps=c.num_warps,
            num_stages=c.num_stages,
        )

    inputs = (*_strides4(q), *_strides4(k), *_strides4(v), *_strides4(joint_q), *_strides4(joint_k),
              *_strides4(joint_v), *_strides4(grad_out), *_strides4(grad_joint_out))  # fmt: skip
    scale = call.scale
    dkdv_grid = (triton.cdiv(n, config.block_n) + triton.cdiv(l, config.block_n), b * nh)
    fast_launch.launch(
        joint_attention_bwd_dkdv_kernel, dkdv_grid,
        q, k, v, joint_q, joint_k, joint_v, grad_out, grad_joint_out, m, delta, dk, dv, djk, djv,
        logical_n, logical_l, *inputs,
        *_strides4(dk), *_strides4(dv), *_strides4(djk), *_strides4(djv),
        scale, scale * LOG2E, n, l, nh, **tiles(config),
    )  # fmt: skip
    dq_grid = (triton.cdiv(n, dq_config.block_m) + triton.cdiv(l, dq_config.block_m), b * nh)
    fast_launch.launch(
        joint_attention_bwd_dq_kernel, dq_grid,
        q, k, v, joint_q, joint_k, joint_v, grad_out, grad_joint_out, m, delta, dq, djq,
        logical_n, logical_l, *inputs,
        *_strides4(dq), *_strides4(djq),
        scale, scale * LOG2E, n, l, nh, **tiles(dq_config),
    )  # fmt: skip


def _run_hopper_backward(
    call: JointCall, out, joint_out, lse, grad_out, grad_joint_out, grad_lse, grads, hopper, triton_knobs
) -> bool:
    """Runs the Gluon Hopper backward if `hopper` asks for it, or (None) if no Triton config was given and the
    dispatcher picks it over the Triton backward; returns whether it ran."""
    if hopper and triton_knobs:
        raise ValueError("joint_attention: hopper=True takes no Triton config (config, dq_config)")
    if hopper is False or (hopper is None and triton_knobs):
        return False
    problem = describe(call, backward=True, grad_lse=grad_lse)
    if hopper:
        reason = unsupported("hopper", problem)
        if reason is not None:
            raise ValueError(f"joint_attention: the Hopper backward cannot run this call: {reason}")
    elif choose(problem, allowed=("hopper", "triton")).path != "hopper":
        return False
    launch_backward_hopper(call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse, grads)
    return True


class TritonRuntime:
    """Runs joint attention with our kernels: the Gluon Hopper forward and backward where the dispatcher picks
    them, else the Triton kernels; CUDA tensors, or CPU tensors under TRITON_INTERPRET=1."""

    name = "triton"

    def unsupported(self, call) -> str | None:
        return unsupported("triton", describe(call))

    def forward(self, call, out, joint_out, lse) -> None:
        launch_forward(call, out, joint_out, lse)

    def backward(self, call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse):
        return launch_backward(call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse)
