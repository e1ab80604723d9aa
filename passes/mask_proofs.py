"""The rules that prove a key-padding mask to be valid lengths at compile time, shared by both passes (FX:
`passes/fx/masks.py`, MLIR: `passes/mlir/masks.py`). Each pass reads its own IR and asks these questions;
a mask they do not prove is checked at run time instead, so every rule errs on the side of "not proven".

- `positions_exact(dtype, size)`: `arange(size)` in `dtype` holds 0..size-1 exactly. `arange(300, bfloat16)
  < 257` admits 258 keys, and `arange(300, int8)` wraps past 127. An arange is read through any conversion
  (`arange(n, dtype=float32).to(bfloat16)`) as long as its positions are exact at every step.
  `arange_behind(value, size, dtype_of, peeled_once)` walks back to the arange under that rule, through
  conversions that `keeps_positions`.
- `keeps_mask_meaning(source, result)`: a conversion a mask can be read through.
- `BROADCASTS`: views that change how a validity broadcasts, never its values along the key axis (each pass
  checks, where its IR needs it, that the key axis stays last).
- `factory_fill(name, fill_value)` and `admits_every_key(dtype, fill)`: a constant factory (`ones`, `zeros`
  and their `_like` and `new_` forms, `full`) whose mask admits every key.
- `is_absent_bias(value)`: the additive bias that proves a key absent.
"""

from __future__ import annotations

import math

import torch

BROADCASTS = ("unsqueeze", "view", "reshape", "expand", "expand_as", "broadcast_to")
# Constant factories by name: the value they fill with, or the position of their `fill_value` argument.
FILLED_WITH = {"ones": 1, "ones_like": 1, "new_ones": 1, "zeros": 0, "zeros_like": 0, "new_zeros": 0}
FILL_ARGUMENT = {"full": 1}


def positions_exact(dtype: torch.dtype | None, size) -> bool:
    """Positions 0..size-1 are exact in `dtype`: an integer type wide enough, float32 up to 2^24, float64 up
    to 2^53 (the integers their mantissas hold); never bool, complex, float16 or bfloat16 (2^11 and 2^8 are too
    few to be worth a rule). `size` may be symbolic: int64 and uint64 hold any tensor size."""
    if dtype is None or dtype == torch.bool or dtype.is_complex:
        return False
    if dtype.is_floating_point:
        limit = {torch.float32: 2**24, torch.float64: 2**53}.get(dtype, 0)
    else:
        limit = torch.iinfo(dtype).max + 1
    if limit >= 2**63:
        return True
    return isinstance(size, int) and size <= limit


def arange_behind(value, size, dtype_of, peeled_once):
    """What must be `arange(size)` for `value` to hold positions 0..size-1: `value` read back through what
    `peeled_once(value)` strips (the IR's views and conversions), positions exact (`dtype_of(value)`) at every
    step; None where a step is not exact."""
    while positions_exact(dtype_of(value), size):
        source = peeled_once(value)
        if source is None:
            return value
        value = source
    return None


def keeps_positions(source: torch.dtype | None, result: torch.dtype | None) -> bool:
    """An arange is read through any conversion: `arange_behind` checks its positions at every step."""
    return True


def keeps_mask_meaning(source: torch.dtype | None, result: torch.dtype | None) -> bool:
    """A conversion that keeps a validity a validity (bool to bool) and a bias a bias (floating to floating:
    0 stays 0 and -inf stays -inf), or none at all (the same dtype). bool -> float turns validity into a +1/+0
    bias under which every key still counts, float -> bool flips the meaning, and an integer step loses -inf."""
    if source is None or result is None:
        return False
    if source == result:
        return True
    if source == torch.bool or result == torch.bool:
        return source == result
    return source.is_floating_point and result.is_floating_point


def factory_fill(name: str | None, fill_value=None):
    """The value a constant factory fills with (`fill_value`: its argument at `FILL_ARGUMENT[name]`), or None
    when `name` is not one."""
    if name in FILLED_WITH:
        return FILLED_WITH[name]
    return fill_value if name in FILL_ARGUMENT else None


def admits_every_key(dtype: torch.dtype | None, fill) -> bool:
    """A mask part filled with `fill` admits every key of its token set: True in a bool validity, 0 in an
    additive (floating) bias. Float ones would add 1 to these keys' scores against the other set's, and bool
    zeros admit none."""
    if dtype is None:
        return False
    if dtype == torch.bool:
        return fill in (True, 1)
    return dtype.is_floating_point and fill == 0


def is_absent_bias(value) -> bool:
    """Only -inf proves a key absent: with a finite "absent" bias (finfo.min) a sample whose keys are all
    absent averages V over every key in SDPA, which valid lengths do not say; finite biases are checked at run
    time."""
    return value == -math.inf
