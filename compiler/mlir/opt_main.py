"""`jointattn-opt`: xDSL's opt driver with the jointattn dialects and passes, mlir-opt conventions.

    jointattn-opt model.mlir -p 'fuse-joint-attention{emit=operator},lower-joint-attention{target=ttnn}'
    jointattn-opt model.mlir -p 'fuse-joint-attention{remarks=true}' -o fused.mlir
    jointattn-opt model.mlir -p 'fuse-joint-attention,lower-joint-attention{target=triton}' -t python

Entry points: `main()` (the console script), `JointAttnOptMain` (the `xDSLOptMain` subclass) and
`run_pipeline(text, pipeline) -> str` for Python callers (the same passes, parsing and printing, in process).
Targets: `mlir` (default; prints torch-mlir-compatible text, including the module's `dense_resource` weights)
and `python` (the code `compiler.mlir.emit` would run).

Errors (`opt_errors.py`): every failure is one line on stderr, `jointattn-opt: error: <what>: <expected>`, naming
the file, pass, option or target; exit status 2 for a bad command line, 1 for anything else; `--debug` re-raises
with the traceback. A failed run leaves no `-o` file behind (as mlir-opt). `run_pipeline` raises the same errors
(`UsageError`/`InputError` are ValueErrors, `PassError` a PassFailedException) with the same lines.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, NoReturn

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass, PassPipeline
from xdsl.printer import Printer
from xdsl.utils.exceptions import ArgSpecParseError, ParseError, VerifyException
from xdsl.utils.target import Target
from xdsl.xdsl_opt_main import xDSLOptMain

from ...passes.mlir.dialects import make_context
from ...passes.mlir.fuse import FuseJointAttentionPass
from ...passes.mlir.lower_joint_attention import LowerJointAttentionPass
from .opt_errors import (
    InputError,
    OptError,
    OutputError,
    UsageError,
    check_text,
    exception_line,
    first_line,
    os_error_line,
    parse_error_line,
    parse_input,
    passes_from_spec,
    run_passes,
    spec_syntax_line,
)

PASSES = (FuseJointAttentionPass, LowerJointAttentionPass)
PROG = "jointattn-opt"


@dataclass(frozen=True)
class PythonTarget(Target):
    """`-t python`: the Python source `compiler.mlir.emit.compile_module` runs for this module."""

    name = "python"

    def emit(self, ctx: Context, module: ModuleOp, output: IO[str]) -> None:
        from .emit import emit_python

        output.write(emit_python(module, ctx) + "\n")


class JointAttnOptMain(xDSLOptMain):
    output_opened = False  # whether `-o`'s file was opened (and truncated) by this run

    def register_all_dialects(self):
        # The jointattn context (dialects/context.py: every torch-mlir-generated op parses, a builtin dialect
        # of its own so resource blobs stay with this module), plus xDSL's other dialects, registered lazily.
        self.ctx = make_context()
        known = {d.name for d in self.ctx.loaded_dialects} | set(self.ctx.registered_dialect_names)
        from xdsl.universe import Universe

        for name, factory in Universe.get_multiverse().all_dialects.items():
            if name not in known:
                self.ctx.register_dialect(name, factory)

    def register_all_passes(self):
        super().register_all_passes()
        for pass_type in PASSES:
            self.register_pass(pass_type.name, lambda pass_type=pass_type: pass_type)

    def register_all_targets(self):
        super().register_all_targets()
        self.available_targets["python"] = lambda: PythonTarget

    def register_all_arguments(self, arg_parser):
        super().register_all_arguments(arg_parser)
        arg_parser.prog = PROG
        arg_parser.add_argument(
            "--debug", action="store_true", help="on an error, raise it with its Python traceback"
        )
        arg_parser.error = _usage_error  # argparse's own errors: one line, without the usage dump

    def setup_pipeline(self):
        # Checked here first so a bad pass or option is a one-line UsageError; xDSL's own setup then builds
        # the checkpoint between passes (verification, --print-between-passes, --time-passes).
        passes = passes_from_spec(self.available_passes, self.args.passes, [p.name for p in PASSES])
        super().setup_pipeline()
        self.pipeline = PassPipeline(passes, self.pipeline.callback)

    def get_input_stream(self) -> tuple[IO[bytes], str]:
        path = self.args.input_file
        if path is None:
            data, extension, subject = sys.stdin.buffer.read(), "mlir", "stdin"
        else:
            subject = f"input file {path!r}"
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise InputError(os_error_line(subject, e, "a readable MLIR file")) from e
            extension = os.path.splitext(path)[1].removeprefix(".")
            if self.args.frontend is None and extension not in self.available_frontends:
                known = ", ".join(f".{name}" for name in self.available_frontends)
                suffix = f"extension '.{extension}'" if extension else "no extension"
                raise UsageError(f"{subject}: {suffix}: expected {known}, or -f mlir to read it as MLIR")
        check_text(data, subject)
        return io.BytesIO(data), extension

    def parse_chunk(self, chunk: IO[bytes], file_extension: str, start_offset: int = 0) -> ModuleOp | None:
        try:
            return super().parse_chunk(chunk, file_extension, start_offset)
        except ParseError as e:
            if self.args.parsing_diagnostics:  # xDSL prints the diagnostic itself and exits 0
                raise
            raise InputError(parse_error_line(e, start_offset)) from e
        except VerifyException as e:
            raise InputError(f"{self.get_input_name()}: {first_line(str(e))}") from e

    def apply_passes(self, prog: ModuleOp):
        if self.args.verify_diagnostics:  # xDSL prints the diagnostic itself and exits 0
            return super().apply_passes(prog)
        checkpoint = self.pipeline.callback or (lambda *_: None)
        run_passes(self.pipeline.passes, self.ctx, prog, self.get_input_name(), checkpoint)

    def prepare_output(self) -> IO[str]:
        path = self.args.output_file
        if path is None:
            return sys.stdout
        try:
            stream = open(path, "w")
        except OSError as e:
            raise OutputError(
                os_error_line(f"output file {path!r}", e, "a writable file in an existing directory")
            ) from e
        self.output_opened = True
        return stream

    def output_resulting_program(self, prog: ModuleOp) -> str:
        try:
            return super().output_resulting_program(prog)
        except (ValueError, NotImplementedError) as e:  # the target's own refusals
            raise OptError(f"target {self.args.target!r}: {first_line(str(e))}") from e
        except Exception as e:
            error = OptError(f"target {self.args.target!r}: internal error: {exception_line(e)}")
            error.debug_hint = True
            raise error from e

    def discard_output(self) -> None:
        """Removes the `-o` file of a failed run: it was truncated and holds at most part of the output."""
        if self.output_opened:
            try:
                os.remove(self.args.output_file)
            except OSError:
                pass


def run_pipeline(text: str, pipeline: str) -> str:
    """Parses `text`, runs the comma-separated pass `pipeline` (as after `-p`), returns the printed module.

    Raises the CLI's one-line errors: `UsageError` (a ValueError) for the pipeline, `InputError` (a ValueError)
    for the text, `PassError` (a PassFailedException) for a pass that refused or failed."""
    passes = passes_from_spec({p.name: (lambda p=p: p) for p in PASSES}, pipeline)
    ctx = make_context()
    source = "<input>"
    module = parse_input(check_text(text, source), ctx, source)
    run_passes(passes, ctx, module, source, _verify)
    output = io.StringIO()
    printer = Printer(stream=output)
    printer.print_op(module)
    printer.print_metadata(ctx.loaded_dialects)
    return output.getvalue() + "\n"


def _verify(previous: ModulePass | None, module: ModuleOp, following: ModulePass | None) -> None:
    module.verify()


def _usage_error(message: str) -> NoReturn:
    if message.startswith("unrecognized arguments"):
        message += ": expected the options --help lists and at most one input file"
    raise UsageError(message)


def main(args: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    tool = None
    try:
        tool = JointAttnOptMain(
            description="jointattn's MLIR optimizer: xDSL opt with the joint-attention passes", args=argv
        )
        tool.run()
    except BrokenPipeError:
        # The reader went away (`jointattn-opt ... | head`): nothing to report, and nothing more to write.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except (Exception, ArgSpecParseError) as e:  # ArgSpecParseError is a BaseException
        if tool is not None:
            tool.discard_output()
        debug = tool.args.debug if tool is not None else "--debug" in argv  # argparse may not have run
        if debug:
            raise
        code, line = _error_line(e)
        print(f"{PROG}: error: {line}", file=sys.stderr)
        sys.exit(code)


def _error_line(error: BaseException) -> tuple[int, str]:
    """The exit status and the one line for an error that reached `main`."""
    if isinstance(error, OptError):
        hint = "; --debug shows the traceback" if error.debug_hint else ""
        return error.exit_code, f"{error}{hint}"
    if isinstance(error, ArgSpecParseError):  # the only spec xDSL parses before setup_pipeline: -t's
        return 2, spec_syntax_line("option -t/--target", error)
    return 1, f"internal error: {exception_line(error)}; --debug shows the traceback"


if __name__ == "__main__":
    main()
