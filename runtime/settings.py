"""Settings a runtime reads at call time: defaults a user may change, and `with overrides(...)` blocks on top.

Used by the ttnn and TT-Lang configs (`runtime/ttnn/config.py`, `runtime/ttlang/config.py`), whose settings are
frozen dataclasses validated in `__post_init__`, so every change is checked where it is made.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Generic, TypeVar

T = TypeVar("T")


class SettingsStack(Generic[T]):
    def __init__(self, defaults: T):
        self._defaults = defaults
        self._stack: list[T] = []

    def current(self) -> T:
        return self._stack[-1] if self._stack else self._defaults

    def set_defaults(self, **changes) -> T:
        self._defaults = dataclasses.replace(self._defaults, **changes)
        return self._defaults

    @contextlib.contextmanager
    def overrides(self, **changes):
        """Changes the settings inside the block only."""
        self._stack.append(dataclasses.replace(self.current(), **changes))
        try:
            yield self.current()
        finally:
            self._stack.pop()
