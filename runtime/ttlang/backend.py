"""Where TT-Lang kernels run: on a Tenstorrent device through the TT-Lang compiler, or on tt-lang-sim when asked.

Entry points:
- `unavailable_reason(ring_size=1)`: why `runtime="ttlang"` cannot run here (None when it can);
- `execute(request)`: runs one request of `jointattn.kernels.ttlang.program` where `unavailable_reason` said.

`JOINTATTN_TTLANG=sim` selects the simulator, run in a worker process (`simulator.py`). Nothing else selects it:
without the variable the TT-Lang compiler (PyPI `tt-lang`, whose `ttl` has `ttl.operation`; the simulator-only
wheel's does not) and `ttnn` with enough devices must be importable, or the runtime says which is missing and
runs nothing (no silent fallback, as with `JOINTATTN_TTNN=emulate`). On hardware the kernels run in this process
on device 0 (a ring on a (1, R) mesh); that path has never run (no device was available).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

ENV_VAR = "JOINTATTN_TTLANG"
SIM = "sim"


def simulation_requested() -> bool:
    value = os.environ.get(ENV_VAR, "")
    if value not in ("", SIM):
        raise ValueError(
            f"{ENV_VAR} must be unset or {SIM!r} (run the TT-Lang kernels on tt-lang-sim); got {value!r}"
        )
    return value == SIM


def simulator_missing() -> str | None:
    if sys.version_info < (3, 11):
        return f"tt-lang-sim needs CPython >= 3.11; this is {sys.version_info.major}.{sys.version_info.minor}"
    if importlib.util.find_spec("ttl") is None or importlib.util.find_spec("ttl.sim") is None:
        return "tt-lang-sim is not installed (pip install tt-lang-sim==1.1.6, or the [test] extra)"
    return None


def _hardware_missing(ring_size: int) -> str | None:
    hint = f"; set {ENV_VAR}={SIM} to run the kernels on the simulator (tt-lang-sim) instead"
    try:
        ttl = importlib.import_module("ttl")
    except ImportError as error:
        return f"the TT-Lang compiler is not importable ({type(error).__name__}: {error}){hint}"
    if not hasattr(ttl, "operation"):
        return f"only tt-lang-sim is installed, not the TT-Lang compiler (PyPI tt-lang){hint}"
    try:
        ttnn = importlib.import_module("ttnn")
    except ImportError as error:
        return f"ttnn is not importable ({type(error).__name__}: {error}){hint}"
    available = ttnn.get_num_devices()
    if available < ring_size:
        return f"{available} Tenstorrent device(s) (ttnn.get_num_devices()); the call needs {ring_size}{hint}"
    return None


def unavailable_reason(ring_size: int = 1) -> str | None:
    try:
        if simulation_requested():
            return simulator_missing()
    except ValueError as error:
        return str(error)
    return _hardware_missing(ring_size)


def execute(request: dict):
    if simulation_requested():
        from .simulator import simulate

        return simulate(request)
    return _execute_on_device(request)


def _execute_on_device(request: dict):  # pragma: no cover - needs the TT-Lang compiler and a device
    import ttnn
    from jointattn.kernels.ttlang.program import execute as run_program

    device = ttnn.open_device(device_id=0)
    try:
        return run_program(ttnn, device, request)
    finally:
        ttnn.close_device(device)
