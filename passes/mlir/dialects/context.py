"""The xDSL context every jointattn tool parses with: builtin, func, torch, jointattn, ttnn, jointattn_triton,
jointattn_ttlang, torch_c and scf.

Entry points: `make_context()` and `parse_module(text)`. `TorchContext` resolves an op name that no dialect
defines but that torch-mlir generates (`torch.aten.*`, `torch.prim.*`, `torch.prims.*`, ...) to an opaque
`GenericTorchOp` of that name, so whole imported models parse, pass through the passes untouched and print
back in torch-mlir's syntax, while the ops the passes reason about stay typed.

Each context gets its own copy of the builtin dialect: xDSL keeps `dense_resource` blobs (the weights
torch-mlir's importer writes at the end of a module) in the builtin dialect's resource storage, and the shared
`Builtin` object would mix up the blobs of two modules parsed in one process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialect_interfaces.op_asm import OpAsmDialectInterface
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.dialects.func import Func
from xdsl.dialects.scf import Scf
from xdsl.ir import Dialect, Operation
from xdsl.parser import Parser

from .jointattn import JointAttn
from .jointattn_triton import JointAttnTriton
from .jointattn_ttlang import JointAttnTtlang
from .torch_conversion import TorchConversion
from .torch_dialect import Torch
from .torch_ops import GENERATED_PREFIXES, GenericTorchOp
from .ttnn import TTNN

# scf and torch_c: the `scf.if` on the host-side `is_prefix` flag that the masked lowering writes.
DIALECTS = (Torch, JointAttn, TTNN, JointAttnTriton, JointAttnTtlang, TorchConversion, Scf)


@dataclass
class TorchContext(Context):
    def get_optional_op(self, name: str, *, dialect_stack: Sequence[str] = ()) -> type[Operation] | None:
        known = self._get_known_op(name)
        if known is not None:
            return known
        if name.startswith(GENERATED_PREFIXES):
            op_type = GenericTorchOp.with_name(name)
            self.load_op(op_type)
            return op_type
        return super().get_optional_op(name, dialect_stack=dialect_stack)

    def clone(self) -> TorchContext:
        return TorchContext(
            self.allow_unregistered,
            self._loaded_dialects.copy(),
            self._loaded_ops.copy(),
            self._loaded_attrs.copy(),
            self._loaded_types.copy(),
            self._registered_dialects.copy(),
        )


def private_builtin() -> Dialect:
    """The builtin dialect with a resource storage of its own."""
    return Dialect(
        Builtin.name, list(Builtin.operations), list(Builtin.attributes), [OpAsmDialectInterface()]
    )


def load_dialects(ctx: Context) -> None:
    """Loads the jointattn dialects (and builtin/func when missing) into an existing context."""
    for dialect in (Func, *DIALECTS):
        if dialect.name in ctx.registered_dialect_names:
            if dialect.name not in {d.name for d in ctx.loaded_dialects}:
                ctx.load_registered_dialect(dialect.name)
        else:
            ctx.load_dialect(dialect)


def make_context() -> TorchContext:
    ctx = TorchContext()
    ctx.load_dialect(private_builtin())
    load_dialects(ctx)
    return ctx


def parse_module(text: str, ctx: Context | None = None) -> ModuleOp:
    """Parses MLIR text (torch-mlir's output, or any jointattn-opt output) into a verified module."""
    module = Parser(ctx or make_context(), text).parse_module()
    module.verify()
    return module
