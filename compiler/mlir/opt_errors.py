"""The one-line errors of `jointattn-opt` and `run_pipeline`: each names the file, pass, option or target and
what was expected, instead of a traceback out of xDSL's internals.

Entry points: the `OptError` family (`UsageError`, `InputError`, `OutputError`, `PassError`; `str(e)` is the
line after `jointattn-opt: error: `, `e.exit_code` the CLI's status), `passes_from_spec` (a `-p` pipeline to
pass instances), `check_text` and `parse_input` (the input to a module), `run_passes` (the passes in order, each
failure attributed to its pass), and the line builders the CLI also uses (`parse_error_line`, `os_error_line`,
`spec_syntax_line`, `exception_line`, `first_line`).

Internals: xDSL reports a pipeline syntax error as a multi-line caret dump (`ArgSpecParseError`), an option of
the wrong type as "Incompatible types: given ('maybe',), expected <class 'bool'>", a parse error as a caret dump
and an op that does not verify with the whole module printed in the exception's notes. Each is condensed here to
its location and message; option values are checked against the pass's dataclass fields (and its `choices`,
where it has them) before xDSL's `from_spec` sees them.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Callable, Sequence

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.parser import Parser
from xdsl.passes import ModulePass
from xdsl.utils.arg_spec import ArgSpec, parse_pipeline
from xdsl.utils.exceptions import (
    ArgSpecParseError,
    ParseError,
    PassFailedException,
    ShrinkException,
    VerifyException,
)

PassFactory = Callable[[], type[ModulePass]]
# Called between passes as xDSL's PassPipeline calls it: (pass that just ran, module, pass about to run).
Checkpoint = Callable[[ModulePass | None, ModuleOp, ModulePass | None], None]


class OptError(Exception):
    """A failure the user can act on; `str(self)` is one line, `exit_code` what `jointattn-opt` returns.

    `debug_hint` marks a bug rather than bad input (the CLI then points at --debug for the traceback)."""

    exit_code = 1
    debug_hint = False


class UsageError(OptError, ValueError):
    """The command line asked for something that does not exist: a pass, an option or value, a target."""

    exit_code = 2


class InputError(OptError, ValueError):
    """The input cannot be read, is empty, or is not valid MLIR."""


class OutputError(OptError):
    """The output file cannot be written."""


class PassError(OptError, PassFailedException):
    """A pass refused the module or failed on it; the line starts with the pass's name.

    Also a `PassFailedException`, so callers that catch xDSL's exception for a failed pass still do."""


# ---------------------------------------------------------------------------------------------------------
# The pipeline: syntax, pass names, option names, values and types.


def passes_from_spec(
    available: dict[str, PassFactory], spec: str, featured: Sequence[str] = ()
) -> tuple[ModulePass, ...]:
    """The passes of a `-p` pipeline, or a `UsageError` naming the pass or option at fault.

    `featured` are the pass names an unknown-pass error lists (all of `available` when empty)."""
    try:
        specs = list(parse_pipeline(spec))
    except ArgSpecParseError as e:  # a BaseException in xDSL, not an Exception
        raise UsageError(spec_syntax_line(f"pass pipeline {spec!r}", e)) from None
    for pass_spec in specs:
        if pass_spec.name not in available:
            raise UsageError(_unknown_pass_line(pass_spec.name, available, featured))
    return tuple(pass_from_spec(available[s.name](), s) for s in specs)


def pass_from_spec(pass_type: type[ModulePass], spec: ArgSpec) -> ModulePass:
    """One pass with its options, checked against its fields before xDSL converts them."""
    fields = {f.name: f for f in dataclasses.fields(pass_type) if f.init and f.name != "name"}
    hints = typing.get_type_hints(pass_type)
    declared: dict[str, Sequence[str]] = getattr(pass_type, "choices", {})  # our passes' ClassVar
    choices = {name: declared.get(name) or _literal_values(hints[name]) for name in fields}
    options = {name: _option_synopsis(name, hints[name], choices[name]) for name in fields}
    for written, values in spec.parameters.items():
        name = written.replace("-", "_")
        if name not in fields:
            expected = f"one of {', '.join(options.values())}" if options else "no options"
            raise UsageError(f"{spec.name}: unknown option {written!r}: expected {expected}")
        expected = _bad_value(values, hints[name], choices[name])
        if expected is not None:
            given = f"option {written}={_show(values)}" if values else f"option {written} has no value"
            raise UsageError(f"{spec.name}: {given}: expected {expected}")
    written_names = {name.replace("-", "_") for name in spec.parameters}
    for name, field in fields.items():
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if required and name not in written_names and type(None) not in typing.get_args(hints[name]):
            raise UsageError(f"{spec.name}: option {name} is missing: expected {options[name]}")
    try:
        return pass_type.from_pass_spec(spec)
    except ValueError as e:  # what the checks above do not cover (tuple-typed options of xDSL's passes)
        raise UsageError(f"{spec.name}: {first_line(str(e))}") from e


def spec_syntax_line(subject: str, error: ArgSpecParseError) -> str:
    """`subject at column N: message` from xDSL's multi-line pipeline syntax error."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    # lines: "Error parsing pass pipeline specification:", "pass-pipeline:1:22", the spec, carets, message.
    location = re.fullmatch(r"\S+:\d+:(\d+)", lines[1].strip()) if len(lines) > 1 else None
    where = f" at column {location.group(1)}" if location else ""
    return f"{subject}{where}: {lines[-1].strip()}"


def _unknown_pass_line(name: str, available: dict[str, PassFactory], featured: Sequence[str]) -> str:
    listed = [n for n in featured if n in available] or sorted(available)
    others = len(available) - len(listed)
    expected = ", ".join(listed) + (f", or one of the {others} other passes --help lists" if others else "")
    close = difflib.get_close_matches(name, list(available), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown pass {name!r}: expected {expected}{hint}"


def _literal_values(hint) -> tuple[str, ...] | None:
    """The values of a `Literal[...]` option of strings (as some of xDSL's passes declare them)."""
    if typing.get_origin(hint) is typing.Literal and all(isinstance(v, str) for v in typing.get_args(hint)):
        return typing.get_args(hint)
    return None


def _option_synopsis(name: str, hint, choices: Sequence[str] | None) -> str:
    if choices:
        return f"{name}={'|'.join(choices)}"
    if hint is bool:
        return f"{name}=true|false"
    return f"{name}=<{getattr(hint, '__name__', str(hint))}>"


def _bad_value(values: tuple, hint, choices: Sequence[str] | None) -> str | None:
    """What the option expected, if `values` is not it; None when fine (or for types left to xDSL)."""
    one = values[0] if len(values) == 1 else None
    if choices:
        return None if isinstance(one, str) and one in choices else f"one of {', '.join(choices)}"
    if hint is bool:
        return None if isinstance(one, bool) else "true or false"
    if hint is int:
        return None if isinstance(one, int) and not isinstance(one, bool) else "an integer"
    if hint is float:
        return None if isinstance(one, (int, float)) and not isinstance(one, bool) else "a number"
    if hint is str:
        return None if isinstance(one, str) else 'a string (quote it: "...")'
    return None


def _show(values: tuple) -> str:
    return ",".join(str(v).lower() if isinstance(v, bool) else str(v) for v in values)


# ---------------------------------------------------------------------------------------------------------
# The input.


def check_text(data: bytes | str, source: str) -> str:
    """The input as text: an `InputError` if it is empty or not UTF-8."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(
                f"{source}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}): expected MLIR text"
            ) from None
    if not data.strip():
        raise InputError(f"{source}: is empty: expected MLIR text (a module or functions)")
    return data


def parse_input(text: str, ctx: Context, source: str) -> ModuleOp:
    """Parses MLIR `text` (named `source` in diagnostics); an `InputError` with the parser's location and
    message if it cannot."""
    try:
        return Parser(ctx, text, source).parse_module()
    except ParseError as e:
        raise InputError(parse_error_line(e)) from e
    except VerifyException as e:  # an attribute that fails its own check while it is being built
        raise InputError(f"{source}: {first_line(str(e))}") from e


def parse_error_line(error: ParseError, line_offset: int = 0) -> str:
    """`file:line:col: message`, the parser's diagnostic without its caret dump."""
    span = dataclasses.replace(error.span, line_offset=error.span.line_offset + line_offset)
    location = span.get_location()
    message = first_line(error.msg)
    if re.fullmatch(r"Operation \S+ is not registered", message):
        message += (
            ": expected an op of torch-mlir's torch dialect, the jointattn dialects or xDSL's"
            " (--allow-unregistered-dialect parses it generically)"
        )
    return f"{location}: {message}"


def verify_error_line(module: ModuleOp, error: VerifyException) -> str:
    """`op: message` for a module that does not verify (xDSL puts the whole module in the exception's notes)."""
    message = first_line(str(error))
    op = _first_failing_op(module)
    if op is None or op.name in message:
        return message
    return f"{op.name}: {message}"


def _first_failing_op(module: ModuleOp) -> Operation | None:
    for op in module.walk():
        try:
            op.verify(verify_nested_ops=False)
        except Exception:
            return op
    return None


# ---------------------------------------------------------------------------------------------------------
# The passes.


def run_passes(
    passes: Sequence[ModulePass], ctx: Context, module: ModuleOp, source: str, checkpoint: Checkpoint
) -> None:
    """Applies `passes` in order, calling `checkpoint` as xDSL's PassPipeline does (it verifies the module).

    A failure is attributed: the input (`InputError`) if it does not verify before the first pass, otherwise
    the pass that failed or left IR that does not verify (`PassError`, its name first)."""

    def check(previous: ModulePass | None, following: ModulePass | None) -> None:
        try:
            checkpoint(previous, module, following)
        except VerifyException as e:
            what = verify_error_line(module, e)
            if previous is None:
                raise InputError(f"{source}: does not verify: {what}") from e
            raise PassError(f"{previous.name}: left IR that does not verify: {what}") from e

    check(None, passes[0] if passes else None)
    for index, current in enumerate(passes):
        try:
            current.apply(ctx, module)
        except ShrinkException:  # xDSL's test-case reducer's signal, not a failure
            raise
        except PassFailedException as e:
            message = first_line(str(e))
            if not message.startswith(f"{current.name}:"):
                message = f"{current.name}: {message}"
            raise PassError(message) from e
        except Exception as e:  # a bug in the pass rather than a refusal: the CLI points at --debug
            error = PassError(f"{current.name}: internal error: {exception_line(e)}")
            error.debug_hint = True
            raise error from e
        check(current, passes[index + 1] if index + 1 < len(passes) else None)


# ---------------------------------------------------------------------------------------------------------
# Lines.


def os_error_line(subject: str, error: OSError, expected: str) -> str:
    """`subject: reason: expected ...` for a file that cannot be opened."""
    reason = (error.strerror or type(error).__name__).lower()
    return f"{subject}: {reason}: expected {expected}"


def exception_line(error: BaseException) -> str:
    """`Type: first line of the message`, for exceptions that are bugs rather than bad input."""
    message = first_line(str(error))
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def first_line(text: str) -> str:
    """The first non-blank line of `text`, stripped (exception messages can hold dumps after it)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")
