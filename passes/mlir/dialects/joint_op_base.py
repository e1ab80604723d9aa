"""What every joint-attention-shaped op shares: operands, results, textual format and shape verification.

Entry point: `JointOpBase`, subclassed by `jointattn.joint_attention` (the target-independent op),
`ttnn.joint_scaled_dot_product_attention` and `jointattn_triton.launch_forward` (its lowerings). Each has
q, k, v `[b,nh,N,dh]`, joint_q, joint_k, joint_v `[b,nh,L,dh]`, optional valid lengths `logical_n`,
`logical_l` (`!torch.int`, or an integer `!torch.vtensor<[b],si64>`), and results out `[b,nh,N,dh]`,
joint_out `[b,nh,L,dh]`, lse `[b,nh,N+L]` f32 — the interface of ttnn's joint SDPA.

Format (k, v share q's type, joint_* share joint_q's, out/joint_out follow them):
    %out, %joint_out, %lse = jointattn.joint_attention %q, %k, %v, %jq, %jk, %jv
        logical_l(%len : !torch.vtensor<[2],si64>) {scale = 3.5e-01 : f64}
        : !torch.vtensor<[2,4,64,32],f16>, !torch.vtensor<[2,4,7,32],f16> -> !torch.vtensor<[2,4,71],f32>
Properties are written in the attribute dictionary, as mlir-opt's generic printer would show them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from xdsl.dialects.builtin import AnyFloat, DenseArrayBase, FloatAttr, IntegerType, f32, i32
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    operand_def,
    opt_operand_def,
    result_def,
    traits_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from .torch_types import DYNAMIC, IntType, ValueTensorType

TENSOR_OPERANDS = ("q", "k", "v", "joint_q", "joint_k", "joint_v")
LENGTH_OPERANDS = ("logical_n", "logical_l")


class JointOpBase(IRDLOperation):
    q = operand_def(ValueTensorType)
    k = operand_def(ValueTensorType)
    v = operand_def(ValueTensorType)
    joint_q = operand_def(ValueTensorType)
    joint_k = operand_def(ValueTensorType)
    joint_v = operand_def(ValueTensorType)
    logical_n = opt_operand_def(IntType | ValueTensorType)
    logical_l = opt_operand_def(IntType | ValueTensorType)

    out = result_def(ValueTensorType)
    joint_out = result_def(ValueTensorType)
    lse = result_def(ValueTensorType)

    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    traits = traits_def(Pure())

    def __init__(
        self,
        tensors: Sequence[SSAValue | Operation],
        *,
        logical_n: SSAValue | None = None,
        logical_l: SSAValue | None = None,
        properties: dict[str, Attribute],
        result_types: Sequence[Attribute] | None = None,
    ):
        tensors = [SSAValue.get(t) for t in tensors]
        if result_types is None:
            result_types = joint_result_types(tensors[0].type, tensors[3].type)
        super().__init__(
            operands=[*tensors, [logical_n] if logical_n else [], [logical_l] if logical_l else []],
            result_types=list(result_types),
            properties=properties,
        )

    @property
    def tensors(self) -> tuple[SSAValue, ...]:
        return (self.q, self.k, self.v, self.joint_q, self.joint_k, self.joint_v)

    @property
    def scale_value(self) -> float:
        return self.properties["scale"].value.data

    def extra_properties(self) -> dict[str, Attribute]:
        """The properties a lowering copies over (all but the operand segment sizes)."""
        return {k: v for k, v in self.properties.items() if k != "operandSegmentSizes"}

    # -- format ---------------------------------------------------------------------------------------------
    @classmethod
    def parse(cls, parser: Parser):
        pos = parser.pos
        unresolved = parse_tensor_operands(parser)
        lengths: dict[str, SSAValue] = {}
        for name in LENGTH_OPERANDS:
            if parser.parse_optional_keyword(name) is not None:
                parser.parse_punctuation("(")
                operand = parser.parse_unresolved_operand()
                parser.parse_punctuation(":")
                lengths[name] = parser.resolve_operand(operand, parser.parse_type())
                parser.parse_punctuation(")")
        entries = parser.parse_optional_attr_dict()
        q_type, joint_type, lse_type = parse_signature(parser)
        tensors = parser.resolve_operands(unresolved, [q_type] * 3 + [joint_type] * 3, pos)
        property_names = cls.get_irdl_definition().properties
        length_values = [lengths[n] for n in LENGTH_OPERANDS if n in lengths]
        segments = [1] * 6 + [int(n in lengths) for n in LENGTH_OPERANDS]
        properties = {k: v for k, v in entries.items() if k in property_names}
        properties["operandSegmentSizes"] = DenseArrayBase.from_list(i32, segments)
        return cls.create(
            operands=[*tensors, *length_values],
            result_types=[q_type, joint_type, lse_type],
            properties=properties,
            attributes={k: v for k, v in entries.items() if k not in property_names},
        )

    def print(self, printer: Printer):
        printer.print_string(" ")
        printer.print_list(self.tensors, printer.print_operand)
        for name in LENGTH_OPERANDS:
            value = getattr(self, name)
            if value is not None:
                printer.print_string(f" {name}(")
                printer.print_operand(value)
                printer.print_string(" : ")
                printer.print_attribute(value.type)
                printer.print_string(")")
        printer.print_string(" ")
        printer.print_attr_dict({**self.extra_properties(), **self.attributes})
        print_signature(printer, self)

    # -- verification ---------------------------------------------------------------------------------------
    def verify_(self) -> None:
        verify_joint_signature(self)
        verify_scale(self)


def verify_scale(op: Operation) -> None:
    scale = op.properties.get("scale")
    if not isinstance(scale, FloatAttr) or not math.isfinite(scale.value.data):
        raise VerifyException(f"{op.name}: 'scale' must be a finite f64 (1/sqrt(dh) by default); got {scale}")


def parse_tensor_operands(parser: Parser) -> list:
    """`%q, %k, %v, %jq, %jk, %jv`: the six tensor operands, unresolved (their types come last)."""
    unresolved = [parser.parse_unresolved_operand()]
    for _ in range(5):
        parser.parse_punctuation(",")
        unresolved.append(parser.parse_unresolved_operand())
    return unresolved


def parse_signature(parser: Parser) -> tuple[Attribute, Attribute, Attribute]:
    """`: q_type, joint_q_type -> lse_type` (k, v share q's type; joint_k, joint_v share joint_q's)."""
    parser.parse_punctuation(":")
    q_type = parser.parse_type()
    parser.parse_punctuation(",")
    joint_type = parser.parse_type()
    parser.parse_punctuation("->")
    return q_type, joint_type, parser.parse_type()


def print_signature(printer: Printer, op: Operation) -> None:
    printer.print_string(" : ")
    printer.print_attribute(op.q.type)
    printer.print_string(", ")
    printer.print_attribute(op.joint_q.type)
    printer.print_string(" -> ")
    printer.print_attribute(op.lse.type)


def joint_result_types(q_type: Attribute, joint_type: Attribute) -> list[Attribute]:
    """out, joint_out and lse types for the given q and joint_q types."""
    assert isinstance(q_type, ValueTensorType) and isinstance(joint_type, ValueTensorType)
    b, nh, n, _ = q_type.shape
    seq = DYNAMIC if DYNAMIC in (n, joint_type.shape[2]) else n + joint_type.shape[2]
    return [q_type, joint_type, ValueTensorType([b, nh, seq], f32)]


def _same(a: int, b: int) -> bool:
    return a == DYNAMIC or b == DYNAMIC or a == b


def _fmt(shape) -> str:
    return "[" + ",".join("?" if s == DYNAMIC else str(s) for s in shape) + "]"


def verify_joint_signature(op: JointOpBase) -> None:
    """Shapes and dtypes of the joint-attention interface; messages name the operand and what was expected."""
    types = {name: getattr(op, name).type for name in TENSOR_OPERANDS}
    for name, t in types.items():
        if t.shape is None or len(t.shape) != 4:
            layout = "[b,nh,N,dh]" if name in ("q", "k", "v") else "[b,nh,L,dh]"
            raise VerifyException(f"{op.name}: {name} must be a rank-4 tensor {layout}; got {t}")
    q, jq = types["q"], types["joint_q"]
    if not isinstance(q.element_type, AnyFloat):
        raise VerifyException(f"{op.name}: q must have a floating dtype; got {q}")
    b, nh, n, dh = q.shape
    length = jq.shape[2]
    expected = {"k": (b, nh, n, dh), "v": (b, nh, n, dh)}
    expected.update({name: (b, nh, length, dh) for name in ("joint_q", "joint_k", "joint_v")})
    for name, shape in expected.items():
        if not all(_same(x, y) for x, y in zip(types[name].shape, shape, strict=False)):
            raise VerifyException(
                f"{op.name}: {name} must have shape {_fmt(shape)} (b, nh, dh of q); got {types[name]}"
            )
        if types[name].element_type != q.element_type:
            raise VerifyException(
                f"{op.name}: {name} must have q's dtype {q.element_type}; got {types[name]}"
            )
    seq = DYNAMIC if DYNAMIC in (n, length) else n + length
    result_expected = {
        "out": ((b, nh, n, dh), q.element_type),
        "joint_out": ((b, nh, length, dh), q.element_type),
        "lse": ((b, nh, seq), f32),
    }
    for name, (shape, dtype) in result_expected.items():
        t = getattr(op, name).type
        if (
            t.shape is None
            or len(t.shape) != len(shape)
            or not all(_same(x, y) for x, y in zip(t.shape, shape, strict=False))
        ):
            raise VerifyException(f"{op.name}: result {name} must have shape {_fmt(shape)}; got {t}")
        if t.element_type != dtype:
            raise VerifyException(f"{op.name}: result {name} must have dtype {dtype}; got {t}")
    for name in LENGTH_OPERANDS:
        value = getattr(op, name, None)  # ops without valid-length operands (masked_reference) skip this
        if value is None or isinstance(value.type, IntType):
            continue
        t = value.type
        if (
            t.shape is None
            or len(t.shape) != 1
            or not _same(t.shape[0], b)
            or not isinstance(t.element_type, IntegerType)
        ):
            raise VerifyException(
                f"{op.name}: {name} must be a !torch.int or an integer tensor of shape [b={b}]; got {t}"
            )
