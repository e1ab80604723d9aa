"""Types of torch-mlir's `torch` dialect, parsed and printed in torch-mlir's own syntax.

Entry points: `ValueTensorType` (`!torch.vtensor<[2,?,8],f32>`), the scalar types (`!torch.int`, `!torch.float`,
`!torch.bool`, `!torch.none`, `!torch.str`, `!torch.Device`, `!torch.number`), and the containers
`!torch.list<T>`, `!torch.optional<T>`, `!torch.tuple<T, ...>`; `TORCH_TYPES` lists them for the dialect.
`torch_dtype(element_type)` maps a tensor's builtin element type (f32, si64, ui16, i1, ...) to its torch dtype.

Internals: torch-mlir prints a torch type nested inside another torch type without its `!torch.` prefix
(`!torch.list<vtensor>`, `!torch.optional<int>`), so containers parse and print their elements through
`_parse_nested` / `_print_nested`, which map the short keyword to the type class. Unknown tensor sizes are
`?` (stored as -1), an unranked tensor is `*` and an unknown dtype `unk` (both stored as `NoneAttr`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from xdsl.dialects.builtin import (
    ArrayAttr,
    BFloat16Type,
    Float16Type,
    Float32Type,
    Float64Type,
    IntAttr,
    IntegerType,
    NoneAttr,
    Signedness,
)
from xdsl.ir import Attribute, ParametrizedAttribute, TypeAttribute
from xdsl.irdl import irdl_attr_definition
from xdsl.parser import AttrParser
from xdsl.printer import Printer

if TYPE_CHECKING:
    import torch

DYNAMIC = -1  # a `?` size


@irdl_attr_definition
class ValueTensorType(ParametrizedAttribute, TypeAttribute):
    """`!torch.vtensor<[sizes],dtype>`: a tensor with value semantics, the only tensor type the passes see."""

    name = "torch.vtensor"

    sizes: ArrayAttr[IntAttr] | NoneAttr  # NoneAttr: unranked (`*`) or not given at all
    dtype: Attribute  # a builtin element type (f32, si64, i1, ...) or NoneAttr for `unk`

    def __init__(self, sizes: Sequence[int] | None, dtype: Attribute | None):
        size_attr = NoneAttr() if sizes is None else ArrayAttr(IntAttr(s) for s in sizes)
        super().__init__(size_attr, NoneAttr() if dtype is None else dtype)

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The sizes (-1 for unknown ones), or None when the rank is unknown."""
        if isinstance(self.sizes, NoneAttr):
            return None
        return tuple(s.data for s in self.sizes.data)

    @property
    def element_type(self) -> Attribute | None:
        return None if isinstance(self.dtype, NoneAttr) else self.dtype

    def with_shape(self, sizes: Sequence[int]) -> ValueTensorType:
        return ValueTensorType(sizes, self.element_type)

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        if parser.parse_optional_characters("<") is None:
            return (NoneAttr(), NoneAttr())
        if parser.parse_optional_characters("*") is not None:
            sizes: Attribute = NoneAttr()
        else:
            sizes = ArrayAttr(
                parser.parse_comma_separated_list(
                    parser.Delimiter.SQUARE, lambda: IntAttr(_parse_size(parser))
                )
            )
        parser.parse_characters(",")
        dtype: Attribute = NoneAttr() if parser.parse_optional_keyword("unk") else parser.parse_type()
        parser.parse_characters(">")
        return (sizes, dtype)

    def print_parameters(self, printer: Printer) -> None:
        if isinstance(self.sizes, NoneAttr) and isinstance(self.dtype, NoneAttr):
            return
        printer.print_string("<")
        if isinstance(self.sizes, NoneAttr):
            printer.print_string("*")
        else:
            printer.print_string(
                "[" + ",".join("?" if s.data == DYNAMIC else str(s.data) for s in self.sizes.data) + "]"
            )
        printer.print_string(",")
        if isinstance(self.dtype, NoneAttr):
            printer.print_string("unk")
        else:
            printer.print_attribute(self.dtype)
        printer.print_string(">")


def torch_dtype(element_type: Attribute | None) -> torch.dtype:
    """The `torch.dtype` of a tensor element type: f32/f16/bf16/f64, i1 (bool), signed or signless integers
    (si8 ... si64, i8 ... i64) and unsigned ones (ui8 ... ui64). Raises ValueError for any other type."""
    import torch  # here, so that parsing and printing IR does not need torch

    floats = {
        Float32Type: torch.float32,
        Float16Type: torch.float16,
        BFloat16Type: torch.bfloat16,
        Float64Type: torch.float64,
    }
    if type(element_type) in floats:
        return floats[type(element_type)]
    if isinstance(element_type, IntegerType):
        width = element_type.width.data
        if width == 1:
            return torch.bool
        unsigned = element_type.signedness.data == Signedness.UNSIGNED
        by_width = (
            {8: torch.uint8, 16: torch.uint16, 32: torch.uint32, 64: torch.uint64}
            if unsigned
            else {8: torch.int8, 16: torch.int16, 32: torch.int32, 64: torch.int64}
        )
        if width in by_width:
            return by_width[width]
    raise ValueError(f"no torch dtype for the element type {element_type}")


def _parse_size(parser: AttrParser) -> int:
    if parser.parse_optional_characters("?") is not None:
        return DYNAMIC
    return parser.parse_integer()


@irdl_attr_definition
class IntType(ParametrizedAttribute, TypeAttribute):
    name = "torch.int"


@irdl_attr_definition
class FloatType(ParametrizedAttribute, TypeAttribute):
    name = "torch.float"


@irdl_attr_definition
class BoolType(ParametrizedAttribute, TypeAttribute):
    name = "torch.bool"


@irdl_attr_definition
class NoneType(ParametrizedAttribute, TypeAttribute):
    name = "torch.none"


@irdl_attr_definition
class StringType(ParametrizedAttribute, TypeAttribute):
    name = "torch.str"


@irdl_attr_definition
class DeviceType(ParametrizedAttribute, TypeAttribute):
    name = "torch.Device"


@irdl_attr_definition
class NumberType(ParametrizedAttribute, TypeAttribute):
    name = "torch.number"


@irdl_attr_definition
class ListType(ParametrizedAttribute, TypeAttribute):
    """`!torch.list<T>`, element printed in the short form (`!torch.list<vtensor>`)."""

    name = "torch.list"

    element: Attribute

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        with parser.in_angle_brackets():
            return (_parse_nested(parser),)

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            _print_nested(printer, self.element)


@irdl_attr_definition
class OptionalType(ParametrizedAttribute, TypeAttribute):
    """`!torch.optional<T>`."""

    name = "torch.optional"

    element: Attribute

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        with parser.in_angle_brackets():
            return (_parse_nested(parser),)

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            _print_nested(printer, self.element)


@irdl_attr_definition
class TupleType(ParametrizedAttribute, TypeAttribute):
    """`!torch.tuple<T, U>`."""

    name = "torch.tuple"

    elements: ArrayAttr[Attribute]

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        return (
            ArrayAttr(
                parser.parse_comma_separated_list(parser.Delimiter.ANGLE, lambda: _parse_nested(parser))
            ),
        )

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_list(self.elements.data, lambda t: _print_nested(printer, t))


TORCH_TYPES: tuple[type[ParametrizedAttribute], ...] = (
    ValueTensorType,
    IntType,
    FloatType,
    BoolType,
    NoneType,
    StringType,
    DeviceType,
    NumberType,
    ListType,
    OptionalType,
    TupleType,
)
_BY_KEYWORD = {t.name.removeprefix("torch."): t for t in TORCH_TYPES}


def _parse_nested(parser: AttrParser) -> Attribute:
    """A torch type inside another one: `vtensor<[2],f32>`, `int`, `list<int>`; anything else fully spelled."""
    keyword = parser.parse_optional_identifier()
    if keyword is None:
        return parser.parse_type()
    if keyword not in _BY_KEYWORD:
        parser.raise_error(f"unknown torch type '{keyword}' (expected one of {', '.join(_BY_KEYWORD)})")
    type_class = _BY_KEYWORD[keyword]
    return type_class.new(type_class.parse_parameters(parser))


def _print_nested(printer: Printer, attr: Attribute) -> None:
    if isinstance(attr, TORCH_TYPES):
        printer.print_string(attr.name.removeprefix("torch."))
        attr.print_parameters(printer)
    else:
        printer.print_attribute(attr)
