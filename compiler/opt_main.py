"""`jointattn-opt`: xDSL's opt driver with the jointattn dialects and passes, mlir-opt conventions.

    jointattn-opt model.mlir -p 'fuse-joint-attention{emit=operator},lower-joint-attention{target=ttnn}'
    jointattn-opt model.mlir -p 'fuse-joint-attention{remarks=true}' -o fused.mlir
    jointattn-opt model.mlir -p 'fuse-joint-attention,lower-joint-attention{target=triton}' -t python

Entry points: `main()` (the console script), `JointAttnOptMain` (the `xDSLOptMain` subclass) and
`run_pipeline(text, pipeline) -> str` for Python callers (the same passes, parsing and printing, in process).
Targets: `mlir` (default; prints torch-mlir-compatible text, including the module's `dense_resource` weights)
and `python` (the code `compiler.mlir_emit` would run).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import PassPipeline
from xdsl.printer import Printer
from xdsl.utils.target import Target
from xdsl.xdsl_opt_main import xDSLOptMain

from ..passes.mlir.dialects import make_context, parse_module
from ..passes.mlir.fuse import FuseJointAttentionPass
from ..passes.mlir.lower_joint_attention import LowerJointAttentionPass

PASSES = (FuseJointAttentionPass, LowerJointAttentionPass)


@dataclass(frozen=True)
class PythonTarget(Target):
    """`-t python`: the Python source `compiler.mlir_emit.compile_module` runs for this module."""

    name = "python"

    def emit(self, ctx: Context, module: ModuleOp, output: IO[str]) -> None:
        from .mlir_emit import emit_python

        output.write(emit_python(module, ctx) + "\n")


class JointAttnOptMain(xDSLOptMain):
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


def run_pipeline(text: str, pipeline: str) -> str:
    """Parses `text`, runs the comma-separated pass `pipeline` (as after `-p`), returns the printed module."""
    ctx = make_context()
    module = parse_module(text, ctx)
    available = {p.name: (lambda p=p: p) for p in PASSES}
    PassPipeline.parse_spec(available, pipeline).apply(ctx, module)
    module.verify()
    output = io.StringIO()
    printer = Printer(stream=output)
    printer.print_op(module)
    printer.print_metadata(ctx.loaded_dialects)
    return output.getvalue() + "\n"


def main(args: Sequence[str] | None = None) -> None:
    JointAttnOptMain(
        description="jointattn's MLIR optimizer: xDSL opt with the joint-attention passes", args=args
    ).run()


if __name__ == "__main__":
    main()
