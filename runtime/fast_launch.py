"""Kernel launches bound once per specialization, then launched with only the arguments that change.

Entry points:
- `launch(kernel, grid, *args, **kwargs)`: what `kernel[grid](*args, **kwargs)` does. The first call with a
  given key goes through Triton's JIT (which binds, specializes, compiles or finds the kernel, and launches);
  later calls with the same key launch the compiled kernel directly, as `JITFunction.run` does after its
  binder (`CompiledKernel.run` with the current stream, the launch metadata and Triton's enter/exit hooks).
- `descriptor(make, t, block_shape, layout)`: a TMA tensor descriptor over `t` as it is, copied from one
  validated per geometry instead of validated again.
- `enabled()` / `set_enabled(on, check)`: whether the fast path runs: `JOINTATTN_FAST_LAUNCH=1` (read at the
  first launch) or `set_enabled(True)` turns it on (off by default until its GPU test,
  `tests/test_fast_launch.py`, has passed on the device machine); never under `TRITON_INTERPRET=1`.
  `JOINTATTN_FAST_LAUNCH=check` (or `check=True`) also verifies every fast launch against Triton's binder.

Why: Triton's binder specializes every argument on every call (~60 integers, eight descriptors), about a
fifth of a launch's host time at small shapes (`benchmarks/NOTES-dispatch.md`, "Where the host time goes").

The key is conservative: everything Triton specializes on and more. The argument types; integers and bools by
exact value (Triton only looks at "== 1", divisibility by 16 and the integer width), tensors by dtype and the
pointer's address modulo 16, descriptors by their whole geometry (dtype, shape, strides, box, layout, padding)
and their base's address modulo 16, strings and None exactly, floats by type only (Triton passes every float
as fp32); keyword arguments (constexprs and launch options) by type and value; the device, Triton's debug and
instrumentation settings and the kernel. Anything else (a type it does not know, an unhashable value, pre-run
hooks on the kernel) takes the normal launch. Not re-checked on the fast path: the kernel's global variables,
which Triton compares on every launch (ours are constants).
"""

from __future__ import annotations

import copy
import os

import torch

try:
    from triton import knobs
    from triton.runtime.driver import driver
except ImportError:  # pragma: no cover - without Triton every launch is refused before it gets here
    knobs = driver = None

ENV = "JOINTATTN_FAST_LAUNCH"
MAX_PLANS = 4096  # distinct keys kept; past it the table starts over (shapes that never repeat)


_ENABLED: bool | None = None  # None: read from the environment at the next launch
_CHECKING = False


def enabled() -> bool:
    """Whether launches take the fast path: `JOINTATTN_FAST_LAUNCH=1` (or `check`), read once (reading the
    environment costs ~1 µs, and a launch asks nine times), unless `set_enabled` decided; never under
    TRITON_INTERPRET=1."""
    global _ENABLED, _CHECKING
    if _ENABLED is None:
        setting = os.environ.get(ENV, "0")
        _ENABLED = setting in ("1", "check") and os.environ.get("TRITON_INTERPRET", "0") != "1"
        _CHECKING = setting == "check"
    return _ENABLED


def set_enabled(on: bool | None, check: bool = False) -> None:
    """Turns the fast path on or off from now on; None reads `JOINTATTN_FAST_LAUNCH` again at the next launch.
    `check`: every fast launch also asks Triton's binder which kernel it would run and with which arguments,
    and raises if that differs (as slow as a normal launch: for tests)."""
    global _ENABLED, _CHECKING
    _ENABLED = None if on is None else bool(on) and os.environ.get("TRITON_INTERPRET", "0") != "1"
    _CHECKING = bool(check)


def _tensor_key(t: torch.Tensor):
    return t.dtype, t.data_ptr() % 16


def _descriptor_key(d):
    base = d.base
    geometry = getattr(d, "_jointattn_geometry", None)
    if geometry is None:
        layout = getattr(d, "layout", None)
        geometry = (
            type(d),
            base.dtype,
            tuple(d.shape),
            tuple(d.strides),
            tuple(d.block_shape),
            layout,
            d.padding,
        )
    return geometry, base.data_ptr() % 16


def _descriptor_types() -> tuple[type, ...]:
    types = []
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor

        types.append(TensorDescriptor)
    except ImportError:  # pragma: no cover - Triton without host descriptors
        pass
    try:
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor as GluonTensorDescriptor

        types.append(GluonTensorDescriptor)
    except ImportError:  # pragma: no cover - Triton without Gluon
        pass
    return tuple(types)


# Exact types only: a subclass (nn.Parameter, a numpy integer) is unknown and takes the normal launch. Values
# of the first kind enter the key as they are (the argument types enter it too, so True and 1 differ).
_AS_IS = frozenset({int, bool, str, type(None)})
_REPLACED = {float: lambda value: None, torch.Tensor: _tensor_key}
_REPLACED.update(dict.fromkeys(_descriptor_types(), _descriptor_key))
# argument types of a call site -> (position, key function) of the arguments not keyed as they are
_PATTERNS: dict[tuple[type, ...], tuple[tuple[int, object], ...] | None] = {}


def _pattern(types: tuple[type, ...]):
    """Where the arguments whose key is not their value sit, or None if a type is unknown."""
    if any(t not in _AS_IS and t not in _REPLACED for t in types):
        return None
    return tuple((i, _REPLACED[t]) for i, t in enumerate(types) if t not in _AS_IS)


def launch_key(args: tuple, kwargs: dict) -> tuple | None:
    """The key of a launch with these arguments, or None where it cannot be keyed (normal launch)."""
    types = tuple(map(type, args))
    pattern = _PATTERNS.get(types, _PATTERNS)
    if pattern is _PATTERNS:
        pattern = _PATTERNS[types] = _pattern(types)
    if pattern is None:
        return None
    values = list(args)
    for i, key_of in pattern:
        values[i] = key_of(values[i])
    constants = tuple(kwargs.values())
    key = (types, tuple(values), tuple(kwargs), tuple(map(type, constants)), constants)
    try:
        hash(key)
    except TypeError:
        return None
    return key


class _Plan:
    """A compiled kernel and how to lay out a call's arguments for it (every parameter in declaration order,
    as `JITFunction.run` passes `bound_args.values()`)."""

    __slots__ = ("compiled", "tail")

    def __init__(self, compiled, tail: tuple[str, ...]):
        self.compiled = compiled
        self.tail = tail


_PLANS: dict[tuple, _Plan | None] = {}


def clear() -> None:
    """Forgets every bound launch (tests; a kernel recompiled under other settings)."""
    _PLANS.clear()


def _plan_of(kernel, compiled, args: tuple, kwargs: dict) -> _Plan | None:
    """The plan for later launches like this one, or None if its arguments do not map plainly onto the
    kernel's parameters (defaults left out, unknown keywords): those keep the normal launch."""
    if compiled is None:
        return None
    if hasattr(compiled, "result"):
        compiled = compiled.result()
    names = list(kernel.arg_names)
    tail = tuple(names[len(args) :])
    if len(args) > len(names) or any(name not in kwargs for name in tail):
        return None
    if any(name in names[: len(args)] for name in kwargs):
        return None
    return _Plan(compiled, tail)


def _current_device() -> int:
    return driver.active.get_current_device()


def _current_stream(device: int):
    """The stream Triton's JIT launches on (the current torch stream of `device`)."""
    return driver.active.get_current_stream(device)


def launch(kernel, grid: tuple, *args, **kwargs) -> None:
    """`kernel[grid](*args, **kwargs)`, bound once per key (see the module doc)."""
    if not enabled() or kernel.pre_run_hooks:
        kernel[grid](*args, **kwargs)
        return
    keyed = launch_key(args, kwargs)
    if keyed is None:
        kernel[grid](*args, **kwargs)
        return
    device = _current_device()
    key = (kernel, device, knobs.runtime.debug, knobs.compilation.instrumentation_mode, keyed)
    plan = _PLANS.get(key, _PLANS)
    if plan is _PLANS:  # first launch with this key: the normal path, and remember what it compiled
        compiled = kernel[grid](*args, **kwargs)
        if len(_PLANS) >= MAX_PLANS:
            _PLANS.clear()
        _PLANS[key] = _plan_of(kernel, compiled, args, kwargs)
        return
    if plan is None:
        kernel[grid](*args, **kwargs)
        return
    compiled = plan.compiled
    full = (*args, *[kwargs[name] for name in plan.tail])
    if _CHECKING:
        _check(kernel, device, compiled, full, args, kwargs)
    stream = _current_stream(device)
    grid_1 = grid[1] if len(grid) > 1 else 1
    grid_2 = grid[2] if len(grid) > 2 else 1
    launch_metadata = compiled.launch_metadata(grid, stream, *full)
    compiled.run(
        grid[0],
        grid_1,
        grid_2,
        stream,
        compiled.function,
        compiled.packed_metadata,
        launch_metadata,
        knobs.runtime.launch_enter_hook,
        knobs.runtime.launch_exit_hook,
        *full,
    )


def _check(kernel, device, compiled, full: tuple, args: tuple, kwargs: dict) -> None:
    """Raises unless Triton's own binder, for these arguments, finds the same compiled kernel and lays the
    arguments out as `full` (JITFunction.run's steps before its launch, Triton 3.6)."""
    from triton.runtime.jit import compute_cache_key

    kernel_cache, kernel_key_cache, _, _, binder = kernel.device_caches[device]
    options = dict(kwargs)
    options["debug"] = options.get("debug", kernel.debug) or knobs.runtime.debug
    options["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    bound, specialization, options = binder(*args, **options)
    found = kernel_cache.get(compute_cache_key(kernel_key_cache, specialization, options))
    if hasattr(found, "result"):
        found = found.result()
    name = getattr(kernel, "__name__", kernel)
    if found is not compiled:
        raise RuntimeError(f"fast_launch: {name}'s binding is not the kernel Triton would run")
    if len(bound) != len(full) or any(a is not b for a, b in zip(bound.values(), full)):
        raise RuntimeError(
            f"fast_launch: {name}'s arguments are not laid out as Triton's binder lays them out"
        )


_DESCRIPTORS: dict[tuple, object] = {}


def descriptor(make, t: torch.Tensor, block_shape: list[int], layout=None):
    """`make(t, shape, strides, block_shape[, layout])` (a host TMA descriptor over `t` as it is). With the
    fast path on, the first descriptor of each geometry is validated by its constructor and kept without its
    base; later ones are copies of it with `t` as base, after the one check that depends on `t` alone (a
    16-byte aligned base; a misaligned one goes to the constructor, which refuses it as before)."""
    extra = () if layout is None else (layout,)
    if not enabled():
        return make(t, list(t.shape), list(t.stride()), list(block_shape), *extra)
    geometry = (make, t.dtype, t.shape, t.stride(), tuple(block_shape), layout)
    template = _DESCRIPTORS.get(geometry)
    if template is None or t.data_ptr() % 16:
        made = make(t, list(t.shape), list(t.stride()), list(block_shape), *extra)
        if template is None:
            template = copy.copy(made)
            template.base = None  # a template must not keep a caller's tensor alive
            template._jointattn_geometry = (
                type(made),
                t.dtype,
                tuple(t.shape),
                t.stride(),
                tuple(block_shape),
                layout,
                made.padding,
            )
            if len(_DESCRIPTORS) >= MAX_PLANS:
                _DESCRIPTORS.clear()
            _DESCRIPTORS[geometry] = template
        return made
    made = object.__new__(type(template))  # a shallow copy without the constructor's checks (0.5 µs, not 4)
    made.__dict__.update(template.__dict__)
    made.base = t
    return made
