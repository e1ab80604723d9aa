"""Records the ttnn calls the lowering makes, so that tests can hold each one to ttnn's signatures.

Entry point: `recording()`, a context manager yielding a list that collects a `RecordedCall` (name qualified
under the ttnn module, args, kwargs) for every ttnn call made inside the block.

How: while a block is open, the hook of `runtime/ttnn/module.py` (`wrap_loaded`) makes `load_ttnn()` return the
loaded module behind `Recorded`, a proxy that records each call and then makes it. Outside every block the
lowering gets the module itself. Methods of ttnn objects are recorded because the lowering calls them through
their class (`ttnn.MeshDevice.compute_with_storage_grid_size(device)`). Attribute values that are not callable
(`TILE_LAYOUT`, `bfloat16`, `Topology.Linear`, `__name__`) pass through unwrapped.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from types import ModuleType

from jointattn.runtime.ttnn import module


@dataclass(frozen=True)
class RecordedCall:
    name: str  # qualified under the ttnn module: "transformer.joint_scaled_dot_product_attention"
    args: tuple
    kwargs: dict = field(default_factory=dict)


_recorders: list[list[RecordedCall]] = []


@contextlib.contextmanager
def recording():
    """Collects every ttnn call the lowering makes inside the block (nested blocks each collect them all)."""
    calls: list[RecordedCall] = []
    _recorders.append(calls)
    module.wrap_loaded = _wrap
    try:
        yield calls
    finally:
        _recorders.remove(calls)
        if not _recorders:
            module.wrap_loaded = None


def _wrap(ttnn: ModuleType) -> Recorded:
    return Recorded(ttnn, "")


def _record(name: str, args: tuple, kwargs: dict) -> None:
    for calls in _recorders:
        calls.append(RecordedCall(name, args, dict(kwargs)))


class Recorded:
    """A ttnn attribute seen through the proxy: calling it records the call first."""

    def __init__(self, target, name: str):
        self._target = target
        self._name = name

    def __getattr__(self, attr: str):
        value = getattr(self._target, attr)
        qualified = f"{self._name}.{attr}" if self._name else attr
        if isinstance(value, ModuleType) or callable(value) or _is_namespace(value):
            return Recorded(value, qualified)
        return value

    def __call__(self, *args, **kwargs):
        _record(self._name, args, kwargs)
        return self._target(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<recorded ttnn {self._name or getattr(self._target, '__name__', '?')}>"


def _is_namespace(value) -> bool:
    # `ttnn.transformer` is a module in the wheel and a SimpleNamespace in the emulation.
    return type(value).__name__ == "SimpleNamespace"
