"""`lower-joint-attention{target=ttnn|triton}`: the joint-attention op to a device call with its configuration.

Entry points: `LowerJointAttentionPass` (option `target`, required) and `lower_joint_attention(module, target)`.

Patterns (one per rewrite):
- `OperatorToJointAttention`: `torch.operator "torch.jointattn.joint_attention"` (what `emit=operator` and
  torch-mlir's importer write) -> the typed `jointattn.joint_attention`, scale resolved (None -> 1/sqrt(dh)).
  The operator's `runtime` string is dropped: the target chosen here is the runtime.
- `JointAttentionToTTNN`: -> `ttnn.joint_scaled_dot_product_attention`, with the program config's chunk sizes
  from `jointattn.runtime.ttnn.config.sdpa_chunk_sizes(N, L, dh, b=, nh=)` and the compute-kernel settings of
  `config.current()` (the same choices the ttnn runtime makes at run time, now visible in the IR).
- `JointAttentionToTriton`: -> `jointattn_triton.launch_forward`, with
  `jointattn.kernels.configs.forward_launch_config(dh, dtype, N, L)` as its launch config.
A joint-attention op that cannot be lowered (a run-time scale, unknown sizes) fails the pass with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import BFloat16Type, Float16Type, Float32Type, Float64Type, ModuleOp
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.utils.exceptions import PassFailedException

from .dialects.jointattn import JointAttentionOp
from .dialects.jointattn_triton import LaunchConfigAttr, LaunchForwardOp
from .dialects.torch_ops import ConstantStrOp, OperatorOp
from .dialects.torch_types import DYNAMIC
from .dialects.ttnn import ComputeKernelConfigAttr, JointSDPAOp, SDPAProgramConfigAttr
from .fuse_joint_attention import OPERATOR_NAME
from .ir_values import const_float, is_none, shape_of

TARGETS = ("ttnn", "triton")


class OperatorToJointAttention(RewritePattern):
    """torch.operator "torch.jointattn.joint_attention"(q, k, v, jq, jk, jv, strategy, scale, ln, ll, runtime)
    -> jointattn.joint_attention."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: OperatorOp, rewriter: PatternRewriter) -> None:
        if op.op_name.data != OPERATOR_NAME:
            return
        scale = _operator_scale(op)
        assert isinstance(scale, float), scale  # `lower_joint_attention` checked every op first
        logical_n, logical_l = (None if is_none(v) else v for v in op.args[8:10])
        typed = JointAttentionOp(op.args[:6], scale=scale, logical_n=logical_n, logical_l=logical_l)
        rewriter.replace(op, typed, typed.results)


def _operator_scale(op: OperatorOp) -> float | str:
    """The resolved scale of an operator-form op, or why it cannot be lowered."""
    if len(op.args) != 11 or len(op.results) != 3:
        return f"expected 11 operands and 3 results; got {len(op.args)} and {len(op.results)}"
    strategy, scale = op.args[6], op.args[7]
    if not isinstance(strategy.owner, ConstantStrOp) or strategy.owner.value.data != "rear":
        return 'joint_strategy must be the constant "rear"'
    if is_none(scale):
        dh = shape_of(op.args[0])[3]
        return "the default scale needs a head dim known at compile time" if dh == DYNAMIC else dh**-0.5
    value = const_float(scale)
    return "scale is computed at run time (the lowering needs a constant)" if value is None else value


def _sizes(q, joint_q) -> tuple[int, int, int, int, int] | str:
    b, nh, n, dh = shape_of(q)
    l = shape_of(joint_q)[2]  # noqa: E741
    if DYNAMIC in (b, nh, n, dh, l):
        return f"sizes must be known at compile time to choose a device config; got {q.type}, {joint_q.type}"
    return b, nh, n, l, dh


def _unlowerable(module: ModuleOp) -> str | None:
    for op in module.walk():
        if isinstance(op, OperatorOp) and op.op_name.data == OPERATOR_NAME:
            reason = _operator_scale(op)
            reason = reason if isinstance(reason, str) else _sizes(op.args[0], op.args[3])
        elif isinstance(op, JointAttentionOp):
            reason = _sizes(op.q, op.joint_q)
        else:
            continue
        if isinstance(reason, str):
            return f"{op.name}: {reason}"
    return None


class JointAttentionToTTNN(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: JointAttentionOp, rewriter: PatternRewriter) -> None:
        from jointattn.runtime.ttnn import config

        b, nh, n, l, dh = _sizes(op.q, op.joint_q)  # noqa: E741
        q_chunk, k_chunk = config.sdpa_chunk_sizes(n, l, dh, b=b, nh=nh)
        settings = config.current()
        lowered = JointSDPAOp(
            op.tensors,
            scale=op.scale_value,
            program_config=SDPAProgramConfigAttr(q_chunk, k_chunk, settings.exp_approx_mode),
            compute_kernel_config=ComputeKernelConfigAttr(
                settings.math_fidelity,
                settings.math_approx_mode,
                settings.fp32_dest_acc_en,
                settings.packer_l1_acc,
            ),
            logical_n=op.logical_n,
            logical_l=op.logical_l,
        )
        rewriter.replace(op, lowered, lowered.results)


class JointAttentionToTriton(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: JointAttentionOp, rewriter: PatternRewriter) -> None:
        from jointattn.kernels.configs import forward_launch_config

        _, _, n, l, dh = _sizes(op.q, op.joint_q)  # noqa: E741
        chosen = forward_launch_config(dh, torch_dtype(op.q.type.element_type), n, l)
        lowered = LaunchForwardOp(
            op.tensors,
            scale=op.scale_value,
            config=LaunchConfigAttr(chosen.block_m, chosen.block_n, chosen.num_warps, chosen.num_stages),
            logical_n=op.logical_n,
            logical_l=op.logical_l,
        )
        rewriter.replace(op, lowered, lowered.results)


def torch_dtype(element_type):
    import torch

    for builtin, dtype in (
        (Float32Type, torch.float32),
        (Float16Type, torch.float16),
        (BFloat16Type, torch.bfloat16),
        (Float64Type, torch.float64),
    ):
        if isinstance(element_type, builtin):
            return dtype
    raise PassFailedException(f"lower-joint-attention: unsupported element type {element_type}")


def lower_joint_attention(module: ModuleOp, target: str) -> None:
    if target not in TARGETS:
        raise PassFailedException(
            f"lower-joint-attention: target must be one of {', '.join(TARGETS)}; got {target!r}"
        )
    reason = _unlowerable(module)
    if reason:
        raise PassFailedException(f"lower-joint-attention: {reason}")
    lowering = JointAttentionToTTNN() if target == "ttnn" else JointAttentionToTriton()
    PatternRewriteWalker(GreedyRewritePatternApplier([OperatorToJointAttention(), lowering])).rewrite_module(
        module
    )


@dataclass(frozen=True)
class LowerJointAttentionPass(ModulePass):
    """Lowers joint-attention ops to ttnn's joint SDPA or to the Triton kernel launch."""

    name = "lower-joint-attention"

    target: str

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        lower_joint_attention(op, self.target)
