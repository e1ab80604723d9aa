"""Which implementation runs a joint-attention call, and why: the one answer the runtime, the Hopper launcher,
the MLIR lowering and `jointattn.explain` all ask for, so that no kernel's limits are written twice.

Entry points:
- `describe(call, backward=False, grad_lse=None) -> Problem`: the facts a choice depends on (device and GPU
  architecture, dtype, sizes, padding, scale sign, whether the tensors are TMA-addressable, the pass).
- `choose(problem, allowed=PATHS) -> Choice`: the path that runs it and the reason.
- `choose_training(problem) -> Choice`: for a call whose backward follows, "sdpa" (the unfused graph runs the
  step) or "op" (each pass on `choose`'s path), weighed over forward + backward.
- `unsupported(path, problem)`: why one path cannot run a problem (None if it can): every kernel's envelope,
  stated once.
- `choose_sparse(problem, q_block, kv_block, spatial_padded)`: the block-sparse op's kernel for a pass (the Gluon
  forward or backward, the Triton kernels or the reference), from `sparse_hopper_unsupported` and
  `sparse_triton_unsupported`.

The paths:
- "hopper": the Gluon kernels with FlashAttention-3's schedules, forward and backward
  (`kernels/joint_attention_{fwd,bwd}_hopper.py`);
- "triton": the Triton kernels, forward and backward (`kernels/joint_attention_{fwd,bwd}.py`);
- "sdpa": cat -> PyTorch's SDPA -> slice, with its log-sum-exp; padded calls as unpad -> SDPA -> pad, the valid
  keys cut out by lengths read on the host once per lengths tensor (`runtime/sdpa_runtime.py`);
- "reference": the exact plain-torch reference (any device, any dtype).

How the choice is made, in order:
1. `JOINTATTN_DISPATCH` forces a path for debugging ("triton", or per pass "forward=hopper,backward=sdpa"); a
   forced path that cannot run the call raises, it never silently runs another.
2. Paths that cannot run the call are out (`unsupported`).
3. Among the rest, the fastest in the committed measurements (`runtime/dispatch_measurements.json`, written by
   `benchmarks/never_slower.py --write-table` on a GPU): the measured point of the same GPU architecture,
   dtype, head dim, pass and padding nearest in (log b*nh, log N, log L). A kernel of ours that point did not
   time (one measured at fewer points, as the Hopper backward is) gets that point's time of another path scaled
   by the two paths' ratio at the nearest point that timed both; likewise the sdpa path at a padded point the
   table did not time it at (tables measured before it took padded calls), from unpadded points.
4. Where nothing was measured for this GPU: the kernels' defaults (the Hopper forward where its config is marked
   default, else the Triton kernel; the SDPA backward, which measured twice as fast as our Triton backward on
   H100 and H200), then the reference.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..kernels.configs import (
    hopper_backward_config,
    hopper_forward_config,
    hopper_head_dims,
    hopper_sparse_backward_config,
    hopper_sparse_forward_config,
)
from . import sdpa_runtime

PATHS = ("hopper", "triton", "sdpa", "reference")
DISPATCH_ENV = "JOINTATTN_DISPATCH"
HOPPER_ENV = "JOINTATTN_HOPPER_KERNEL"
MEASUREMENTS = Path(__file__).with_name("dispatch_measurements.json")

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256
_HOPPER_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Problem:
    """One call as the choice sees it."""

    device: str  # "cuda", "cpu", ...
    arch: str | None  # "sm_90" for a CUDA device of compute capability 9.0; None elsewhere
    interpreting: bool  # Triton's CPU interpreter (TRITON_INTERPRET=1)
    dtype: torch.dtype
    b: int
    nh: int
    n: int
    l: int  # noqa: E741
    dh: int
    padded: bool  # valid lengths given (keys past them do not exist)
    positive_scale: bool
    tma_ok: bool  # every input TMA-addressable (unit dh stride, 16-byte aligned strides and base, rows)
    backward: bool = False
    grad_lse: bool = False  # the backward carries a gradient through lse
    capturing: bool = False  # a padded CUDA call while a CUDA graph is captured (no host read of the lengths)

    @property
    def pass_name(self) -> str:
        return "backward" if self.backward else "forward"


@dataclass(frozen=True)
class Choice:
    path: str
    reason: str
    measured: bool = False  # made from the table's measurements (not a default, an override or a limit)

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"


def _capability(device: torch.device) -> tuple[int, int]:
    return _cached_capability(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _cached_capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def tma_addressable(t: torch.Tensor) -> bool:
    """A TMA descriptor can describe `t` as it is: rows present, unit stride along dh, every other stride and the
    base 16-byte aligned (a 0 stride, from expand, is not)."""
    size = t.element_size()
    return (
        t.numel() > 0
        and t.stride(-1) == 1
        and t.data_ptr() % 16 == 0
        and all(s > 0 and (s * size) % 16 == 0 for s in t.stride()[:-1])
    )


def describe(call, *, backward: bool = False, grad_lse=None) -> Problem:
    """The problem of a validated call (`call.JointCall`)."""
    padded = call.logical_n is not None or call.logical_l is not None
    return describe_tensors(call.tensors, call.scale, padded, backward=backward, grad_lse=grad_lse)


def describe_tensors(tensors, scale: float, padded: bool, *, backward=False, grad_lse=None) -> Problem:
    """The problem of six tensors q, k, v, joint_q, joint_k, joint_v (for launchers that take them apart)."""
    q, joint_q = tensors[0], tensors[3]
    b, nh, n, dh = q.shape
    is_cuda = q.device.type == "cuda"
    arch = None
    if is_cuda and torch.version.hip is None:
        major, minor = _capability(q.device)
        arch = f"sm_{major}{minor}"
    return Problem(
        device=q.device.type,
        arch=arch,
        interpreting=os.environ.get("TRITON_INTERPRET", "0") == "1",
        dtype=q.dtype,
        b=b,
        nh=nh,
        n=n,
        l=joint_q.shape[2],
        dh=dh,
        padded=padded,
        positive_scale=float(scale) > 0,
        # An empty token set is never loaded (the launchers pass the other set's tensors in its place).
        tma_ok=is_cuda and all(tma_addressable(t) for t in tensors if t.numel() > 0),
        backward=backward,
        grad_lse=grad_lse is not None,
        capturing=padded and is_cuda and torch.cuda.is_current_stream_capturing(),
    )


def planned_problem(
    dtype: torch.dtype,
    b: int,
    nh: int,
    n: int,
    l: int,  # noqa: E741
    dh: int,
    *,
    arch: str = "sm_90",
    padded: bool = False,
    backward: bool = False,
) -> Problem:
    """A problem known only from types and sizes (the MLIR lowering, `explain`): a CUDA GPU of `arch`, a
    positive scale and TMA-addressable tensors assumed; the launch re-checks the real tensors."""
    return Problem(
        device="cuda", arch=arch, interpreting=False, dtype=dtype, b=b, nh=nh, n=n, l=l, dh=dh, padded=padded,
        positive_scale=True, tma_ok=True, backward=backward,
    )  # fmt: skip


def describe_meta(q, joint_q, padded: bool, *, backward: bool = False) -> Problem:
    """A problem from shapes, dtype and device alone (fake tensors, as `explain` sees the fused graph): a
    positive scale and TMA-addressable layouts assumed; a call re-checks its real tensors."""
    b, nh, n, dh = q.shape
    arch = None
    if q.device.type == "cuda" and torch.version.hip is None and torch.cuda.is_available():
        major, minor = _capability(q.device)
        arch = f"sm_{major}{minor}"
    return Problem(
        device=q.device.type, arch=arch, interpreting=os.environ.get("TRITON_INTERPRET", "0") == "1",
        dtype=q.dtype, b=int(b), nh=int(nh), n=int(n), l=int(joint_q.shape[2]), dh=int(dh), padded=padded,
        positive_scale=True, tma_ok=q.device.type == "cuda", backward=backward,
    )  # fmt: skip


# --- what each path can run ---------------------------------------------------------------------------------

_INTERPRETER_BF16 = (
    "Triton 3.6's interpreter multiplies bfloat16 matrices wrongly (tl.dot on the raw bits); "
    "interpret mode takes float32 or float16"
)


def _triton_unsupported(p: Problem) -> str | None:
    if _triton_import_error() is not None:
        return f"triton cannot be imported ({_triton_import_error()})"
    if p.dtype not in TRITON_DTYPES:
        return f"the Triton kernels take float16, bfloat16 or float32; got {p.dtype}"
    if not 1 <= p.dh <= MAX_HEAD_DIM:
        return f"the Triton kernels support 1 <= dh <= {MAX_HEAD_DIM}; got dh={p.dh}"
    if p.device == "cuda":
        if p.arch is not None and int(p.arch[3:]) < 80:
            return f"the Triton kernels need a CUDA GPU of compute capability 8.0+; got {p.arch}"
        return None
    if p.device == "cpu":
        if not p.interpreting:
            return "CPU tensors run the Triton kernels only in its interpreter (set TRITON_INTERPRET=1)"
        if p.dtype == torch.bfloat16:
            return _INTERPRETER_BF16
        return None
    return f"the Triton kernels run on CUDA tensors (or CPU under TRITON_INTERPRET=1); got {p.device}"


def _hopper_unsupported(p: Problem) -> str | None:
    """The envelope of the Gluon Hopper kernels, forward (`joint_attention_fwd_hopper.py`) and backward
    (`joint_attention_bwd_hopper.py`): an NVIDIA GPU of compute capability 9.x, float16/bfloat16, a dh with a
    config for the pass (forward 64, 128, 256; backward 64, 128), a positive scale, every input TMA-addressable; any N and L (either may be
    0), padding on both sets, and (backward) a gradient through lse. The launchers also need the tensors the
    kernels move by TMA beside the inputs addressable (the forward's outputs, the backward's output
    gradients), checked at launch."""
    if os.environ.get(HOPPER_ENV, "1") == "0":
        return f"{HOPPER_ENV}=0"
    if _gluon_import_error() is not None:
        return f"Gluon cannot be imported ({_gluon_import_error()})"
    if p.device != "cuda" or p.interpreting:
        return "the Hopper kernel runs on CUDA devices only (Gluon has no interpreter)"
    if p.arch is None:
        return "the Hopper kernel is NVIDIA code (this is not an NVIDIA CUDA device)"
    if not p.arch.startswith("sm_9"):
        return f"the Hopper kernel needs compute capability 9.x; got {p.arch}"
    if p.dtype not in _HOPPER_DTYPES:
        return f"the Hopper kernel takes float16 or bfloat16; got {p.dtype}"
    config = hopper_backward_config(p.dh) if p.backward else hopper_forward_config(p.dh)
    if config is None:
        dhs = ", ".join(map(str, hopper_head_dims(p.backward)))
        return f"the Hopper kernel has {p.pass_name} configs for dh {dhs}; got dh={p.dh}"
    if not p.positive_scale:
        return "the Hopper kernel's softmax assumes a positive scale"
    if not p.tma_ok:
        return "a tensor's layout is not TMA-addressable (unit dh stride, 16-byte aligned strides and base)"
    return None


# --- the block-sparse op's kernels (`runtime/ops/sparse.py`) ----------------------------------------------


def sparse_hopper_unsupported(p: Problem, q_block: int, kv_block: int, spatial_padded: bool) -> str | None:
    """Why the Gluon block-sparse kernels cannot run pass `p` under a mask of q_block x kv_block blocks, or None:
    the dense Hopper kernels' envelope for the pass and an unpadded spatial set (a padded one's partial last
    block could only be loaded by reading keys of the block before it), and
    - forward (`sparse_joint_attention_fwd_hopper.py`): query blocks that hold whole CTAs (2 * BLOCK_M rows),
      key blocks a multiple of 16 that divide, or are multiples of, the key tile;
    - backward (`sparse_joint_attention_bwd_hopper.py`): query blocks a multiple of its BLOCK_M rows and key
      blocks a multiple of its CTA's keys (a CTA's keys sit in one block, whose query list it walks), N > 0."""
    reason = _hopper_unsupported(p)
    if reason is not None:
        return reason
    if spatial_padded:
        return "a padded spatial set: the Hopper sparse kernel would read keys outside the listed blocks"
    if p.backward:
        config = hopper_sparse_backward_config(p.dh)
        rows, keys = config.block_m, config.keys_per_wg
        if q_block % rows:
            return f"query blocks of {q_block} rows; the Hopper sparse backward needs a multiple of {rows}"
        if kv_block % keys:
            return f"key blocks of {kv_block}; the Hopper sparse backward needs a multiple of {keys}"
        if p.n == 0:
            return "no spatial tokens: the Hopper sparse backward walks the spatial set's lists"
        return None
    config = hopper_sparse_forward_config(p.dh)
    if config is None:
        dhs = ", ".join(map(str, hopper_head_dims(sparse=True)))
        return f"the Hopper sparse forward has configs for dh {dhs}; got dh={p.dh}"
    rows, tile = 2 * config.block_m, config.block_n
    if q_block % rows:
        return f"query blocks of {q_block} rows; the Hopper sparse kernel needs a multiple of {rows}"
    if kv_block % 16 or (tile % kv_block and kv_block % tile):
        return f"key blocks of {kv_block}; the Hopper sparse kernel needs 16, 32, 64 or a multiple of {tile}"
    return None


def sparse_triton_unsupported(p: Problem, q_block: int, kv_block: int) -> str | None:
    """Why the Triton block-sparse kernels (`kernels/sparse_joint_attention_{fwd,bwd}.py`) cannot run `p`, or
    None: the dense Triton kernels' envelope, and mask blocks a multiple of 16 (their tiles sit inside the
    blocks, and the MMA's K step is 16)."""
    reason = _triton_unsupported(p)
    if reason is None and (q_block % 16 or kv_block % 16):
        reason = f"mask blocks {q_block}x{kv_block}; the kernels need multiples of 16"
    return reason


def choose_sparse(p: Problem, q_block: int, kv_block: int, spatial_padded: bool) -> Choice:
    """The kernel that runs a pass of a block-sparse call under `runtime="auto"` (or "triton", which names our
    kernels): "hopper", "triton", or "reference" where neither can. Not timed against each other: the Gluon
    forward measured 1.7-1.9x faster than the Triton one at every mask of `benchmarks/sparse.py`."""
    reason = sparse_hopper_unsupported(p, q_block, kv_block, spatial_padded)
    if reason is None:
        return Choice(
            "hopper", f"the Gluon block-sparse {p.pass_name} (FA3's schedule over the mask's block lists)"
        )
    triton_reason = sparse_triton_unsupported(p, q_block, kv_block)
    if triton_reason is None:
        return Choice("triton", f"the Triton block-sparse kernels; not the Hopper kernel: {reason}")
    return Choice("reference", f"the exact reference; not the kernels: {triton_reason}")


def _sdpa_unsupported(p: Problem) -> str | None:
    if p.capturing:
        return "padding inside a CUDA graph capture: the sdpa path cuts the valid keys by lengths read on the host"
    if p.backward and p.grad_lse:
        return "a gradient through lse: PyTorch's SDPA backward takes none"
    backend = sdpa_runtime.backend_for(torch.device(p.device), p.dtype)
    if backend is None:
        return f"no SDPA kernel with a log-sum-exp for {p.dtype} on {p.device}"
    if backend == "gpu" and (p.dh % 8 or p.dh > 256):
        return f"PyTorch's GPU SDPA kernels take dh <= 256, a multiple of 8; got dh={p.dh}"
    return None


_UNSUPPORTED = {
    "hopper": _hopper_unsupported,
    "triton": _triton_unsupported,
    "sdpa": _sdpa_unsupported,
    "reference": lambda p: None,
}


def unsupported(path: str, p: Problem) -> str | None:
    """Why `path` cannot run problem `p`, or None."""
    return _UNSUPPORTED[path](p)


@functools.cache
def _triton_import_error() -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError as e:  # pragma: no cover - exercised only where triton is absent
        return f"{type(e).__name__}: {e}"
    return None


@functools.cache
def _gluon_import_error() -> str | None:
    try:
        from triton.experimental.gluon import language  # noqa: F401
    except ImportError as e:  # pragma: no cover - Gluon is experimental; other Triton versions may lack it
        return f"{type(e).__name__}: {e}"
    return None


# --- the choice -------------------------------------------------------------------------------------------


def forced_path(backward: bool) -> str | None:
    """The path `JOINTATTN_DISPATCH` forces for this pass, or None."""
    value = os.environ.get(DISPATCH_ENV, "").strip()
    if not value:
        return None
    if "=" not in value:
        path = value
    else:
        parts = dict(item.split("=", 1) for item in value.split(",") if "=" in item)
        unknown = set(parts) - {"forward", "backward"}
        if unknown:
            raise ValueError(
                f"{DISPATCH_ENV}: passes are 'forward' and 'backward'; got {sorted(unknown)} in {value!r}"
            )
        path = parts.get("backward" if backward else "forward")
        if path is None:
            return None
    if path not in PATHS:
        raise ValueError(
            f"{DISPATCH_ENV} must name one of {PATHS} (or forward=...,backward=...); got {value!r}"
        )
    return path


def choose(p: Problem, allowed: tuple[str, ...] = PATHS) -> Choice:
    """The path that runs `p` among `allowed` (see the module docstring for the order of the rules). Cached per
    problem: a call's host time must not grow with the table."""
    return _choose(p, allowed, os.environ.get(DISPATCH_ENV, ""), os.environ.get(HOPPER_ENV, "1"))


@functools.lru_cache(maxsize=4096)
def _choose(p: Problem, allowed: tuple[str, ...], _forced: str, _hopper: str) -> Choice:
    forced = forced_path(p.backward)
    if (
        forced is not None and forced in allowed
    ):  # a caller that narrowed the paths (runtime="triton") keeps them
        reason = unsupported(forced, p)
        if reason is not None:
            raise ValueError(
                f"joint_attention: {DISPATCH_ENV} forces {forced!r}, which cannot run this call: {reason}"
            )
        return Choice(forced, f"{DISPATCH_ENV}={os.environ[DISPATCH_ENV]}")
    candidates = [path for path in allowed if unsupported(path, p) is None]
    if not candidates:
        reasons = "; ".join(f"{path}: {unsupported(path, p)}" for path in allowed)
        raise ValueError(f"joint_attention: no allowed path can run this call ({reasons})")
    measured = _measured_best(p, candidates)
    if measured is not None:
        return measured
    return _default(p, candidates)


def _default(p: Problem, candidates: list[str]) -> Choice:
    if p.backward:
        order = ("sdpa", "triton", "reference")
        why = "no measurement for this GPU; the SDPA backward measured 2x our Triton backward (H100, H200)"
    else:
        config = hopper_forward_config(p.dh)
        hopper_first = config is not None and config.default
        order = ("hopper", "triton", "sdpa", "reference") if hopper_first else ("triton", "sdpa", "reference")
        why = "no measurement for this GPU; the kernels' default"
    if p.arch is None:
        why = f"no GPU measurements apply on {p.device}: the first of {', '.join(order)} that runs here"
    for path in order:
        if path in candidates:
            return Choice(path, why if path != "reference" else "the only path that runs this call")
    return Choice(candidates[0], "the only path that runs this call")


# --- measurements ------------------------------------------------------------------------------------------


def _table() -> dict:
    return _load_table()


@functools.cache
def _load_table() -> dict:
    if not MEASUREMENTS.exists():
        return {}
    return json.loads(MEASUREMENTS.read_text())


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# Host time the op's layers (custom ops, Python autograd function, gradient copies) add to an eager forward +
# backward over running PyTorch's SDPA directly, as `runtime/ops/eager_sdpa.py` does: 0.19-0.26 ms on the
# H200's host (`benchmarks/results/host_overhead-h200.json`, op[auto] against op[sdpa] fwd+bwd); the lower
# bound, rounded down. The per-pass table cannot see it: it times each pass through the op.
EAGER_OP_AUTOGRAD_MS = 0.15

# Eager training steps of at most this much work (`step_flops`) run as the unfused graph whatever the per-pass
# table says: they are host time, and the op's layers cost more of it than the whole unfused step. In the H200's
# full grid (fifteenth session, `benchmarks/results/never_slower.json`) every step at or below it that the table
# sent to the op took 1.24-2.0 ms against PyTorch's best 0.27-0.68 (9 points, ratio 0.21-0.44), where the eager
# shortcut's steps took 0.55-1.2 ms; above ~5e11 the op's kernels win steps (SD3.5, Mochi).
HOST_BOUND_STEP_FLOPS = 3e11


def step_flops(p: Problem) -> float:
    """A training step's attention work: forward and backward, 3.5 x the forward's 4 * b * nh * S^2 * dh."""
    s = p.n + p.l
    return 3.5 * 4 * p.b * p.nh * s * s * p.dh


def measured_times(p: Problem) -> dict[str, float]:
    """Each path's time (ms) at the measured point nearest `p`, estimates included; empty where none applies."""
    return _supported_times(p)[0]


def _supported_times(p: Problem) -> tuple[dict[str, float], dict | None]:
    """(each path that can run `p`: its time at the nearest measured point, estimates included; that point's
    row), or ({}, None)."""
    found = _measured(p, [path for path in PATHS if unsupported(path, p) is None])
    return (found[0], found[1]) if found else ({}, None)


def choose_training(p: Problem, op_layers_ms: float = EAGER_OP_AUTOGRAD_MS) -> Choice:
    """How a call that records autograd (so its backward follows) runs both passes: "sdpa", as the unfused graph
    does (cat -> SDPA -> slice under PyTorch's autograd: the eager shortcut, `runtime/ops/eager_sdpa.py`, or the
    original graph a compiled model keeps), or "op" (the op, each pass on the path `choose` picks for it). `p`
    is the forward's problem; `op_layers_ms` what the op's layers add to the step (eager: its custom-op and
    autograd layers, `EAGER_OP_AUTOGRAD_MS`; 0 in a compiled graph, where AOTAutograd traced them away).

    Why a rule over both passes: the per-pass table times each pass alone, and the op's sdpa backward joins q,
    k, v, out and its gradient again where the unfused graph kept its joins from the forward, so a forward of
    ours that beats SDPA's by less than those joins cost loses the step (Flux's size on the H200: the unfused
    graph 2.08 ms, our forward + backward 2.19; `benchmarks/NOTES-dispatch.md`). The estimate: each pass's
    times at its nearest measured point, scaled to this call by attention work (b*nh*(N+L)^2*dh; the nearest
    forward and backward points can differ); the unfused step = the table's two sdpa passes less the joins it
    does not repeat, which the nearest "fwd+bwd" row (the unfused step, timed) gives as the difference, at
    least 0, scaled by the bytes joined (b*nh*(N+L)*dh); against the per-pass choices plus `op_layers_ms`.
    The table's sdpa forward is timed as the eager shortcut runs it (no op layers) and its backwards through
    the backward op alone, so at host-bound sizes that difference is host time as much as joins; it is
    clamped at 0 there. Without a "fwd+bwd" row: "sdpa" only where the forward picks it and the backward
    picks it or is measured within `op_layers_ms` of it. A pass forced by `JOINTATTN_DISPATCH` to another path
    than sdpa keeps the op; one forced to sdpa is weighed as chosen.

    Eager steps of at most `HOST_BOUND_STEP_FLOPS` on a GPU run the unfused graph without an estimate (host
    time: the table's per-pass rows there are host time too, and noisy).

    Not seen by the estimate: a loss that reads lse (ring attention's merges), which costs the unfused graph one
    more SDPA forward and backward (`eager_sdpa._lse_gradient`), where our kernels take it in the same backward."""
    back = dataclasses.replace(p, backward=True)
    forward, backward = choose(p), choose(back)
    if forward.path == backward.path == "sdpa":
        return Choice(
            "sdpa",
            f"both passes pick sdpa (forward: {forward}; backward: {backward})",
            measured=forward.measured and backward.measured,
        )
    forced = {name: forced_path(name == "backward") for name in ("forward", "backward")}
    if any(path not in (None, "sdpa") for path in forced.values()):
        said = ", ".join(f"the {name} to {path}" for name, path in forced.items() if path is not None)
        return Choice("op", f"{DISPATCH_ENV} forces {said}")
    if op_layers_ms > 0 and p.device == "cuda" and step_flops(p) <= HOST_BOUND_STEP_FLOPS:
        return Choice(
            "sdpa",
            f"an eager step of {step_flops(p):.3g} FLOPs (at most {HOST_BOUND_STEP_FLOPS:.0e}) is host time, where "
            "the op's layers cost more than the unfused step",
            measured=True,
        )
    f_times, b_times = _times_here(p), _times_here(back)
    joins = _unrepeated_joins_ms(p)
    if (
        joins is not None
        and {"sdpa", forward.path} <= f_times.keys()
        and {"sdpa", backward.path} <= b_times.keys()
    ):
        unfused = f_times["sdpa"] + b_times["sdpa"] - joins[0]
        op_ms = f_times[forward.path] + b_times[backward.path] + op_layers_ms
        return Choice(
            "sdpa" if unfused <= op_ms else "op",
            f"forward + backward estimated {unfused:.3f} ms as the unfused graph (the sdpa passes "
            f"{f_times['sdpa']:.3f} + {b_times['sdpa']:.3f} less {joins[0]:.3f} of joins, {joins[1]}) vs "
            f"{op_ms:.3f} through the op ({forward.path} {f_times[forward.path]:.3f} + {backward.path} "
            f"{b_times[backward.path]:.3f} + its layers {op_layers_ms})",
            measured=True,
        )
    times = measured_times(back)  # as measured: the nearest point's, unscaled
    near = (
        forward.path == "sdpa"
        and {"sdpa", backward.path} <= times.keys()
        and times["sdpa"] <= times[backward.path] + op_layers_ms
    )
    return Choice(
        "sdpa" if near else "op",
        f"no forward + backward measurement applies; forward: {forward}; the sdpa backward "
        f"{'within' if near else 'not within'} the op's layers ({op_layers_ms} ms) of the backward's choice: "
        f"{backward}",
        measured=near and forward.measured,
    )


def _work(b_nh: int, n: int, l: int, dh: int) -> int:  # noqa: E741
    """Attention work of a point, up to a constant: what a pass's time scales with away from the host-bound
    sizes."""
    return b_nh * (n + l) ** 2 * dh


def _times_here(p: Problem) -> dict[str, float]:
    """Each supported path's time at its nearest measured point (estimates included), scaled to `p` by
    attention work."""
    timed, row = _supported_times(p)
    if row is None:
        return {}
    scale = _work(p.b * p.nh, p.n, p.l, p.dh) / max(1, _work(row["b_nh"], row["n"], row["l"], p.dh))
    return {path: ms * scale for path, ms in timed.items()}


def _unrepeated_joins_ms(p: Problem) -> tuple[float, str] | None:
    """(ms, where) of the joins the table's two sdpa passes pay beyond the unfused graph's forward + backward: at
    the nearest "fwd+bwd" row (per-pass sdpa times there less the unfused step's, at least 0), scaled to `p` by
    the bytes joined; None where no such row (with per-pass sdpa times at its point) exists."""
    found = _nearest_rows(p, "fwd+bwd")
    if found is None:
        return None
    rows, dtype, distance = found
    for row in sorted((r for r in rows if r["ms"].get("sdpa")), key=distance):
        point = (row["b_nh"], row["n"], row["l"])
        same = {
            r["pass"]: r["ms"].get("sdpa")
            for r in _rows(p, "forward", dtype, (row["padded"],))
            + _rows(p, "backward", dtype, (row["padded"],))
            if (r["b_nh"], r["n"], r["l"]) == point
        }
        if same.get("forward") and same.get("backward"):
            joins = max(0.0, same["forward"] + same["backward"] - row["ms"]["sdpa"])
            scale = (p.b * p.nh * (p.n + p.l)) / (row["b_nh"] * (row["n"] + row["l"]))
            return joins * scale, f"{joins:.3f} measured at b*nh={point[0]}, N={point[1]}, L={point[2]}"
    return None


def _measured_best(p: Problem, candidates: list[str]) -> Choice | None:
    found = _measured(p, candidates)
    if found is None:
        return None
    timed, nearest, notes = found
    best = min(timed, key=timed.get)
    where = f"b*nh={nearest['b_nh']}, N={nearest['n']}, L={nearest['l']}"
    others = ", ".join(f"{k} {v:.3f}" for k, v in sorted(timed.items(), key=lambda kv: kv[1]) if k != best)
    return Choice(
        best,
        f"fastest measured on {p.arch} at {where}: {timed[best]:.3f} ms"
        + (f" vs {others}" if others else "")
        + "".join(f"; {path} {note}" for path, note in notes.items()),
        measured=True,
    )


def _measured(p: Problem, candidates: list[str]) -> tuple[dict, dict, dict] | None:
    """(ms per candidate path, the nearest measured point, notes on estimated times) or None."""
    found = _nearest_rows(p, p.pass_name)
    if found is None:
        return None
    rows, dtype, distance = found
    nearest = min(rows, key=distance)
    timed = {path: ms for path, ms in nearest["ms"].items() if path in candidates and ms is not None}
    if not timed:
        return None
    notes = {}
    # A kernel of ours added after the point was measured, or the sdpa path at a padded point of a table that
    # predates its padded calls: scaled from where it was measured (the sdpa path's padded call runs the same
    # SDPA over the valid keys alone, so its unpadded time bounds it).
    for path in _OUR_KERNELS + (("sdpa",) if p.padded else ()):
        if path in candidates and path not in timed:
            both = _rows(p, p.pass_name, dtype, (p.padded, not p.padded))
            found = _scaled_estimate(path, nearest, both, distance)
            if found is not None:
                timed[path], notes[path] = found
    return timed, nearest, notes


def _rows(p: Problem, pass_name: str, dtype: torch.dtype, padded: tuple[bool, ...]) -> list[dict]:
    """The table's rows of `p`'s GPU architecture and head dim for this pass ("forward", "backward" or
    "fwd+bwd"), dtype and padding."""
    return [
        r
        for r in _table().get("rows", [])
        if r["arch"] == p.arch
        and r["dtype"] == _dtype_name(dtype)
        and r["dh"] == p.dh
        and r["pass"] == pass_name
        and r["padded"] in padded
    ]


def _nearest_rows(p: Problem, pass_name: str):
    """(rows, their dtype, distance to `p`) for `pass_name`, or None: the rows of p's dtype, else of the other
    half-precision dtype (fp16 and bf16 run the same kernels at the same speed)."""
    if p.arch is None:
        return None
    dtype = p.dtype
    rows = _rows(p, pass_name, dtype, (p.padded,))
    if not rows and p.dtype in _HOPPER_DTYPES:
        dtype = torch.bfloat16 if p.dtype == torch.float16 else torch.float16
        rows = _rows(p, pass_name, dtype, (p.padded,))
    if not rows:
        return None

    def distance(r):
        return sum(
            (math.log(1 + a) - math.log(1 + c)) ** 2
            for a, c in ((r["b_nh"], p.b * p.nh), (r["n"], p.n), (r["l"], p.l))
        )

    return rows, dtype, distance


_OUR_KERNELS = ("hopper", "triton")


def _scaled_estimate(path: str, nearest: dict, rows: list, distance) -> tuple[float, str] | None:
    """A time for `path` at the `nearest` point, where the table did not measure it: the point's time of another
    path times the ratio of the two at the nearest point where both were measured (padding either way). The
    table's cost model for kernels measured at fewer points than the rest (the Hopper backward)."""
    measured = {k: v for k, v in nearest["ms"].items() if v is not None and k != path}
    pairs = [r for r in rows if r["ms"].get(path) is not None and any(r["ms"].get(k) for k in measured)]
    if not pairs:
        return None
    source = min(pairs, key=distance)
    other = min((k for k in measured if source["ms"].get(k)), key=lambda k: measured[k])
    ratio = source["ms"][path] / source["ms"][other]
    where = f"b*nh={source['b_nh']}, N={source['n']}, L={source['l']}{', padded' if source['padded'] else ''}"
    return measured[other] * ratio, f"estimated: {other}'s time x {ratio:.2f}, their ratio at {where}"


_generation = 0


def generation() -> int:
    """How many times the table was reloaded: callers that cache choices themselves key them on it."""
    return _generation


def reload_measurements() -> None:
    """Forget the cached table and choices (after the benchmark rewrote the table, or in tests)."""
    global _generation
    _generation += 1
    _load_table.cache_clear()
    _choose.cache_clear()
