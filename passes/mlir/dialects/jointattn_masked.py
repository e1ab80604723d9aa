"""Joint attention under a key-padding mask the compiler could not prove to be a prefix of each token set, in
the `jointattn` dialect: the typed twins of the two ops of `runtime/ops/masked.py`, plus the exact path alone.

Entry points:
- `KeyPaddingLengthsOp` (`jointattn.key_padding_lengths`): per-batch valid-key counts of both masks and
  whether both are prefix padding masks (`is_prefix`, a 0-d bool on the host: the one device-to-host sync);
  one per distinct mask, shared by the layers that use it;
- `MaskedJointAttentionOp` (`jointattn.masked_joint_attention`): joint attention under the masks: with the
  counts as valid lengths when `is_prefix`, else exactly, the masks as an additive per-key bias;
- `MaskedReferenceOp` (`jointattn.masked_reference`): that exact path by itself, the `else` branch the
  lowering writes (`lower_masked.py`).

A mask is boolean (True: the key exists) or a float additive bias, and broadcasts to [b, 1, 1, keys] (keys =
N for `key_mask`, L for `joint_key_mask`). Format (k, v share q's type, joint_* share joint_q's):

    %ln, %ll, %ok = jointattn.key_padding_lengths %km, %jm {n = 13 : i64, l = 5 : i64}
        : !torch.vtensor<[2,1,1,13],i1>, !torch.vtensor<[2,1,1,5],i1>
        -> !torch.vtensor<[2],si64>, !torch.vtensor<[2],si64>, !torch.vtensor<[],i1>
    %o, %jo, %lse = jointattn.masked_joint_attention %q, %k, %v, %jq, %jk, %jv
        masks(%km, %jm : !torch.vtensor<[2,1,1,13],i1>, !torch.vtensor<[2,1,1,5],i1>)
        check(%ln, %ll, %ok : !torch.vtensor<[2],si64>) {scale = 3.5e-01 : f64}
        : !torch.vtensor<[2,3,13,8],f32>, !torch.vtensor<[2,3,5,8],f32> -> !torch.vtensor<[2,3,18],f32>

`masked_reference` is written like `masked_joint_attention` without `check(...)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from xdsl.dialects.builtin import AnyFloat, FloatAttr, IntegerAttr, IntegerType, Signedness, f64, i1, i64
from xdsl.ir import Operation, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from .joint_op_base import (
    joint_result_types,
    parse_signature,
    parse_tensor_operands,
    print_signature,
    verify_joint_signature,
    verify_scale,
)
from .torch_types import DYNAMIC, ValueTensorType

LENGTHS_TYPE_ELEMENT = IntegerType(64, Signedness.SIGNED)  # torch.int64, what the check returns
FLAG_TYPE = ValueTensorType([], i1)  # the 0-d bool `is_prefix`


def lengths_type(batch: int) -> ValueTensorType:
    return ValueTensorType([batch], LENGTHS_TYPE_ELEMENT)


def verify_key_mask(op: Operation, name: str, value: SSAValue, batch: int, keys: int) -> None:
    """`value` is a bool or float tensor broadcastable to [batch, 1, 1, keys] (what the runtime accepts)."""
    t = value.type
    expected = f"{op.name}: {name} must be a bool or float tensor broadcastable to [b={batch}, 1, 1, {keys}]"
    if not isinstance(t, ValueTensorType) or t.shape is None or len(t.shape) > 4:
        raise VerifyException(f"{expected}; got {t}")
    element = t.element_type
    if not (isinstance(element, AnyFloat) or element == i1):
        raise VerifyException(f"{expected}; got {t}")
    shape = (1,) * (4 - len(t.shape)) + t.shape
    fits = (
        shape[0] in (1, batch, DYNAMIC) and shape[1] == 1 and shape[2] == 1 and shape[3] in (1, keys, DYNAMIC)
    )
    if not fits:
        raise VerifyException(f"{expected}; got {t}")


def _verify_flag(op: Operation, value: SSAValue) -> None:
    if value.type != FLAG_TYPE:
        raise VerifyException(f"{op.name}: is_prefix must be {FLAG_TYPE} (a 0-d bool); got {value.type}")


@irdl_op_definition
class KeyPaddingLengthsOp(IRDLOperation):
    """key_padding_lengths(key_mask, joint_key_mask, b, n, l) -> (lengths_n, lengths_l, is_prefix)."""

    name = "jointattn.key_padding_lengths"
    key_mask = operand_def(ValueTensorType)
    joint_key_mask = operand_def(ValueTensorType)
    lengths_n = result_def(ValueTensorType)
    lengths_l = result_def(ValueTensorType)
    is_prefix = result_def(ValueTensorType)
    n = prop_def(IntegerAttr)  # keys of the spatial token set (N)
    l = prop_def(IntegerAttr)  # noqa: E741  (keys of the joint token set, L: the runtime op's name)

    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$key_mask `,` $joint_key_mask attr-dict `:` type($key_mask) `,` type($joint_key_mask) "
        "`->` type($lengths_n) `,` type($lengths_l) `,` type($is_prefix)"
    )

    def __init__(self, key_mask: SSAValue, joint_key_mask: SSAValue, *, batch: int, n: int, l: int):  # noqa: E741
        super().__init__(
            operands=[key_mask, joint_key_mask],
            result_types=[lengths_type(batch), lengths_type(batch), FLAG_TYPE],
            properties={"n": IntegerAttr(n, i64), "l": IntegerAttr(l, i64)},
        )

    @property
    def batch(self) -> int:
        return self.lengths_n.type.shape[0]

    @property
    def sizes(self) -> tuple[int, int]:
        return self.n.value.data, self.l.value.data

    def verify_(self) -> None:
        n, l = self.sizes  # noqa: E741
        if n <= 0 or l <= 0:
            raise VerifyException(f"{self.name}: n and l must be positive key counts; got n={n}, l={l}")
        t = self.lengths_n.type
        if (
            t.shape is None
            or len(t.shape) != 1
            or not isinstance(t.element_type, IntegerType)
            or t.element_type.width.data != 64
        ):
            raise VerifyException(f"{self.name}: lengths_n must be an int64 tensor [b]; got {t}")
        if self.lengths_l.type != t:
            raise VerifyException(
                f"{self.name}: lengths_l must have lengths_n's type {t}; got {self.lengths_l.type}"
            )
        _verify_flag(self, self.is_prefix)
        verify_key_mask(self, "key_mask", self.key_mask, self.batch, n)
        verify_key_mask(self, "joint_key_mask", self.joint_key_mask, self.batch, l)


class _MaskedOpBase(IRDLOperation):
    """Format, verification and accessors of the masked ops. Each op declares its own operands, in operand
    order (IRDL lists a subclass's fields before its base's): q, k, v, joint_q, joint_k, joint_v, key_mask,
    joint_key_mask[, logical_n, logical_l, is_prefix]; results out, joint_out, lse; property scale."""

    HAS_CHECK: ClassVar[bool] = False  # whether the check's results (lengths, is_prefix) follow the masks

    def __init__(
        self, tensors: Sequence[SSAValue], masks: Sequence[SSAValue], check: Sequence[SSAValue], scale: float
    ):
        tensors = [SSAValue.get(t) for t in tensors]
        super().__init__(
            operands=[*tensors, *masks, *check],
            result_types=joint_result_types(tensors[0].type, tensors[3].type),
            properties={"scale": FloatAttr(scale, f64)},
        )

    @property
    def tensors(self) -> tuple[SSAValue, ...]:
        return (self.q, self.k, self.v, self.joint_q, self.joint_k, self.joint_v)

    @property
    def masks(self) -> tuple[SSAValue, SSAValue]:
        return (self.key_mask, self.joint_key_mask)

    @property
    def scale_value(self) -> float:
        return self.scale.value.data

    @classmethod
    def parse(cls, parser: Parser):
        pos = parser.pos
        unresolved = parse_tensor_operands(parser)
        parser.parse_keyword("masks")
        parser.parse_punctuation("(")
        mask_operands = [parser.parse_unresolved_operand()]
        parser.parse_punctuation(",")
        mask_operands.append(parser.parse_unresolved_operand())
        parser.parse_punctuation(":")
        mask_types = [parser.parse_type()]
        parser.parse_punctuation(",")
        mask_types.append(parser.parse_type())
        parser.parse_punctuation(")")
        masks = parser.resolve_operands(mask_operands, mask_types, pos)
        check = []
        if cls.HAS_CHECK:
            parser.parse_keyword("check")
            parser.parse_punctuation("(")
            check_operands = [parser.parse_unresolved_operand()]
            for _ in range(2):
                parser.parse_punctuation(",")
                check_operands.append(parser.parse_unresolved_operand())
            parser.parse_punctuation(":")
            length_type = parser.parse_type()
            parser.parse_punctuation(")")
            check = parser.resolve_operands(check_operands, [length_type, length_type, FLAG_TYPE], pos)
        entries = parser.parse_optional_attr_dict()
        q_type, joint_type, lse_type = parse_signature(parser)
        tensors = parser.resolve_operands(unresolved, [q_type] * 3 + [joint_type] * 3, pos)
        properties = {k: v for k, v in entries.items() if k == "scale"}
        return cls.create(
            operands=[*tensors, *masks, *check],
            result_types=[q_type, joint_type, lse_type],
            properties=properties,
            attributes={k: v for k, v in entries.items() if k != "scale"},
        )

    def print(self, printer: Printer):
        printer.print_string(" ")
        printer.print_list(self.tensors, printer.print_operand)
        printer.print_string(" masks(")
        printer.print_list(self.masks, printer.print_operand)
        printer.print_string(" : ")
        printer.print_list([m.type for m in self.masks], printer.print_attribute)
        printer.print_string(")")
        if self.HAS_CHECK:
            printer.print_string(" check(")
            printer.print_list(self.check, printer.print_operand)
            printer.print_string(" : ")
            printer.print_attribute(self.logical_n.type)
            printer.print_string(")")
        printer.print_string(" ")
        printer.print_attr_dict({"scale": self.scale, **self.attributes})
        print_signature(printer, self)

    def verify_(self) -> None:
        verify_joint_signature(self)
        verify_scale(self)
        b, _, n, _ = self.q.type.shape
        verify_key_mask(self, "key_mask", self.key_mask, b, n)
        verify_key_mask(self, "joint_key_mask", self.joint_key_mask, b, self.joint_q.type.shape[2])


@irdl_op_definition
class MaskedReferenceOp(_MaskedOpBase):
    """Exact joint attention with the key masks as an additive per-key bias (bool: 0 / -inf), any device."""

    name = "jointattn.masked_reference"
    q = operand_def(ValueTensorType)
    k = operand_def(ValueTensorType)
    v = operand_def(ValueTensorType)
    joint_q = operand_def(ValueTensorType)
    joint_k = operand_def(ValueTensorType)
    joint_v = operand_def(ValueTensorType)
    key_mask = operand_def(ValueTensorType)
    joint_key_mask = operand_def(ValueTensorType)
    out = result_def(ValueTensorType)
    joint_out = result_def(ValueTensorType)
    lse = result_def(ValueTensorType)
    scale = prop_def(FloatAttr)
    traits = traits_def(Pure())

    def __init__(self, tensors: Sequence[SSAValue], masks: Sequence[SSAValue], *, scale: float):
        super().__init__(tensors, masks, (), scale)


@irdl_op_definition
class MaskedJointAttentionOp(_MaskedOpBase):
    """Joint attention under the key masks: valid lengths `logical_n`, `logical_l` when `is_prefix`, else the
    exact path (`masked_reference`); the operands after the masks are the results of `key_padding_lengths`."""

    name = "jointattn.masked_joint_attention"
    q = operand_def(ValueTensorType)
    k = operand_def(ValueTensorType)
    v = operand_def(ValueTensorType)
    joint_q = operand_def(ValueTensorType)
    joint_k = operand_def(ValueTensorType)
    joint_v = operand_def(ValueTensorType)
    key_mask = operand_def(ValueTensorType)
    joint_key_mask = operand_def(ValueTensorType)
    logical_n = operand_def(ValueTensorType)
    logical_l = operand_def(ValueTensorType)
    is_prefix = operand_def(ValueTensorType)
    out = result_def(ValueTensorType)
    joint_out = result_def(ValueTensorType)
    lse = result_def(ValueTensorType)
    scale = prop_def(FloatAttr)
    traits = traits_def(Pure())

    HAS_CHECK: ClassVar[bool] = True

    def __init__(
        self,
        tensors: Sequence[SSAValue],
        masks: Sequence[SSAValue],
        check: Sequence[SSAValue],
        *,
        scale: float,
    ):
        super().__init__(tensors, masks, check, scale)

    @property
    def check(self) -> tuple[SSAValue, SSAValue, SSAValue]:
        return (self.logical_n, self.logical_l, self.is_prefix)

    def verify_(self) -> None:
        super().verify_()  # logical_n, logical_l: checked there as integer tensors [b] (verify_joint_signature)
        if self.logical_l.type != self.logical_n.type:
            raise VerifyException(
                f"{self.name}: logical_l must have logical_n's type {self.logical_n.type}; got {self.logical_l.type}"
            )
        _verify_flag(self, self.is_prefix)


MASKED_OPS: tuple[type[Operation], ...] = (KeyPaddingLengthsOp, MaskedJointAttentionOp, MaskedReferenceOp)

__all__ = [
    "KeyPaddingLengthsOp",
    "MaskedJointAttentionOp",
    "MaskedReferenceOp",
    "MASKED_OPS",
    "FLAG_TYPE",
    "lengths_type",
    "verify_key_mask",
]
