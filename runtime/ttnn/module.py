"""Which ttnn the lowering talks to, and the one door every call to it goes through.

Entry points:
- `load_ttnn()`: the real `ttnn` module, or the CPU emulation (`jointattn.testing.ttnn_emulation`) when the environment variable
  `JOINTATTN_TTNN=emulate` asks for it. Nothing else selects the emulation: when ttnn cannot be imported and the
  variable is not set, `TtnnUnavailable` says so (never a silent fallback to the emulation).
- `ttnn_api()`: `load_ttnn()` behind a recording proxy. `api.transformer.joint_scaled_dot_product_attention(...)`
  calls the module as usual and, while a `recording()` block is open, appends a `RecordedCall` (qualified name,
  args, kwargs) so tests can bind each call against `signatures.SIGNATURES` and the live module.
  Methods of ttnn objects go through `api.call_method(obj, "MeshDevice.name")` for the same reason.
- `unavailable_reason()`: why ttnn cannot be used here (None when it can).

Attribute values that are not callable (`TILE_LAYOUT`, `bfloat16`, `Topology.Linear`) pass through unwrapped.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from dataclasses import dataclass, field
from types import ModuleType

ENV_VAR = "JOINTATTN_TTNN"
EMULATE = "emulate"


class TtnnUnavailable(RuntimeError):
    """ttnn cannot be imported here and the emulation was not asked for."""


def _python_version() -> str:
    return f"CPython {sys.version_info.major}.{sys.version_info.minor}"


def emulation_requested() -> bool:
    value = os.environ.get(ENV_VAR, "")
    if value not in ("", EMULATE):
        raise ValueError(f"{ENV_VAR} must be unset or {EMULATE!r} (the CPU emulation of ttnn); got {value!r}")
    return value == EMULATE


def import_real_ttnn() -> ModuleType:
    """`import ttnn`, with an error that says where the wheels exist and how to emulate instead."""
    try:
        return importlib.import_module("ttnn")
    except ImportError as error:
        raise TtnnUnavailable(
            f"ttnn not importable on {_python_version()} ({type(error).__name__}: {error}); ttnn wheels exist for "
            f"CPython 3.10 and 3.12. Set {ENV_VAR}={EMULATE} to run the lowering on the CPU emulation instead."
        ) from error


def load_ttnn() -> ModuleType:
    if emulation_requested():
        from jointattn.testing import ttnn_emulation

        return ttnn_emulation
    return import_real_ttnn()


def unavailable_reason() -> str | None:
    try:
        load_ttnn()
    except (TtnnUnavailable, ValueError) as error:
        return str(error)
    return None


@dataclass(frozen=True)
class RecordedCall:
    name: str  # qualified under the ttnn module: "transformer.joint_scaled_dot_product_attention"
    args: tuple
    kwargs: dict = field(default_factory=dict)


_recorders: list[list[RecordedCall]] = []


@contextlib.contextmanager
def recording():
    """Collects every ttnn call made through `ttnn_api()` inside the block."""
    calls: list[RecordedCall] = []
    _recorders.append(calls)
    try:
        yield calls
    finally:
        _recorders.remove(calls)


def _record(name: str, args: tuple, kwargs: dict) -> None:
    for calls in _recorders:
        calls.append(RecordedCall(name, args, dict(kwargs)))


class _Recorded:
    """A ttnn attribute seen through the proxy: calling it records the call first."""

    def __init__(self, target, name: str):
        self._target = target
        self._name = name

    def __getattr__(self, attr: str):
        value = getattr(self._target, attr)
        qualified = f"{self._name}.{attr}" if self._name else attr
        if isinstance(value, ModuleType) or callable(value) or _is_namespace(value):
            return _Recorded(value, qualified)
        return value

    def __call__(self, *args, **kwargs):
        _record(self._name, args, kwargs)
        return self._target(*args, **kwargs)

    def call_method(self, obj, qualified: str, *args, **kwargs):
        """`obj.<method>(*args, **kwargs)`, recorded as `qualified` ("MeshDevice.compute_with_storage_grid_size")."""
        _record(qualified, (obj, *args), kwargs)
        return getattr(obj, qualified.rsplit(".", 1)[1])(*args, **kwargs)

    @property
    def module(self):
        return self._target

    def __repr__(self) -> str:
        return f"<recorded ttnn {self._name or getattr(self._target, '__name__', '?')}>"


def _is_namespace(value) -> bool:
    # `ttnn.transformer` is a module in the wheel and a SimpleNamespace in the emulation.
    return type(value).__name__ == "SimpleNamespace"


def ttnn_api() -> _Recorded:
    """The selected ttnn (see `load_ttnn`) behind the recording proxy."""
    return _Recorded(load_ttnn(), "")
