"""Turns a torch-dialect module (fused, lowered or neither) into a runnable Python function, so the MLIR path is
executed and checked against eager, not only printed.

Entry points: `compile_module(text, func_name="main") -> callable` (the callable has `.source`, the generated
Python) and `emit_python(module, ctx) -> str`. `jointattn-opt -t python` prints the same source.

What each op becomes:
- `torch.constant.*` -> a Python literal inlined at its uses; `torch.prim.ListConstruct` -> a list literal;
  `torch.prim.ListUnpack` -> tuple unpacking; `torch.vtensor.literal` -> a tensor decoded at compile time (dense
  elements or a `dense_resource` blob of the module);
- any other generated torch op `torch.<ns>.<name>[.<overload>]` -> `torch.ops.<ns>.<name>.<overload>`, its
  operands bound to the ATen schema (keyword-only arguments by name); `aten.view` runs as `aten.reshape`
  (a vtensor view is a value: eager `view` would also demand compatible strides);
- `torch.operator "torch.ns.op"` -> `torch.ops.ns.op.default` (so `torch.jointattn.joint_attention` runs the op,
  runtime "auto");
- `jointattn.joint_attention` -> `jointattn.joint_attention(...)` (the public op wrapper);
- `ttnn.joint_scaled_dot_product_attention` -> `jointattn.runtime.ttnn.lowering.joint_sdpa(...)` with the IR's
  chunk sizes, inside `config.overrides(...)` carrying the IR's compute-kernel settings (real ttnn, or its CPU
  emulation under `JOINTATTN_TTNN=emulate`);
- `jointattn_triton.launch_forward` -> outputs allocated in the op's [b, S, nh, dh] memory order, then by the
  IR's `kernel`: "triton" `jointattn.runtime.triton_runtime.launch_forward(...)` with the IR's `LaunchConfig`
  (Triton's interpreter on CPU when `TRITON_INTERPRET=1`), "hopper" the same launcher left to pick the Hopper
  kernel where the tensors allow, "sdpa" the runtime's sdpa path;
- `jointattn_ttlang.joint_attention` -> `jointattn.runtime.ttlang.lowering.joint_attention(...)` with the IR's
  chunk sizes, inside `config.overrides(...)` carrying its grid and ring size (the TT-Lang compiler and a device,
  or tt-lang-sim under `JOINTATTN_TTLANG=sim`);
- `jointattn.key_padding_lengths` / `jointattn.masked_joint_attention` -> the `torch.library` ops of
  `runtime/ops/masked.py` (the check's one host sync, then the length-based op or the exact path);
  `jointattn.masked_reference` -> `masked_reference(...)` below, that exact path by itself;
- `scf.if` -> a Python `if`/`else`, each branch's `scf.yield` assigning the if's results; `torch_c.to_i1` -> the
  `!torch.bool` it converts (a Python bool already).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from xdsl.context import Context
from xdsl.dialect_interfaces.op_asm import OpAsmDialectInterface
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, DenseResourceAttr, ModuleOp
from xdsl.dialects.func import CallOp, FuncOp, ReturnOp
from xdsl.dialects.scf import IfOp, YieldOp
from xdsl.ir import Block, Operation, SSAValue

from ...passes.mlir.dialects import (
    JointAttentionOp,
    JointSDPAOp,
    LaunchForwardOp,
    TtlangJointAttentionOp,
    make_context,
    parse_module,
)
from ...passes.mlir.dialects.joint_op_base import JointOpBase
from ...passes.mlir.dialects.jointattn_masked import (
    KeyPaddingLengthsOp,
    MaskedJointAttentionOp,
    MaskedReferenceOp,
)
from ...passes.mlir.dialects.torch_conversion import ToI1Op
from ...passes.mlir.dialects.torch_ops import (
    ConstantBoolOp,
    ConstantDeviceOp,
    ConstantFloatOp,
    ConstantIntOp,
    ConstantNoneOp,
    ConstantStrOp,
    OperatorOp,
    PrimDeviceOp,
    PrimListConstructOp,
    PrimListUnpackOp,
    RuntimeAssertOp,
    ValueTensorLiteralOp,
)
from ...passes.mlir.dialects.torch_types import torch_dtype


def compile_module(text: str, func_name: str = "main") -> Callable:
    """A Python function computing `func_name` of the MLIR module `text`.

    Args:
        text: MLIR text in the dialects `jointattn-opt` knows (torch-mlir's import, or any pass output).
        func_name: the `func.func` to return; the others are compiled too, for `func.call`.

    Returns:
        A function taking the func's arguments (torch tensors and Python scalars) and returning its result (one
        value) or a tuple of its results; `.source` holds the generated Python.
    """
    ctx = make_context()
    module = parse_module(text, ctx)
    source, constants = _emit(module, ctx)
    namespace = {**constants, **_runtime_namespace(module), "torch": torch, "math": math}
    exec(compile(source, f"<jointattn mlir module {func_name}>", "exec"), namespace)
    if func_name not in namespace:
        raise ValueError(f"compile_module: the module has no func.func @{func_name}")
    function = namespace[func_name]
    function.source = source
    return function


def emit_python(module: ModuleOp, ctx: Context) -> str:
    """The Python source `compile_module` runs (tensor literals appear as `_const<N>` names)."""
    return _emit(module, ctx)[0]


def joint_outputs(q: torch.Tensor, joint_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Outputs for a kernel launch, laid out as the op lays them out."""
    from jointattn.runtime.ops.contract import empty_outputs

    return empty_outputs(q, joint_q)


def masked_reference(q, k, v, joint_q, joint_k, joint_v, key_mask, joint_key_mask, *, scale: float):
    """`jointattn.masked_reference`: the exact path of `jointattn::masked_joint_attention` by itself (the same
    code, so both paths read a mask identically)."""
    from jointattn.runtime.call import JointCall
    from jointattn.runtime.ops.masked import masked_exact_forward

    return masked_exact_forward(
        JointCall(q, k, v, joint_q, joint_k, joint_v, scale, None, None), key_mask, joint_key_mask
    )


def _runtime_namespace(module: ModuleOp) -> dict:
    """Imports only what the module needs: ttnn's lowering, the Triton runtime, the op."""
    names: dict = {"joint_outputs": joint_outputs, "masked_reference": masked_reference}
    ops = list(module.walk())
    if any(isinstance(op, (JointAttentionOp, KeyPaddingLengthsOp, MaskedJointAttentionOp)) for op in ops):
        import jointattn  # also registers torch.ops.jointattn.*

        names["jointattn"] = jointattn
    if any(isinstance(op, OperatorOp) and op.op_name.data.startswith("torch.jointattn.") for op in ops):
        import jointattn  # noqa: F401  (registers torch.ops.jointattn)
    if any(isinstance(op, JointSDPAOp) for op in ops):
        from jointattn.runtime.ttnn import config, lowering

        names["ttnn_lowering"] = lowering
        names["ttnn_config"] = config
    if any(isinstance(op, LaunchForwardOp) for op in ops):
        from jointattn.kernels.configs import LaunchConfig
        from jointattn.runtime import auto_runtime, triton_runtime
        from jointattn.runtime.call import JointCall

        names["triton_runtime"] = triton_runtime
        names["auto_runtime"] = auto_runtime
        names["LaunchConfig"] = LaunchConfig
        names["JointCall"] = JointCall
    if any(isinstance(op, TtlangJointAttentionOp) for op in ops):
        from jointattn.runtime.ttlang import config as ttlang_config
        from jointattn.runtime.ttlang import lowering as ttlang_lowering

        names["ttlang_config"] = ttlang_config
        names["ttlang_lowering"] = ttlang_lowering
    return names


# ---------------------------------------------------------------------------------------------------------


class _Emitter:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.lines: list[str] = []
        self.constants: dict[str, torch.Tensor] = {}
        self.names: dict[SSAValue, str] = {}
        self.counter = 0
        self.depth = 1  # indentation level of the statements being emitted (1: a function body)

    # -- values -------------------------------------------------------------------------------------------
    def fresh(self, value: SSAValue) -> str:
        name = f"v{self.counter}"
        self.counter += 1
        self.names[value] = name
        return name

    def expr(self, value: SSAValue) -> str:
        """A Python expression for `value`: constants and lists inline, everything else by name."""
        if value in self.names:
            return self.names[value]
        owner = value.owner
        if isinstance(owner, ConstantIntOp):
            return str(owner.value.value.data)
        if isinstance(owner, ConstantFloatOp):
            return _float_literal(owner.value.value.data)
        if isinstance(owner, ConstantBoolOp):
            return str(owner.bool_value)
        if isinstance(owner, ConstantNoneOp):
            return "None"
        if isinstance(owner, ConstantStrOp):
            return repr(owner.value.data)
        if isinstance(owner, ConstantDeviceOp):
            return f"torch.device({owner.value.data!r})"
        if isinstance(owner, PrimListConstructOp):
            return "[" + ", ".join(self.expr(e) for e in owner.elements) + "]"
        raise NotImplementedError(f"emit: value {value} has no Python name (defined by {owner})")

    # -- ops ------------------------------------------------------------------------------------------------
    def function(self, func: FuncOp) -> None:
        args = [self.fresh_arg(a, i) for i, a in enumerate(func.body.block.args)]
        self.lines.append(f"def {func.sym_name.data}({', '.join(args)}):")
        self.block(func.body.block)
        self.lines.append("")

    def block(self, block: Block) -> None:
        for op in block.ops:
            self.op(op)

    def fresh_arg(self, value: SSAValue, index: int) -> str:
        self.names[value] = f"arg{index}"
        return f"arg{index}"

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def op(self, op: Operation) -> None:
        inline = (
            ConstantIntOp,
            ConstantFloatOp,
            ConstantBoolOp,
            ConstantNoneOp,
            ConstantStrOp,
            ConstantDeviceOp,
        )
        if isinstance(op, (*inline, PrimListConstructOp, YieldOp)):  # yields: assigned by `if_else`
            return
        if isinstance(op, ReturnOp):
            values = [self.expr(v) for v in op.arguments]
            self.emit("return " + ", ".join(values))
        elif isinstance(op, CallOp):
            self.assign(op, f"{op.callee.string_value()}({', '.join(self.expr(v) for v in op.arguments)})")
        elif isinstance(op, PrimListUnpackOp):
            self.assign(op, f"tuple({self.expr(op.operand)})")
        elif isinstance(op, PrimDeviceOp):
            self.assign(op, f"{self.expr(op.a)}.device")
        elif isinstance(op, RuntimeAssertOp):
            self.emit(f"if not {self.expr(op.condition)}:")
            self.emit(f"    raise RuntimeError({op.message.data!r})")
        elif isinstance(op, ToI1Op):  # a !torch.bool is a Python bool already
            self.names[op.result] = self.expr(op.operand)
        elif isinstance(op, IfOp):
            self.if_else(op)
        elif isinstance(op, KeyPaddingLengthsOp):
            b, (n, l) = op.batch, op.sizes  # noqa: E741
            if b < 0:
                raise NotImplementedError(f"emit: {op.name} needs a batch size known at compile time")
            masks = ", ".join(self.expr(m) for m in (op.key_mask, op.joint_key_mask))
            self.assign(op, f"torch.ops.jointattn.key_padding_lengths.default({masks}, {b}, {n}, {l})")
        elif isinstance(op, MaskedJointAttentionOp):
            args = ", ".join(self.expr(a) for a in (*op.tensors, *op.masks, *op.check))
            scale = _float_literal(op.scale_value)
            self.assign(op, f"torch.ops.jointattn.masked_joint_attention.default({args}, {scale}, 'auto')")
        elif isinstance(op, MaskedReferenceOp):
            args = ", ".join(self.expr(a) for a in (*op.tensors, *op.masks))
            self.assign(op, f"masked_reference({args}, scale={_float_literal(op.scale_value)})")
        elif isinstance(op, ValueTensorLiteralOp):
            name = f"_const{len(self.constants)}"
            self.constants[name] = self.literal(op)
            self.names[op.result] = name
        elif isinstance(op, OperatorOp):
            namespace, _, name = op.op_name.data.removeprefix("torch.").partition(".")
            self.assign(op, _call(_resolve(namespace, name), [self.expr(a) for a in op.args]))
        elif isinstance(op, JointOpBase):
            self.joint(op)
        elif op.name.startswith("torch."):
            namespace, _, name = op.name.removeprefix("torch.").partition(".")
            self.assign(op, _call(_resolve(namespace, name), [self.expr(a) for a in op.operands]))
        else:
            raise NotImplementedError(f"emit: no Python for op {op.name}")

    def if_else(self, op: IfOp) -> None:
        """`scf.if`: both branches assign the if's results from their `scf.yield`."""
        targets = [self.fresh(r) for r in op.results]
        self.emit(f"if {self.expr(op.cond)}:")
        for region in (op.true_region, op.false_region):
            if region is op.false_region:
                if not region.blocks:
                    break
                self.emit("else:")
            self.depth += 1
            block = region.block
            self.block(block)
            if targets:
                (yield_op,) = [o for o in block.ops if isinstance(o, YieldOp)]
                self.emit(f"{', '.join(targets)} = {', '.join(self.expr(v) for v in yield_op.arguments)}")
            elif not any(not isinstance(o, YieldOp) for o in block.ops):
                self.emit("pass")
            self.depth -= 1

    def assign(self, op: Operation, expression: str) -> None:
        targets = [self.fresh(r) for r in op.results]
        if not targets:
            self.emit(expression)
        elif len(targets) == 1 and not isinstance(op, PrimListUnpackOp):
            self.emit(f"{targets[0]} = {expression}")
        else:
            self.emit(f"{', '.join(targets)}{',' if len(targets) == 1 else ''} = {expression}")

    def joint(self, op: JointOpBase) -> None:
        tensors = ", ".join(self.expr(t) for t in op.tensors)
        lengths = {
            n: "None" if getattr(op, n) is None else self.expr(getattr(op, n))
            for n in ("logical_n", "logical_l")
        }
        scale = _float_literal(op.scale_value)
        if isinstance(op, JointAttentionOp):
            self.assign(
                op,
                f"jointattn.joint_attention({tensors}, scale={scale}, logical_n={lengths['logical_n']}, "
                f"logical_l={lengths['logical_l']})",
            )
        elif isinstance(op, JointSDPAOp):
            program = op.program_config.values()
            settings = {**op.compute_kernel_config.values(), "exp_approx_mode": program["exp_approx_mode"]}
            self.emit(f"with ttnn_config.overrides({', '.join(f'{k}={v!r}' for k, v in settings.items())}):")
            targets = [self.fresh(r) for r in op.results]
            self.emit(
                f"    {', '.join(targets)} = ttnn_lowering.joint_sdpa({tensors}, scale={scale}, "
                f"logical_n={lengths['logical_n']}, logical_l={lengths['logical_l']}, "
                f"q_chunk_size={program['q_chunk_size']}, k_chunk_size={program['k_chunk_size']})"
            )
        elif isinstance(op, LaunchForwardOp):
            targets = [self.fresh(r) for r in op.results]
            config = ", ".join(f"{k}={v}" for k, v in op.config.values().items())
            self.emit(f"{', '.join(targets)} = joint_outputs({self.expr(op.q)}, {self.expr(op.joint_q)})")
            call = f"JointCall.of({tensors}, {scale}, {lengths['logical_n']}, {lengths['logical_l']})"
            if op.kernel_name == "triton":
                self.emit(
                    f"triton_runtime.launch_forward({call}, {', '.join(targets)}, config=LaunchConfig({config}))"
                )
            elif op.kernel_name == "hopper":
                # Planned for the GPU the lowering targeted: the launcher re-checks the tensors it gets and runs
                # the Triton kernel where the Hopper kernel cannot take them (another GPU, a layout, the CPU).
                self.emit(f"triton_runtime.launch_forward({call}, {', '.join(targets)})")
            else:
                self.emit(f"auto_runtime.run_forward({op.kernel_name!r}, {call}, {', '.join(targets)})")
        elif isinstance(op, TtlangJointAttentionOp):
            config = op.config.values()
            grid = (config["grid_rows"], config["grid_cols"])
            self.emit(f"with ttlang_config.overrides(grid={grid!r}, ring_size={config['ring_size']}):")
            targets = [self.fresh(r) for r in op.results]
            self.emit(
                f"    {', '.join(targets)} = ttlang_lowering.joint_attention({tensors}, scale={scale}, "
                f"logical_n={lengths['logical_n']}, logical_l={lengths['logical_l']}, "
                f"q_chunk={config['q_chunk']}, k_chunk={config['k_chunk']})"
            )
        else:
            raise NotImplementedError(f"emit: no Python for op {op.name}")

    def literal(self, op: ValueTensorLiteralOp) -> torch.Tensor:
        value, result_type = op.value, op.result.type
        dtype = torch_dtype(result_type.element_type)
        shape = list(result_type.shape)
        if isinstance(value, DenseResourceAttr):
            interface = self.ctx.get_dialect("builtin").get_interface(OpAsmDialectInterface)
            blob = interface.lookup(value.resource_handle.data) if interface else None
            if not blob:
                raise ValueError(
                    f"emit: the module has no data for dense_resource {value.resource_handle.data}"
                )
            data = bytearray(bytes.fromhex(blob[2:])[4:])  # the first 4 bytes are the blob's alignment
            return (
                torch.frombuffer(data, dtype=dtype).reshape(shape).clone()
                if data
                else torch.empty(shape, dtype=dtype)
            )
        if isinstance(value, DenseIntOrFPElementsAttr):
            values = list(value.get_values())
            if dtype == torch.bool:
                values = [v != 0 for v in values]
            return torch.tensor(values, dtype=dtype).reshape(shape)
        raise NotImplementedError(f"emit: tensor literal {value}")


def _emit(module: ModuleOp, ctx: Context) -> tuple[str, dict[str, torch.Tensor]]:
    emitter = _Emitter(ctx)
    for op in module.ops:
        if isinstance(op, FuncOp):
            emitter.function(op)
    return "\n".join(emitter.lines), emitter.constants


def _float_literal(value: float) -> str:
    if math.isinf(value):
        return "math.inf" if value > 0 else "-math.inf"
    if math.isnan(value):
        return "math.nan"
    return repr(value)


# torch-mlir's value-semantic ops whose eager ATen namesake needs something the IR does not promise.
_VALUE_SEMANTIC = {
    # `view` of a vtensor is a value; eager `aten.view` also needs compatible strides (the op's outputs are
    # [b, S, nh, dh] in memory), so run it as `reshape`, which copies only when it must.
    "aten.view": "aten.reshape",
}


def _resolve(namespace: str, name: str):
    """torch-mlir's `ns.name[.overload]` -> the `torch.ops` overload object."""
    namespace, _, name = _VALUE_SEMANTIC.get(f"{namespace}.{name}", f"{namespace}.{name}").partition(".")
    packet_name, _, overload = name.partition(".")
    try:
        return getattr(getattr(getattr(torch.ops, namespace), packet_name), overload or "default")
    except (AttributeError, RuntimeError) as e:
        raise NotImplementedError(f"emit: no torch op {namespace}::{name} to run ({e})") from e


def _call(overload, args: list[str]) -> str:
    """`torch.ops.ns.name.overload(positional..., keyword=...)` bound to the overload's schema."""
    schema = overload._schema
    if len(args) != len(schema.arguments):
        raise ValueError(
            f"emit: {schema.name} takes {len(schema.arguments)} arguments; the IR gives {len(args)}"
        )
    positional = [a for a, s in zip(args, schema.arguments, strict=True) if not s.kwarg_only]
    keywords = [f"{s.name}={a}" for a, s in zip(args, schema.arguments, strict=True) if s.kwarg_only]
    namespace, name = schema.name.split("::")
    target = f"torch.ops.{namespace}.{name}.{overload._overloadname}"
    return f"{target}({', '.join(positional + keywords)})"
