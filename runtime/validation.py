"""Argument checks for `joint_attention`, shared by the public wrapper, the fake kernel and every runtime.

Errors name the argument and what was expected, so a user can fix the call without reading this code.
Shape checks run at trace time (the fake kernel calls them); value checks of valid-length tensors run where
the values are visible without a device sync (CPU tensors, Python ints).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

JOINT_STRATEGIES = ("rear",)
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
TENSOR_NAMES = ("q", "k", "v", "joint_q", "joint_k", "joint_v")


@dataclass(frozen=True)
class JointShape:
    """The sizes every joint-attention call is described by."""

    b: int
    nh: int
    n: int
    l: int  # noqa: E741 - the interface's own name for the joint length
    dh: int


def check_tensors(q, k, v, joint_q, joint_k, joint_v) -> JointShape:
    """Checks types, ranks, sizes, dtypes and devices of the six inputs; returns their sizes."""
    tensors = dict(zip(TENSOR_NAMES, (q, k, v, joint_q, joint_k, joint_v)))
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"joint_attention: {name} must be a torch.Tensor; got {type(t).__name__}")
        if t.dim() != 4:
            layout = "[b, nh, N, dh]" if name in ("q", "k", "v") else "[b, nh, L, dh]"
            raise ValueError(
                f"joint_attention: {name} must be a 4-D tensor {layout}; got shape {tuple(t.shape)}"
            )
    if q.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"joint_attention: q must have a floating dtype (float16, bfloat16, float32, float64); got {q.dtype}"
        )
    b, nh, n, dh = q.shape
    l = joint_q.shape[2]  # noqa: E741
    expected = {"k": (b, nh, n, dh), "v": (b, nh, n, dh)}
    expected.update({name: (b, nh, l, dh) for name in ("joint_q", "joint_k", "joint_v")})
    for name, shape in expected.items():
        t = tensors[name]
        if tuple(t.shape) != shape:
            seq = "N" if name in ("k", "v") else "L"
            raise ValueError(
                f"joint_attention: {name} must have shape [b={b}, nh={nh}, {seq}={shape[2]}, dh={dh}] "
                f"(b, nh and dh of q{'' if seq == 'N' else ', L of joint_q'}); got {tuple(t.shape)}"
            )
    for name, t in tensors.items():
        if t.dtype != q.dtype:
            raise TypeError(f"joint_attention: {name} must have dtype {q.dtype} like q; got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"joint_attention: {name} must be on device {q.device} like q; got {t.device}")
    if n + l == 0:
        raise ValueError("joint_attention: N + L must be at least 1; got N = L = 0")
    if dh == 0:
        raise ValueError("joint_attention: dh (the last dim of q, k, v) must be at least 1; got 0")
    return JointShape(b, nh, n, l, dh)


def check_options(joint_strategy, scale, runtime, runtimes) -> None:
    """Checks the non-tensor options against what the op and its runtimes define."""
    if joint_strategy not in JOINT_STRATEGIES:
        raise ValueError(
            f"joint_attention: joint_strategy must be one of {JOINT_STRATEGIES} (joint tokens after the "
            f"spatial ones, as in ttnn); got {joint_strategy!r}"
        )
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"joint_attention: scale must be a float or None; got {type(scale).__name__}")
        if not math.isfinite(scale):
            raise ValueError(f"joint_attention: scale must be finite; got {scale}")
    if runtime not in runtimes:
        raise ValueError(f"joint_attention: runtime must be one of {tuple(runtimes)}; got {runtime!r}")


def check_length_arg(name: str, value, shape: JointShape, device: torch.device) -> None:
    """Checks a valid-length argument: None, an int in [0, limit], or an integer tensor [b] on q's device."""
    limit = shape.n if name == "logical_n" else shape.l
    seq = "N" if name == "logical_n" else "L"
    expected = f"None, an int in [0, {seq}={limit}], or an integer tensor of shape [b={shape.b}]"
    if value is None:
        return
    if isinstance(value, bool):
        raise TypeError(f"joint_attention: {name} must be {expected}; got a bool")
    if isinstance(value, int):
        if not 0 <= value <= limit:
            raise ValueError(f"joint_attention: {name} must be {expected}; got {value}")
        return
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"joint_attention: {name} must be {expected}; got {type(value).__name__}")
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise TypeError(f"joint_attention: {name} must be {expected}; got dtype {value.dtype}")
    if tuple(value.shape) != (shape.b,):
        raise ValueError(f"joint_attention: {name} must be {expected}; got shape {tuple(value.shape)}")
    if value.device != device:
        raise ValueError(f"joint_attention: {name} must be on device {device} like q; got {value.device}")
    check_length_values(name, value, limit, seq)


# A lengths tensor already range-checked carries the stamp (version, storage, limit) of that check: a model passes
# one lengths tensor to every layer and step, and each check costs a host sync (CPU) or device launches (a queued
# assert). An in-place write bumps the version, so the tensor is checked again.
_STAMP = "_jointattn_lengths_checked"


def _stamped(value: torch.Tensor, name: str):
    """What `_stamp` left on `value` under `name`, if the tensor is unchanged since (same version and storage);
    else None (also for a tensor without storage or version, as under inference mode: never stamped)."""
    try:
        stamp = getattr(value, name, None)
        return stamp[2] if stamp is not None and stamp[:2] == (value._version, value.data_ptr()) else None
    except RuntimeError:
        return None


def _stamp(value: torch.Tensor, name: str, payload) -> None:
    try:
        setattr(value, name, (value._version, value.data_ptr(), payload))
    except (AttributeError, RuntimeError):
        pass


def _checked_before(value: torch.Tensor, limit: int) -> bool:
    return _stamped(value, _STAMP) == limit


def _remember_checked(value: torch.Tensor, limit: int) -> None:
    _stamp(value, _STAMP, limit)


def check_length_values(name: str, value: torch.Tensor, limit: int, seq: str) -> None:
    """Range check of per-batch lengths where it costs no device sync: CPU and meta tensors only.

    On accelerators the check is queued as a device assert instead (see `assert_lengths_async`).
    """
    if value.device.type != "cpu" or isinstance(value, torch._subclasses.FakeTensor):
        return
    if _checked_before(value, limit):
        return
    if value.numel() and (int(value.min()) < 0 or int(value.max()) > limit):
        shown = value.tolist() if value.numel() <= 16 else f"min {int(value.min())}, max {int(value.max())}"
        raise ValueError(
            f"joint_attention: every entry of {name} must lie in [0, {seq}={limit}]; got {shown}"
        )
    _remember_checked(value, limit)


def assert_lengths_async(name: str, value: torch.Tensor | None, limit: int) -> None:
    """Queues a device-side range check of per-batch lengths: no host sync, the stream fails if violated.
    Once per tensor and version (a failed check fails the stream anyway)."""
    if (
        value is None
        or value.device.type in ("cpu", "meta")
        or isinstance(value, torch._subclasses.FakeTensor)
    ):
        return
    if _checked_before(value, limit):
        return
    torch._assert_async(((value >= 0) & (value <= limit)).all(), f"{name} out of range [0, {limit}]")
    _remember_checked(value, limit)


# The lengths' values as the host last read them, stamped like the range check: (version, storage, values). The
# sdpa path cuts padded calls to their valid keys on the host; a model passes one lengths tensor to every layer
# and to the backward, so the device sync of that read happens once per tensor and version.
_HOST_STAMP = "_jointattn_host_lengths"


def host_lengths(value: torch.Tensor) -> tuple[int, ...]:
    """The per-batch lengths as ints: read from the device once per tensor and version (a host sync on a GPU),
    then from the tensor's stamp; an in-place write bumps the version and they are read again."""
    values = _stamped(value, _HOST_STAMP)
    if values is None:
        values = tuple(int(x) for x in value.tolist())
        _stamp(value, _HOST_STAMP, values)
    return values


_FULL_LENGTHS: dict = {}


def as_length_tensor(value, b: int, full: int, device) -> torch.Tensor | None:
    """An int valid length as a [b] int32 tensor (made once per value, batch and device, and only ever read);
    None, or an int meaning "all valid", as None (no masking at all); tensors pass through, made contiguous."""
    if isinstance(value, torch.Tensor):
        return value.contiguous()  # the kernels read element bz at offset bz
    if value is None:
        return value
    if value == full:
        return None
    if torch.compiler.is_compiling():  # traced code makes its own (a cached tensor would become a constant)
        return torch.full((b,), int(value), dtype=torch.int32, device=device)
    key = (b, int(value), torch.device(device))
    made = _FULL_LENGTHS.get(key)
    if made is None or made._version != 0:  # never handed out for writing, but a caller could write it anyway
        if len(_FULL_LENGTHS) > 256:
            _FULL_LENGTHS.clear()
        made = _FULL_LENGTHS[key] = torch.full((b,), int(value), dtype=torch.int32, device=device)
        _stamp(made, _HOST_STAMP, (int(value),) * b)  # known here: no device read later
    return made
