"""Operations of torch-mlir's `torch` dialect that the joint-attention passes read or write.

Entry points: the typed ops below (`AtenCatOp`, `AtenScaledDotProductAttentionOp`, `AtenSliceTensorOp`, ...),
`TORCH_OPS` (all of them, for the dialect), and `GenericTorchOp.with_name(name)`, which stands in for any other
op torch-mlir generates (`torch.aten.mm`, `torch.prims.convert_element_type`, ...) so that whole imported
models parse, pass through untouched and print back exactly.

Internals: torch-mlir prints every op it generates from the ATen registry in one format,
`torch.aten.foo %a, %b : !t_a, !t_b -> !t_res` (`parse_default_torch_op` / `print_default_torch_op`); typed
ops are `_DefaultFormatOp`s with one `operand_def` per schema argument (named as in the schema, `self` spelled
`self_`), so the passes read `op.dim` instead of `op.operands[1]`. Hand-written torch-mlir ops (constants,
`prim.ListConstruct`, `torch.operator`, `torch.vtensor.literal`) get their own parse/print. Operands that are
optional in the schema are still present in the IR, as `!torch.none` values.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from typing import ClassVar

from xdsl.dialects.builtin import (
    AnyFloat,
    BFloat16Type,
    BoolAttr,
    DenseIntOrFPElementsAttr,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    f64,
    i64,
)
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.irdl import (
    AnyAttr,
    IRDLOperation,
    irdl_op_definition,
    operand_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import ConstantLike, Pure

from .torch_types import (
    BoolType,
    DeviceType,
    FloatType,
    IntType,
    ListType,
    NoneType,
    NumberType,
    StringType,
    ValueTensorType,
)

Tensor = ValueTensorType
OptTensor = ValueTensorType | NoneType
OptFloat = FloatType | NoneType
OptInt = IntType | NoneType
OptBool = BoolType | NoneType
OptDevice = DeviceType | NoneType
Scalar = IntType | FloatType | NumberType | BoolType
OptScalar = Scalar | NoneType


# ---------------------------------------------------------------------------------------------------------
# The default format of generated torch ops.


def parse_default_torch_op(parser: Parser) -> tuple[list[SSAValue], list[Attribute], dict[str, Attribute]]:
    """`%a, %b {attrs} : !t_a, !t_b -> !t_r0, !t_r1` (no `-> ...` without results) -> (operands, result types,
    attributes)."""
    pos = parser.pos
    unresolved = []
    if (first := parser.parse_optional_unresolved_operand()) is not None:
        unresolved.append(first)
        while parser.parse_optional_punctuation(","):
            unresolved.append(parser.parse_unresolved_operand())
    attributes = parser.parse_optional_attr_dict()
    parser.parse_punctuation(":")
    operand_types: list[Attribute] = []
    if unresolved:
        operand_types.append(parser.parse_type())
        while parser.parse_optional_punctuation(","):
            operand_types.append(parser.parse_type())
    operands = list(parser.resolve_operands(unresolved, operand_types, pos))
    result_types = []
    if parser.parse_optional_punctuation("->") is not None:  # absent for ops without results (asserts)
        result_types.append(parser.parse_type())
        while parser.parse_optional_punctuation(","):
            result_types.append(parser.parse_type())
    return operands, result_types, attributes


def print_default_torch_op(printer: Printer, op: Operation) -> None:
    if op.operands:
        printer.print_string(" ")
        printer.print_list(op.operands, printer.print_operand)
    if op.attributes:
        printer.print_attr_dict(op.attributes)
    printer.print_string(" : ")
    printer.print_list(op.operand_types, printer.print_attribute)
    if op.results:
        printer.print_string(" -> ")
        printer.print_list(op.result_types, printer.print_attribute)


class _DefaultFormatOp(IRDLOperation):
    """A typed op that torch-mlir generates from the ATen registry (default format, value semantics)."""

    traits = traits_def(Pure())

    @classmethod
    def parse(cls, parser: Parser):
        operands, result_types, attributes = parse_default_torch_op(parser)
        return cls.create(operands=operands, result_types=result_types, attributes=attributes)

    def print(self, printer: Printer):
        print_default_torch_op(printer, self)

    @classmethod
    def build(cls, operands: Sequence[SSAValue | Operation], result_type: Attribute):
        return cls.create(operands=[SSAValue.get(o) for o in operands], result_types=[result_type])


class GenericTorchOp(Operation):
    """Any generated torch op without a typed class here: kept opaque, printed back as parsed.

    Not marked Pure: the passes never delete or move what they do not model.
    """

    name = "torch.generic"
    traits = traits_def()
    _classes: ClassVar[dict[str, type[GenericTorchOp]]] = {}

    @classmethod
    def with_name(cls, name: str) -> type[GenericTorchOp]:
        if name not in cls._classes:
            cls._classes[name] = type(_class_name(name), (GenericTorchOp,), {"name": name})
        return cls._classes[name]

    @classmethod
    def parse(cls, parser: Parser):
        operands, result_types, attributes = parse_default_torch_op(parser)
        return cls.create(operands=operands, result_types=result_types, attributes=attributes)

    def print(self, printer: Printer):
        print_default_torch_op(printer, self)


def _class_name(op_name: str) -> str:
    return "Torch_" + "".join(part[:1].upper() + part[1:] for part in op_name.split(".")[1:]) + "Op"


# Namespaces whose ops torch-mlir generates in the default format (everything else it spells by hand).
GENERATED_PREFIXES = ("torch.aten.", "torch.prim.", "torch.prims.", "torch.quantized.", "torch.torchvision.")


# ---------------------------------------------------------------------------------------------------------
# Constants and lists (hand-written formats in torch-mlir).


def format_float(value: float) -> str:
    """A float as MLIR prints it: 6-digit scientific when that round-trips, else 17 digits; inf/nan as hex."""
    if math.isinf(value) or math.isnan(value):
        return "0x" + struct.pack(">d", value).hex().upper()
    text = f"{value:.6e}"
    return text if float(text) == value else f"{value:.17e}"


def _parse_float_literal(parser: Parser) -> float:
    if (bits := parser.parse_optional_integer(allow_negative=False)) is not None:  # hex bit pattern
        return struct.unpack(">d", bits.to_bytes(8, "big"))[0]
    return parser.parse_float()


@irdl_op_definition
class ConstantIntOp(IRDLOperation):
    name = "torch.constant.int"
    value = prop_def(IntegerAttr)
    result = result_def(IntType)
    traits = traits_def(Pure(), ConstantLike())

    def __init__(self, value: int):
        super().__init__(properties={"value": IntegerAttr(value, i64)}, result_types=[IntType()])
        self.result.name_hint = f"int{value}"

    @classmethod
    def parse(cls, parser: Parser):
        return cls(parser.parse_integer())

    def print(self, printer: Printer):
        printer.print_string(f" {self.value.value.data}")


@irdl_op_definition
class ConstantFloatOp(IRDLOperation):
    name = "torch.constant.float"
    value = prop_def(FloatAttr)
    result = result_def(FloatType)
    traits = traits_def(Pure(), ConstantLike())

    def __init__(self, value: float):
        super().__init__(properties={"value": FloatAttr(value, f64)}, result_types=[FloatType()])
        self.result.name_hint = "float" + format_float(value).replace("+", "")

    @classmethod
    def parse(cls, parser: Parser):
        return cls(_parse_float_literal(parser))

    def print(self, printer: Printer):
        printer.print_string(" " + format_float(self.value.value.data))


@irdl_op_definition
class ConstantBoolOp(IRDLOperation):
    name = "torch.constant.bool"
    value = prop_def(BoolAttr)
    result = result_def(BoolType)
    traits = traits_def(Pure(), ConstantLike())

    def __init__(self, value: bool):
        super().__init__(properties={"value": BoolAttr.from_bool(value)}, result_types=[BoolType()])
        self.result.name_hint = "true" if value else "false"

    @property
    def bool_value(self) -> bool:
        return bool(self.value.value.data)

    @classmethod
    def parse(cls, parser: Parser):
        return cls(parser.parse_boolean())

    def print(self, printer: Printer):
        printer.print_string(" true" if self.bool_value else " false")


@irdl_op_definition
class ConstantNoneOp(IRDLOperation):
    name = "torch.constant.none"
    result = result_def(NoneType)
    traits = traits_def(Pure(), ConstantLike())

    def __init__(self):
        super().__init__(result_types=[NoneType()])
        self.result.name_hint = "none"

    @classmethod
    def parse(cls, parser: Parser):
        return cls()

    def print(self, printer: Printer):
        pass


@irdl_op_definition
class ConstantStrOp(IRDLOperation):
    name = "torch.constant.str"
    value = prop_def(StringAttr)
    result = result_def(StringType)
    traits = traits_def(Pure(), ConstantLike())

    def __init__(self, value: str):
        super().__init__(properties={"value": StringAttr(value)}, result_types=[StringType()])
        self.result.name_hint = "str"

    @classmethod
    def parse(cls, parser: Parser):
        return cls(parser.parse_str_literal())

    def print(self, printer: Printer):
        printer.print_string(" ")
        printer.print_string_literal(self.value.data)


@irdl_op_definition
class ConstantDeviceOp(IRDLOperation):
    name = "torch.constant.device"
    value = prop_def(StringAttr)
    result = result_def(DeviceType)
    traits = traits_def(Pure(), ConstantLike())

    def __init__(self, value: str):
        super().__init__(properties={"value": StringAttr(value)}, result_types=[DeviceType()])
        self.result.name_hint = value.split(":")[0]

    @classmethod
    def parse(cls, parser: Parser):
        return cls(parser.parse_str_literal())

    def print(self, printer: Printer):
        printer.print_string(" ")
        printer.print_string_literal(self.value.data)


@irdl_op_definition
class PrimListConstructOp(IRDLOperation):
    """`torch.prim.ListConstruct %a, %b : (!t, !t) -> !torch.list<T>`."""

    name = "torch.prim.ListConstruct"
    elements = var_operand_def()
    result = result_def(ListType)
    traits = traits_def(Pure())

    def __init__(self, elements: Sequence[SSAValue | Operation], list_type: ListType):
        super().__init__(operands=[[SSAValue.get(e) for e in elements]], result_types=[list_type])

    @classmethod
    def parse(cls, parser: Parser):
        pos = parser.pos
        unresolved = []
        if (first := parser.parse_optional_unresolved_operand()) is not None:
            unresolved.append(first)
            while parser.parse_optional_punctuation(","):
                unresolved.append(parser.parse_unresolved_operand())
        attributes = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        types = parser.parse_comma_separated_list(parser.Delimiter.PAREN, parser.parse_type)
        parser.parse_punctuation("->")
        result_type = parser.parse_type()
        op = cls(parser.resolve_operands(unresolved, types, pos), result_type)
        op.attributes.update(attributes)
        return op

    def print(self, printer: Printer):
        printer.print_string(" ")
        printer.print_list(self.elements, printer.print_operand)
        printer.print_string(" : (")
        printer.print_list(self.elements.types, printer.print_attribute)
        printer.print_string(") -> ")
        printer.print_attribute(self.result.type)


@irdl_op_definition
class PrimListUnpackOp(_DefaultFormatOp):
    name = "torch.prim.ListUnpack"
    operand = operand_def(ListType)
    results_ = var_result_def()


@irdl_op_definition
class OperatorOp(IRDLOperation):
    """`torch.operator "torch.ns.op"(%args) : (types) -> (types)`: an op torch-mlir has no class for, such as
    `jointattn::joint_attention` (named `torch.jointattn.joint_attention`)."""

    name = "torch.operator"
    op_name = prop_def(StringAttr, prop_name="name")
    args = var_operand_def()
    results_ = var_result_def()

    def __init__(self, op_name: str, args: Sequence[SSAValue], result_types: Sequence[Attribute]):
        super().__init__(
            operands=[list(args)], result_types=[list(result_types)], properties={"name": StringAttr(op_name)}
        )

    @classmethod
    def parse(cls, parser: Parser):
        op_name = parser.parse_str_literal()
        pos = parser.pos
        unresolved = parser.parse_comma_separated_list(
            parser.Delimiter.PAREN, parser.parse_unresolved_operand
        )
        attributes = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        types = parser.parse_comma_separated_list(parser.Delimiter.PAREN, parser.parse_type)
        parser.parse_punctuation("->")
        if parser.parse_optional_punctuation("(") is not None:
            result_types = []
            if parser.parse_optional_punctuation(")") is None:
                result_types = [parser.parse_type()]
                while parser.parse_optional_punctuation(","):
                    result_types.append(parser.parse_type())
                parser.parse_punctuation(")")
        else:
            result_types = [parser.parse_type()]
        op = cls(op_name, parser.resolve_operands(unresolved, types, pos), result_types)
        op.attributes.update(attributes)
        return op

    def print(self, printer: Printer):
        printer.print_string(" ")
        printer.print_string_literal(self.op_name.data)
        printer.print_string("(")
        printer.print_list(self.args, printer.print_operand)
        printer.print_string(")")
        if self.attributes:
            printer.print_attr_dict(self.attributes)
        printer.print_string(" : (")
        printer.print_list(self.args.types, printer.print_attribute)
        printer.print_string(") -> ")
        if len(self.results) == 1:
            printer.print_attribute(self.results[0].type)
        else:
            printer.print_string("(")
            printer.print_list(self.result_types, printer.print_attribute)
            printer.print_string(")")


@irdl_op_definition
class RuntimeAssertOp(IRDLOperation):
    """`torch.runtime.assert %cond, "message"`: what torch-mlir writes for torch.export's run-time checks (the
    size bounds of data-dependent shapes, e.g. after `nonzero`). Has an effect (it may raise): never deleted."""

    name = "torch.runtime.assert"
    condition = operand_def(BoolType)
    message = prop_def(StringAttr)

    def __init__(self, condition: SSAValue, message: str):
        super().__init__(operands=[condition], properties={"message": StringAttr(message)})

    @classmethod
    def parse(cls, parser: Parser):
        condition = parser.parse_operand(BoolType())
        parser.parse_punctuation(",")
        return cls(condition, parser.parse_str_literal())

    def print(self, printer: Printer):
        printer.print_string(" ")
        printer.print_operand(self.condition)
        printer.print_string(", ")
        printer.print_string_literal(self.message.data)


@irdl_op_definition
class ValueTensorLiteralOp(IRDLOperation):
    """`torch.vtensor.literal(dense<...> : tensor<2x3xf32>) : !torch.vtensor<[2,3],f32>`: a constant tensor."""

    name = "torch.vtensor.literal"
    value = prop_def(AnyAttr())
    result = result_def(ValueTensorType)
    traits = traits_def(Pure(), ConstantLike())

    @classmethod
    def parse(cls, parser: Parser):
        parser.parse_punctuation("(")
        start = parser.pos
        value = _fix_hex_float_splat(parser.parse_attribute(), parser.lexer.input.content[start : parser.pos])
        parser.parse_punctuation(")")
        attributes = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        result_type = parser.parse_type()
        return cls.create(properties={"value": value}, result_types=[result_type], attributes=attributes)

    def print(self, printer: Printer):
        printer.print_string("(")
        printer.print_attribute(self.value)
        printer.print_string(")")
        if self.attributes:
            printer.print_attr_dict(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.result.type)

    def splat_value(self) -> float | None:
        """The single value of a splat literal (`dense<0.0>`, `dense<0xFF800000>`, `dense<true>`), else None."""
        value = self.value
        if not isinstance(value, DenseIntOrFPElementsAttr):
            return None
        values = value.get_values()
        if len(values) == 0 or any(v != values[0] for v in values):
            return None
        return float(values[0])


_HEX_SPLAT = re.compile(r"\s*dense<(0x[0-9A-Fa-f]+)>")
_FLOAT_FORMATS = {16: ">e", 32: ">f", 64: ">d"}


def _fix_hex_float_splat(value: Attribute, text: str) -> Attribute:
    """MLIR writes a float splat that has no short decimal form (-inf, nan) as its bit pattern,
    `dense<0xFF800000> : tensor<f32>`; xDSL reads that hex as an integer value. Decode the bits instead."""
    match = _HEX_SPLAT.match(text)
    if match is None or not isinstance(value, DenseIntOrFPElementsAttr):
        return value
    element = value.get_element_type()
    if not isinstance(element, AnyFloat):
        return value
    bits, width = int(match.group(1), 16), element.bitwidth
    if isinstance(element, BFloat16Type):
        decoded = struct.unpack(">f", (bits << 16).to_bytes(4, "big"))[0]
    else:
        decoded = struct.unpack(_FLOAT_FORMATS[width], bits.to_bytes(width // 8, "big"))[0]
    count = math.prod(value.get_shape() or ())
    return DenseIntOrFPElementsAttr.from_list(value.type, [decoded] * count)


# ---------------------------------------------------------------------------------------------------------
# Generated ATen ops the passes match or build (operands named as in the ATen schema).


@irdl_op_definition
class AtenCatOp(_DefaultFormatOp):
    name = "torch.aten.cat"
    tensors = operand_def(ListType)
    dim = operand_def(IntType)
    result = result_def(Tensor)


@irdl_op_definition
class AtenScaledDotProductAttentionOp(_DefaultFormatOp):
    name = "torch.aten.scaled_dot_product_attention"
    query = operand_def(Tensor)
    key = operand_def(Tensor)
    value = operand_def(Tensor)
    attn_mask = operand_def(OptTensor)
    dropout_p = operand_def(FloatType)
    is_causal = operand_def(BoolType)
    scale = operand_def(OptFloat)
    enable_gqa = operand_def(BoolType)
    result = result_def(Tensor)


@irdl_op_definition
class AtenSliceTensorOp(_DefaultFormatOp):
    name = "torch.aten.slice.Tensor"
    self_ = operand_def(Tensor)
    dim = operand_def(IntType)
    start = operand_def(OptInt)
    end = operand_def(OptInt)
    step = operand_def(IntType)
    result = result_def(Tensor)


@irdl_op_definition
class AtenNarrowOp(_DefaultFormatOp):
    name = "torch.aten.narrow"
    self_ = operand_def(Tensor)
    dim = operand_def(IntType)
    start = operand_def(IntType)
    length = operand_def(IntType)
    result = result_def(Tensor)


@irdl_op_definition
class AtenSplitTensorOp(_DefaultFormatOp):
    name = "torch.aten.split.Tensor"
    self_ = operand_def(Tensor)
    split_size = operand_def(IntType)
    dim = operand_def(IntType)
    result = result_def(ListType)


@irdl_op_definition
class AtenSplitWithSizesOp(_DefaultFormatOp):
    name = "torch.aten.split_with_sizes"
    self_ = operand_def(Tensor)
    split_sizes = operand_def(ListType)
    dim = operand_def(IntType)
    result = result_def(ListType)


@irdl_op_definition
class AtenSplitSizesOp(_DefaultFormatOp):
    name = "torch.aten.split.sizes"
    self_ = operand_def(Tensor)
    split_size = operand_def(ListType)
    dim = operand_def(IntType)
    result = result_def(ListType)


@irdl_op_definition
class AtenChunkOp(_DefaultFormatOp):
    name = "torch.aten.chunk"
    self_ = operand_def(Tensor)
    chunks = operand_def(IntType)
    dim = operand_def(IntType)
    result = result_def(ListType)


@irdl_op_definition
class AtenTransposeIntOp(_DefaultFormatOp):
    name = "torch.aten.transpose.int"
    self_ = operand_def(Tensor)
    dim0 = operand_def(IntType)
    dim1 = operand_def(IntType)
    result = result_def(Tensor)


@irdl_op_definition
class AtenPermuteOp(_DefaultFormatOp):
    name = "torch.aten.permute"
    self_ = operand_def(Tensor)
    dims = operand_def(ListType)
    result = result_def(Tensor)


@irdl_op_definition
class AtenViewOp(_DefaultFormatOp):
    name = "torch.aten.view"
    self_ = operand_def(Tensor)
    size = operand_def(ListType)
    result = result_def(Tensor)


@irdl_op_definition
class AtenReshapeOp(_DefaultFormatOp):
    name = "torch.aten.reshape"
    self_ = operand_def(Tensor)
    shape = operand_def(ListType)
    result = result_def(Tensor)


@irdl_op_definition
class AtenFlattenUsingIntsOp(_DefaultFormatOp):
    name = "torch.aten.flatten.using_ints"
    self_ = operand_def(Tensor)
    start_dim = operand_def(IntType)
    end_dim = operand_def(IntType)
    result = result_def(Tensor)


@irdl_op_definition
class AtenUnflattenIntOp(_DefaultFormatOp):
    name = "torch.aten.unflatten.int"
    self_ = operand_def(Tensor)
    dim = operand_def(IntType)
    sizes = operand_def(ListType)
    result = result_def(Tensor)


@irdl_op_definition
class AtenContiguousOp(_DefaultFormatOp):
    name = "torch.aten.contiguous"
    self_ = operand_def(Tensor)
    memory_format = operand_def(IntType)
    result = result_def(Tensor)


@irdl_op_definition
class AtenUnsqueezeOp(_DefaultFormatOp):
    name = "torch.aten.unsqueeze"
    self_ = operand_def(Tensor)
    dim = operand_def(IntType)
    result = result_def(Tensor)


@irdl_op_definition
class AtenExpandOp(_DefaultFormatOp):
    name = "torch.aten.expand"
    self_ = operand_def(Tensor)
    size = operand_def(ListType)
    implicit = operand_def(BoolType)
    result = result_def(Tensor)


@irdl_op_definition
class AtenBroadcastToOp(_DefaultFormatOp):
    name = "torch.aten.broadcast_to"
    self_ = operand_def(Tensor)
    size = operand_def(ListType)
    result = result_def(Tensor)


@irdl_op_definition
class AtenArangeOp(_DefaultFormatOp):
    name = "torch.aten.arange"
    end = operand_def(Scalar)
    dtype = operand_def(OptInt)
    layout = operand_def(OptInt)
    device = operand_def(OptDevice)
    pin_memory = operand_def(OptBool)
    result = result_def(Tensor)


@irdl_op_definition
class AtenArangeStartOp(_DefaultFormatOp):
    name = "torch.aten.arange.start"
    start = operand_def(Scalar)
    end = operand_def(Scalar)
    dtype = operand_def(OptInt)
    layout = operand_def(OptInt)
    device = operand_def(OptDevice)
    pin_memory = operand_def(OptBool)
    result = result_def(Tensor)


@irdl_op_definition
class AtenArangeStartStepOp(_DefaultFormatOp):
    name = "torch.aten.arange.start_step"
    start = operand_def(Scalar)
    end = operand_def(Scalar)
    step = operand_def(Scalar)
    dtype = operand_def(OptInt)
    layout = operand_def(OptInt)
    device = operand_def(OptDevice)
    pin_memory = operand_def(OptBool)
    result = result_def(Tensor)


@irdl_op_definition
class AtenLtScalarOp(_DefaultFormatOp):
    name = "torch.aten.lt.Scalar"
    self_ = operand_def(Tensor)
    other = operand_def(Scalar)
    result = result_def(Tensor)


@irdl_op_definition
class AtenLtTensorOp(_DefaultFormatOp):
    name = "torch.aten.lt.Tensor"
    self_ = operand_def(Tensor)
    other = operand_def(Tensor)
    result = result_def(Tensor)


@irdl_op_definition
class AtenGtTensorOp(_DefaultFormatOp):
    name = "torch.aten.gt.Tensor"
    self_ = operand_def(Tensor)
    other = operand_def(Tensor)
    result = result_def(Tensor)


@irdl_op_definition
class AtenBitwiseNotOp(_DefaultFormatOp):
    name = "torch.aten.bitwise_not"
    self_ = operand_def(Tensor)
    result = result_def(Tensor)


@irdl_op_definition
class AtenLogicalNotOp(_DefaultFormatOp):
    name = "torch.aten.logical_not"
    self_ = operand_def(Tensor)
    result = result_def(Tensor)


@irdl_op_definition
class AtenWhereSelfOp(_DefaultFormatOp):
    name = "torch.aten.where.self"
    condition = operand_def(Tensor)
    self_ = operand_def(Tensor)
    other = operand_def(Tensor)
    result = result_def(Tensor)


@irdl_op_definition
class AtenWhereScalarOp(_DefaultFormatOp):
    name = "torch.aten.where.Scalar"
    condition = operand_def(Tensor)
    self_ = operand_def(Scalar)
    other = operand_def(Scalar)
    result = result_def(Tensor)


@irdl_op_definition
class AtenWhereScalarOtherOp(_DefaultFormatOp):
    name = "torch.aten.where.ScalarOther"
    condition = operand_def(Tensor)
    self_ = operand_def(Tensor)
    other = operand_def(Scalar)
    result = result_def(Tensor)


@irdl_op_definition
class AtenWhereScalarSelfOp(_DefaultFormatOp):
    name = "torch.aten.where.ScalarSelf"
    condition = operand_def(Tensor)
    self_ = operand_def(Scalar)
    other = operand_def(Tensor)
    result = result_def(Tensor)


@irdl_op_definition
class AtenMaskedFillScalarOp(_DefaultFormatOp):
    name = "torch.aten.masked_fill.Scalar"
    self_ = operand_def(Tensor)
    mask = operand_def(Tensor)
    value = operand_def(Scalar)
    result = result_def(Tensor)


@irdl_op_definition
class AtenClampOp(_DefaultFormatOp):
    name = "torch.aten.clamp"
    self_ = operand_def(Tensor)
    min = operand_def(OptScalar)
    max = operand_def(OptScalar)
    result = result_def(Tensor)


@irdl_op_definition
class AtenFullOp(_DefaultFormatOp):
    name = "torch.aten.full"
    size = operand_def(ListType)
    fill_value = operand_def(Scalar)
    dtype = operand_def(OptInt)
    layout = operand_def(OptInt)
    device = operand_def(OptDevice)
    pin_memory = operand_def(OptBool)
    result = result_def(Tensor)


@irdl_op_definition
class PrimDeviceOp(_DefaultFormatOp):
    name = "torch.prim.device"
    a = operand_def(Tensor)
    result = result_def(DeviceType)


TORCH_OPS: tuple[type[Operation], ...] = (
    ConstantIntOp,
    ConstantFloatOp,
    ConstantBoolOp,
    ConstantNoneOp,
    ConstantStrOp,
    ConstantDeviceOp,
    PrimListConstructOp,
    PrimListUnpackOp,
    OperatorOp,
    RuntimeAssertOp,
    ValueTensorLiteralOp,
    AtenCatOp,
    AtenScaledDotProductAttentionOp,
    AtenSliceTensorOp,
    AtenNarrowOp,
    AtenSplitTensorOp,
    AtenSplitWithSizesOp,
    AtenSplitSizesOp,
    AtenChunkOp,
    AtenTransposeIntOp,
    AtenPermuteOp,
    AtenViewOp,
    AtenReshapeOp,
    AtenFlattenUsingIntsOp,
    AtenUnflattenIntOp,
    AtenContiguousOp,
    AtenUnsqueezeOp,
    AtenExpandOp,
    AtenBroadcastToOp,
    AtenArangeOp,
    AtenArangeStartOp,
    AtenArangeStartStepOp,
    AtenLtScalarOp,
    AtenLtTensorOp,
    AtenGtTensorOp,
    AtenBitwiseNotOp,
    AtenLogicalNotOp,
    AtenWhereSelfOp,
    AtenWhereScalarOp,
    AtenWhereScalarOtherOp,
    AtenWhereScalarSelfOp,
    AtenMaskedFillScalarOp,
    AtenClampOp,
    AtenFullOp,
    PrimDeviceOp,
)

__all__ = [op.__name__ for op in TORCH_OPS] + [
    "GenericTorchOp",
    "GENERATED_PREFIXES",
    "parse_default_torch_op",
    "print_default_torch_op",
    "format_float",
]
