"""Key-padding masks as valid lengths, proven from the graph where possible (the FX twin of
`passes/mlir/masks.py`; the rules of the proof, shared by both, are `passes/mask_proofs.py`).

Entry point: `classify(mask_part, size) -> KeyPadding`. Per token set, a mask part is one of:
- "all": every key exists (`torch.ones`, `ones_like`, `full(..., True)`; zeros for an additive mask);
- "lengths": a prefix provably, `arange(S) < lengths[:, None]` (or `lengths[:, None] > arange(S)`; an arange
  exact in its dtype and in every dtype it is cast to on the way, one length per sample), possibly behind
  broadcasting views, casts that keep the mask's meaning, or `where(valid, 0, -inf)`; the `lengths` node
  becomes the op's valid length;
- "check": anything else; the pass then emits `jointattn::masked_joint_attention`, which checks at run time
  that the mask is a prefix padding mask and otherwise takes the exact path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx

from .. import mask_proofs, positionwise
from .nodes import arg, op_name, same, shape, val


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


def _peeled_once(node, keeps=mask_proofs.keeps_mask_meaning):
    """The operand `node` is such a view, index or cast of (a cast that `keeps` the source's meaning in the
    result's dtype), or None."""
    if not isinstance(node, fx.Node):
        return None
    name = op_name(node)
    if (
        (name in mask_proofs.BROADCASTS and _cast_keeps(node, lambda source, result: source == result))
        or (name == "getitem" and _is_plain_index(node))
        or (name is not None and positionwise.kind_of(name) == positionwise.CAST and _cast_keeps(node, keeps))
    ):
        return node.args[0]
    return None


def _is_plain_index(node: fx.Node) -> bool:
    index = node.args[1]
    comps = index if isinstance(index, tuple) else (index,)
    return all(c is None or c is Ellipsis or c == slice(None) for c in comps)


def _is_arange_of(node, size) -> bool:
    """`arange(size)` or `arange(0, size[, 1])` behind views, indexing and any casts, its positions exact at
    every step back to the arange (an exact float32 arange cast to bfloat16 is not)."""
    node = mask_proofs.arange_behind(
        node, size, _dtype, lambda n: _peeled_once(n, keeps=mask_proofs.keeps_positions)
    )
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
    fill_at = mask_proofs.FILL_ARGUMENT.get(name)
    fill = mask_proofs.factory_fill(
        name, None if fill_at is None else _as_number(arg(node, fill_at, "fill_value"))
    )
    if fill is not None and mask_proofs.admits_every_key(_dtype(node), fill):
        return KeyPadding("all", mask_part)
    if name in ("lt", "gt"):
        left, right = node.args[0], node.args[1]
        arange_side, lengths_side = (left, right) if name == "lt" else (right, left)
        lengths = _lengths_column(lengths_side) if isinstance(lengths_side, fx.Node) else None
        if lengths is not None and _is_arange_of(arange_side, size):
            return KeyPadding("lengths", mask_part, lengths)
    if name == "where" and len(node.args) == 3:
        zero, absent = _as_number(node.args[1]), _as_number(node.args[2])
        if zero == 0 and mask_proofs.is_absent_bias(absent):
            inner = classify(node.args[0], size)
            if inner.kind != "check":
                return KeyPadding(inner.kind, mask_part, inner.lengths)
    return KeyPadding("check", mask_part)


def _cast_keeps(node, keeps) -> bool:
    source = node.args[0] if node.args else None
    return isinstance(source, fx.Node) and keeps(_dtype(source), _dtype(node))


def _dtype(node):
    return getattr(val(node), "dtype", None)
