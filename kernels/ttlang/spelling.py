"""The `ttl` the kernels import: the TT-Lang compiler's module as it is, or tt-lang-sim's with the compiler's spelling.

The kernels are written once, in the spelling of the compiler (PyPI `tt-lang` 1.1.1), which reads their source and
resolves `ttl.X` / `ttl.math.X` by name, so that spelling is the one in the source. tt-lang-sim 1.1.6 spells four
of those calls differently; on the simulator this module maps them (see kernels/ttlang/COMPILER.md):

| compiler 1.1.1 (the kernels' spelling)    | tt-lang-sim 1.1.6                                          |
| ---                                       | ---                                                        |
| `ttl.math.fill(out_blk, value)`           | `ttl.block.fill(value, shape=out_blk.shape)`               |
| `ttl.math.broadcast(x, out_blk, dims=d)`  | `ttl.block.broadcast(x, dims=d, shape=out_blk.shape)`      |
| `ttl.math.reduce_max(x, scaler, dims=d)`  | `ttl.math.reduce_max(x, dims=d, shape=...)` x the scaler   |
| `ttl.math.reduce_sum(x, scaler, dims=d)`  | `ttl.math.reduce_sum(x, dims=d, shape=...)` x the scaler   |
| `ttl.math.transpose(x)`                   | `ttl.block.transpose(x)`                                   |

Everything else (`ttl.operation`, `compute`, `datamovement`, `make_dataflow_buffer_like`, `copy`, `node`, the
elementwise `ttl.math` functions) is spelled the same and passes through. The simulator's worker puts tt-lang-sim's
namespace under the name `ttl` before the kernels are imported (`jointattn.runtime.ttlang.sim_worker`).
"""

from __future__ import annotations

import ttl as _imported  # the compiler's module, or tt-lang-sim's namespace under that name


def _reduced_shape(shape, dims) -> tuple[int, ...]:
    reduced = {d % len(shape) for d in dims}
    return tuple(1 if i in reduced else s for i, s in enumerate(shape))


class _SimulatorMath:
    """`ttl.math` of tt-lang-sim with the compiler's signatures for fill, broadcast, reduce_* and transpose."""

    def __init__(self, sim):
        self._sim = sim

    def __getattr__(self, name):
        return getattr(self._sim.math, name)

    def fill(self, out_blk, value):
        return self._sim.block.fill(value, shape=out_blk.shape)

    def broadcast(self, x, out_blk, *, dims):
        return self._sim.block.broadcast(x, dims=dims, shape=out_blk.shape)

    def transpose(self, x):
        return self._sim.block.transpose(x)

    def _scaled(self, reduced, scaler):
        # The compiler's reduce multiplies by its scaler tile (a (1, 1) block); the kernels pass ones.
        return reduced * self._sim.block.broadcast(scaler, dims=[0, 1], shape=reduced.shape)

    def reduce_max(self, x, scaler, *, dims):
        return self._scaled(
            self._sim.math.reduce_max(x, dims=dims, shape=_reduced_shape(x.shape, dims)), scaler
        )

    def reduce_sum(self, x, scaler, *, dims):
        return self._scaled(
            self._sim.math.reduce_sum(x, dims=dims, shape=_reduced_shape(x.shape, dims)), scaler
        )


class _SimulatorTtl:
    """tt-lang-sim's `ttl` namespace with `math` in the compiler's spelling."""

    def __init__(self, sim):
        self._sim = sim
        self.math = _SimulatorMath(sim)

    def __getattr__(self, name):
        return getattr(self._sim, name)


def is_simulator(module) -> bool:
    """tt-lang-sim's namespace object (`ttl.sim.ttl`), not the compiler's `ttl` module."""
    return type(module).__module__.startswith("ttl.sim")


ttl = _SimulatorTtl(_imported) if is_simulator(_imported) else _imported
