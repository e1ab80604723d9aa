"""Key-padding masks as valid lengths, proven from the graph where possible.

Per token set, a mask part is one of:
- "all": every key exists (`torch.ones`, `ones_like`, `full(..., True)`; zeros for an additive mask);
- "lengths": a prefix provably, `arange(S) < lengths[:, None]` (or `lengths[:, None] > arange(S)`; an arange
  exact in its dtype and in every dtype it is cast to on the way, one length per sample), possibly behind broadcasting views or `where(valid, 0, -inf)`;
  the `lengths` node becomes the op's valid length;
- "check": anything else; the pass then emits `jointattn::masked_joint_attention`, which checks at run time
  that the mask is a prefix padding mask and otherwise takes the exact path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.fx as fx

from .nodes import arg, op_name, same, shape, val

# View-like ops that change how a validity vector broadcasts, never its values along the key axis.
_VIEWS = ("unsqueeze", "view", "reshape", "expand", "expand_as", "contiguous", "clone")
# Casts keep the mask's meaning only within one kind: bool -> bool, or float -> float (an additive bias).
# bool -> float turns validity into a +1/+0 bias (every key still counts); float -> bool flips the meaning.
_CASTS = ("bool", "to", "_to_copy", "type", "float", "half", "bfloat16", "double")
_ALL_VALID_FACTORIES = ("ones", "ones_like", "new_ones")


@dataclass(frozen=True)
class KeyPadding:
    kind: str  # "all" | "lengths" | "check"
    source: fx.Node  # the mask part itself (what "check" hands to the masked op)
    lengths: fx.Node | None = None  # the per-batch lengths node (kind "lengths")


def _peel(node):
    """Strips broadcasting views, plain basic indexing (`x[:, None, None, :]`) and same-kind casts."""
    while (source := _peeled_once(node)) is not None:
        node = source
    return node


def _peeled_once(node):
    """The operand `node` is such a view, index or cast of, or None."""
    if not isinstance(node, fx.Node):
        return None
    name = op_name(node)
    if (
        name in _VIEWS
        or (name == "getitem" and _is_plain_index(node))
        or (name in _CASTS and _same_kind_cast(node))
    ):
        return node.args[0]
    return None


def _is_plain_index(node: fx.Node) -> bool:
    index = node.args[1]
    comps = index if isinstance(index, tuple) else (index,)
    return all(c is None or c is Ellipsis or c == slice(None) for c in comps)


def _is_arange_of(node, size) -> bool:
    """`arange(size)` or `arange(0, size[, 1])` behind what `_peel` strips, its positions exact at every step
    back to the arange (an exact float32 arange cast to bfloat16 is not)."""
    while True:
        if not _exact_positions(node, size):
            return False
        source = _peeled_once(node)
        if source is None:
            break
        node = source
    if not isinstance(node, fx.Node) or op_name(node) != "arange":
        return False
    args = node.args
    if len(args) == 1:
        end = args[0]
    elif len(args) in (2, 3) and args[0] == 0 and (len(args) == 2 or args[2] == 1):
        end = args[1]
    else:
        return False
    return same(val(end), size)


def _exact_positions(node, size) -> bool:
    """Positions 0..size-1 are exact in the node's dtype: an integer type wide enough (int8 wraps past 127),
    float32 up to 2^24, float64 up to 2^53, never float16 or bfloat16 (bf16 stops at 256)."""
    dtype = getattr(val(node), "dtype", None)
    if dtype is None or dtype == torch.bool or dtype.is_complex:
        return False
    if dtype.is_floating_point:
        limit = {torch.float32: 2**24, torch.float64: 2**53}.get(dtype, 0)
    else:
        limit = torch.iinfo(dtype).max + 1
    if limit >= 2**63:  # int64 and uint64 hold any tensor size, a symbolic one too
        return True
    return isinstance(size, int) and size <= limit


def _lengths_column(lengths_side):
    """`lengths[:, None]` ([b, 1]: one length per sample, constant over keys) as its [b] tensor, else None.
    A 1-D `lengths` would be compared position by position against the arange: not per-sample lengths."""
    shp = shape(lengths_side)
    if len(shp) < 2 or not same(shp[-1], 1):
        return None
    lengths = _peel(lengths_side)
    return lengths if isinstance(lengths, fx.Node) and len(shape(lengths)) == 1 else None


def _as_number(x):
    x = val(x)
    return x if isinstance(x, (int, float, bool)) else None


def classify(mask_part: fx.Node, size) -> KeyPadding:
    """How the pass can hand this mask part (key axis last, `size` keys) to the op."""
    node = _peel(mask_part)
    if not isinstance(node, fx.Node):
        return KeyPadding("check", mask_part)
    name = op_name(node)
    if name in _ALL_VALID_FACTORIES and _is_bool(node):  # float ones would be a +1 bias, not "all valid"
        return KeyPadding("all", mask_part)
    if name in ("zeros", "zeros_like", "new_zeros") and not _is_bool(node):
        return KeyPadding("all", mask_part)
    if name == "full" and _as_number(arg(node, 1, "fill_value")) in (True, 1) and _is_bool(node):
        return KeyPadding("all", mask_part)
    if name in ("lt", "gt"):
        left, right = node.args[0], node.args[1]
        arange_side, lengths_side = (left, right) if name == "lt" else (right, left)
        lengths = _lengths_column(lengths_side) if isinstance(lengths_side, fx.Node) else None
        if lengths is not None and _is_arange_of(arange_side, size):
            return KeyPadding("lengths", mask_part, lengths)
    if name == "where" and len(node.args) == 3:
        zero, absent = _as_number(node.args[1]), _as_number(node.args[2])
        # Only -inf: with a finite "absent" bias a sample whose keys are all absent averages V over every key
        # in SDPA, not what lengths say; the run-time check handles finite biases exactly.
        if zero == 0 and absent == -math.inf:
            inner = classify(node.args[0], size)
            if inner.kind != "check":
                return KeyPadding(inner.kind, mask_part, inner.lengths)
    return KeyPadding("check", mask_part)


def _same_kind_cast(node) -> bool:
    source = node.args[0] if node.args else None
    return isinstance(source, fx.Node) and _is_bool(source) == _is_bool(node)


def _is_bool(node) -> bool:
    v = val(node)
    return getattr(v, "dtype", None) is not None and str(v.dtype) == "torch.bool"
