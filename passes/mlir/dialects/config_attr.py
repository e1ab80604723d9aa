"""`#dialect.name<key = value, ...>` attributes holding a lowering's configuration (ints, bools, words).

Entry point: subclass `ConfigAttr` with `IntAttr` / `BoolParam` / `StringAttr` fields; parsing and printing
follow the field order, so `#ttnn.sdpa_program_config<q_chunk_size = 64, k_chunk_size = 128>` reads back
exactly. `values()` returns the fields as plain Python values for the emitter.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import IntAttr, StringAttr
from xdsl.ir import Attribute, ParametrizedAttribute
from xdsl.parser import AttrParser
from xdsl.printer import Printer


class ConfigAttr(ParametrizedAttribute):
    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        names = [name for name, _ in cls.get_irdl_definition().parameters]
        found: dict[str, Attribute] = {}

        def parse_entry() -> None:
            key = parser.parse_identifier()
            if key not in names:
                parser.raise_error(f"{cls.name}: unknown key '{key}' (expected {', '.join(names)})")
            parser.parse_punctuation("=")
            if (number := parser.parse_optional_integer()) is not None:
                found[key] = IntAttr(number)
            elif (flag := parser.parse_optional_boolean()) is not None:
                found[key] = IntAttr(int(flag))
            else:
                found[key] = StringAttr(parser.parse_identifier())

        parser.parse_comma_separated_list(parser.Delimiter.ANGLE, parse_entry)
        missing = [n for n in names if n not in found]
        if missing:
            parser.raise_error(f"{cls.name}: missing {', '.join(missing)}")
        return [found[n] for n in names]

    def print_parameters(self, printer: Printer) -> None:
        names = [name for name, _ in self.get_irdl_definition().parameters]
        with printer.in_angle_brackets():
            printer.print_list(
                zip(names, self.parameters, strict=True), lambda kv: printer.print_string(_entry(self, *kv))
            )

    def values(self) -> dict[str, int | bool | str]:
        names = [name for name, _ in self.get_irdl_definition().parameters]
        return {n: _plain(self, n, p) for n, p in zip(names, self.parameters, strict=True)}


def _plain(attr: ConfigAttr, name: str, value: Attribute) -> int | bool | str:
    if isinstance(value, StringAttr):
        return value.data
    assert isinstance(value, IntAttr)
    return bool(value.data) if name in attr.BOOL_FIELDS else value.data


def _entry(attr: ConfigAttr, name: str, value: Attribute) -> str:
    plain = _plain(attr, name, value)
    text = ("true" if plain else "false") if isinstance(plain, bool) else str(plain)
    return f"{name} = {text}"
