"""Which ops are position-wise along the sequence, and of what kind: the one table both passes read (FX in
`passes/fx/axes.py`, MLIR in `passes/mlir/axes.py`). Each pass reads the operands of the ops it meets in its own
IR; which ops qualify, and where an op's dims argument sits, is decided here.

An op is position-wise along an output axis when each position of that axis is computed from the same
position of its inputs alone. Then `op(cat([a, b]))` equals `cat([op(a), op(b)])` given the matching slices of
any operand that varies along the axis: that identity lets a pass move a concat below RoPE or a norm, and a
split above `transpose -> reshape -> to(dtype)`. Matrix products are deliberately absent: moving a concat
through one would split a GEMM in two.

Entry points: `kind_of(name)` (one of the kinds below, or None) and `along_dims(name)` (for ALONG_DIMS: where
the dims argument is). A name is an ATen overload as `torch.ops.aten.<packet>.<overload>` spells it
(`add.Tensor`, `neg.default`; torch-mlir's `torch.aten.add.Tensor`, `torch.aten.neg`), or a bare packet (`add`)
where the overload is not chosen yet (Dynamo's torch-level graphs, Tensor methods): then the kind of any of its
overloads. `prims.convert_element_type` is named `convert_element_type`, as `passes/fx/nodes.op_name` names it.

Kinds:
- ELEMENTWISE: every overload ATen tags `pointwise` that has one result and writes no argument (so never an
  in-place or `out=` overload), plus the elementwise overloads it leaves untagged (`where.ScalarOther`, ...);
  tensor operands broadcast, aligned from the right;
- CAST: the first argument is the data; any other tensor only lends its dtype (`to`, `_to_copy`, `type_as`);
- PERMUTE: a permutation of the dims (`transpose`, `permute`, ...);
- RESHAPE: a row-major regrouping of the dims (`view`, `flatten`, `unsqueeze`, ...); position-wise where it
  keeps the traced axis whole;
- ALONG_DIMS: acts along the dims one argument names, which must not be the traced axis (`select`, `narrow`,
  softmax, reductions, norms over trailing dims);
- STACK: joins tensors along another dim (`cat`, `stack`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

ELEMENTWISE = "elementwise"
CAST = "cast"
PERMUTE = "permute"
RESHAPE = "reshape"
ALONG_DIMS = "along_dims"
STACK = "stack"


@dataclass(frozen=True)
class AlongDims:
    """Where an ALONG_DIMS op's dims are, in ATen's argument order (the same in FX and in torch-mlir)."""

    at: int  # position of the argument naming the dims (an int or a list)
    name: str = "dim"  # its keyword
    keepdim_at: int | None = None  # position of `keepdim` (False when absent); None: `keeps` decides
    keeps: bool = True  # without `keepdim`: whether the result keeps the dims the op acts along
    trailing: bool = False  # the argument is a `normalized_shape`: the op acts along that many trailing dims
    default: int | None = None  # the dim when the argument is absent


# By packet (every overload) or by overload. Tensor methods with no ATen op of that name (`float`, `type`)
# are listed because Dynamo's graphs call them.
_TABLE: dict[str, str | AlongDims] = {
    # Elementwise overloads ATen leaves untagged (composites of tagged ones).
    "where.ScalarOther": ELEMENTWISE,
    "where.ScalarSelf": ELEMENTWISE,
    "where.Scalar": ELEMENTWISE,
    "masked_fill.Tensor": ELEMENTWISE,
    "rsub.Tensor": ELEMENTWISE,
    "true_divide.Scalar": ELEMENTWISE,
    **dict.fromkeys(
        (
            "to",
            "_to_copy",
            "convert_element_type",
            "type_as",
            "contiguous",
            "clone",
            "detach",
            "alias",
            "bool",
            "float",
            "half",
            "bfloat16",
            "double",
            "type",
        ),
        CAST,
    ),
    **dict.fromkeys(("transpose", "swapaxes", "swapdims", "t", "permute", "movedim"), PERMUTE),
    **dict.fromkeys(
        ("view", "reshape", "_unsafe_view", "flatten", "unflatten", "unsqueeze", "squeeze"), RESHAPE
    ),
    # Only overloads whose dims argument is known: `norm`/`var`/`std` put other arguments first and are left
    # out rather than misread, and `sum.default` has no dims at all.
    "select.int": AlongDims(1, keeps=False),
    "narrow.default": AlongDims(1),
    "slice.Tensor": AlongDims(1),
    "softmax.int": AlongDims(1),
    "_softmax.default": AlongDims(1),
    "log_softmax.int": AlongDims(1),
    "sum.dim_IntList": AlongDims(1, keepdim_at=2),
    "mean.dim": AlongDims(1, keepdim_at=2),
    "amax.default": AlongDims(1, keepdim_at=2),
    "amin.default": AlongDims(1, keepdim_at=2),
    "logsumexp.default": AlongDims(1, keepdim_at=2),
    "rms_norm.default": AlongDims(1, "normalized_shape", trailing=True),
    "layer_norm.default": AlongDims(1, "normalized_shape", trailing=True),
    "normalize": AlongDims(2, default=1),  # torch.nn.functional.normalize (no ATen op)
    **dict.fromkeys(("cat", "stack"), STACK),
}
# A bare packet stands for its overloads in the table (`sum` -> `sum.dim_IntList`).
_BY_PACKET = {name.split(".")[0]: entry for name, entry in reversed(_TABLE.items())}


def kind_of(name: str) -> str | None:
    """The position-wise kind of an ATen overload or packet (see the module docstring), or None."""
    entry = _entry(name)
    if isinstance(entry, AlongDims):
        return ALONG_DIMS
    if entry is not None:
        return entry
    return ELEMENTWISE if _is_elementwise(name) else None


def along_dims(name: str) -> AlongDims | None:
    """For an ALONG_DIMS op: where its dims argument is."""
    entry = _entry(name)
    return entry if isinstance(entry, AlongDims) else None


def _entry(name: str) -> str | AlongDims | None:
    packet, _, overload = name.partition(".")
    if not overload:
        return _BY_PACKET.get(packet)
    return _TABLE.get(name, _TABLE.get(packet))


@functools.cache
def _is_elementwise(name: str) -> bool:
    packet_name, _, overload = name.partition(".")
    packet = getattr(torch.ops.aten, packet_name, None)
    if not isinstance(packet, torch._ops.OpOverloadPacket):
        return False
    overloads = [overload] if overload else packet.overloads()
    return any(_tagged_pure(getattr(packet, o, None)) for o in overloads)


def _tagged_pure(op) -> bool:
    """Tagged `pointwise`, one result, no argument written (`add_`, `add.out` are not position-wise here)."""
    if op is None or torch.Tag.pointwise not in op.tags:
        return False
    schema = op._schema
    return len(schema.returns) == 1 and not any(
        a.alias_info is not None and a.alias_info.is_write for a in schema.arguments
    )
