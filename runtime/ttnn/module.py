"""Which ttnn the lowering talks to: the real `ttnn` module, or the CPU emulation when asked for.

Entry points:
- `load_ttnn()`: the real `ttnn` module, or the CPU emulation (`jointattn.testing.ttnn_emulation`) when the
  environment variable `JOINTATTN_TTNN=emulate` asks for it. Nothing else selects the emulation: when ttnn cannot
  be imported and the variable is not set, `TtnnUnavailable` says so (never a silent fallback to the emulation).
  The lowering calls what it returns directly.
- `unavailable_reason()`: why ttnn cannot be used here (None when it can).

`wrap_loaded` is the one hook for tests: while `jointattn.testing.ttnn_recording.recording()` is open it wraps
the loaded module so that every call is recorded. The product never sets it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from types import ModuleType

ENV_VAR = "JOINTATTN_TTNN"
EMULATE = "emulate"

# Set only by `jointattn.testing.ttnn_recording.recording()`, for the length of its block.
wrap_loaded: Callable[[ModuleType], ModuleType] | None = None


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
        from jointattn.testing import ttnn_emulation as ttnn
    else:
        ttnn = import_real_ttnn()
    return ttnn if wrap_loaded is None else wrap_loaded(ttnn)


def unavailable_reason() -> str | None:
    try:
        load_ttnn()
    except (TtnnUnavailable, ValueError) as error:
        return str(error)
    return None
