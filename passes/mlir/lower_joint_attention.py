"""`lower-joint-attention{target=ttnn|triton|ttlang}`: the joint-attention ops to device calls with their configuration.

Entry points: `LowerJointAttentionPass` (option `target`, required) and `lower_joint_attention(module, target)`.

Patterns (one per rewrite):
- `OperatorToJointAttention`: `torch.operator "torch.jointattn.joint_attention"` (what `emit=operator` and
  torch-mlir's importer write) -> the typed `jointattn.joint_attention`, scale resolved (None -> 1/sqrt(dh)).
  The operator's `runtime` string is dropped: the target chosen here is the runtime.
- `JointAttentionToTarget`: `jointattn.joint_attention` -> the target's call (`target_calls.py`):
  `ttnn.joint_scaled_dot_product_attention` with its program and compute-kernel configs, or
  `jointattn_triton.launch_forward` with its launch config, or `jointattn_ttlang.joint_attention` with the TT-Lang
  kernels' chunk sizes (tiles), grid and ring size.
- the masked forms (`lower_masked.py`): the run-time check stays, and the attention becomes an `scf.if` on its
  host-side flag: the target's call with the counted valid lengths, or the exact path.
An op that cannot be lowered (a run-time scale, unknown sizes, a dtype or head dim the target's kernels do not
take: `target_calls.unsupported_by_target`) fails the pass with the reason, before anything is rewritten.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
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
from .dialects.jointattn_masked import MaskedJointAttentionOp
from .dialects.torch_ops import ConstantStrOp, OperatorOp
from .fuse import OPERATOR_NAME
from .ir_values import is_none, shape_of
from .lower_masked import masked_lowering_patterns, unlowerable_masked
from .padding_check import MASKED_OPERATOR
from .target_calls import (
    TARGETS,
    joint_sizes,
    resolved_scale,
    target_call,
    triton_choice,
    unsupported_by_target,
)

__all__ = ["LowerJointAttentionPass", "lower_joint_attention", "TARGETS"]


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
    strategy = op.args[6]
    if not isinstance(strategy.owner, ConstantStrOp) or strategy.owner.value.data != "rear":
        return 'joint_strategy must be the constant "rear"'
    return resolved_scale(op.args[7], op.args[0])


@dataclass
class JointAttentionToTarget(RewritePattern):
    target: str
    gpu: str = "sm_90"
    remarks: bool = False

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: JointAttentionOp, rewriter: PatternRewriter) -> None:
        lowered = target_call(
            self.target, op.tensors, op.scale_value, op.logical_n, op.logical_l, gpu=self.gpu
        )
        if self.remarks:
            print(dispatch_remark(self.target, op, self.gpu), file=sys.stderr)
        rewriter.replace(op, lowered, lowered.results)


def _unlowerable(module: ModuleOp, target: str) -> str | None:
    for op in module.walk():
        if isinstance(op, OperatorOp) and op.op_name.data == OPERATOR_NAME:
            reason = _operator_scale(op)
            reason = reason if isinstance(reason, str) else joint_sizes(op.args[0], op.args[3])
        elif isinstance(op, JointAttentionOp):
            reason = joint_sizes(op.q, op.joint_q)
        else:
            reason = unlowerable_masked(op)
        query = _attention_query(op)
        if not isinstance(reason, str) and query is not None:
            reason = unsupported_by_target(target, query)
        if isinstance(reason, str):
            return f"{op.name}: {reason}"
    return None


def _attention_query(op: Operation) -> SSAValue | None:
    """q of a joint-attention op that lowers to the target's call (plain or masked, typed or operator form)."""
    if isinstance(op, (JointAttentionOp, MaskedJointAttentionOp)):
        return op.q
    if isinstance(op, OperatorOp) and op.op_name.data in (OPERATOR_NAME, MASKED_OPERATOR):
        return op.args[0]
    return None


def dispatch_remark(target: str, op, gpu: str) -> str:
    """The line `remarks=true` prints for one lowered attention: the target's call and, for Triton, the kernel the
    dispatcher plans and why."""
    where = f"{op.name} ({', '.join(str(d) for d in shape_of(op.q))} + {shape_of(op.joint_q)[2]})"
    if target != "triton":
        return f"remark: lower-joint-attention: {where}: {target}"
    choice = triton_choice(op.tensors, op.logical_n, op.logical_l, gpu, op.scale_value)
    return f"remark: lower-joint-attention: {where}: kernel {choice.path} on {gpu} ({choice.reason})"


def lower_joint_attention(module: ModuleOp, target: str, gpu: str = "sm_90", remarks: bool = False) -> None:
    if target not in TARGETS:
        raise PassFailedException(
            f"lower-joint-attention: target must be one of {', '.join(TARGETS)}; got {target!r}"
        )
    if not (gpu.startswith("sm_") and gpu[3:].isdigit()):
        raise PassFailedException(
            f"lower-joint-attention: gpu must be an architecture like sm_90; got {gpu!r}"
        )
    reason = _unlowerable(module, target)
    if reason:
        raise PassFailedException(f"lower-joint-attention: {reason}")
    patterns = [
        OperatorToJointAttention(),
        JointAttentionToTarget(target, gpu, remarks),
        *masked_lowering_patterns(target, gpu, remarks),
    ]
    PatternRewriteWalker(GreedyRewritePatternApplier(patterns)).rewrite_module(module)


@dataclass(frozen=True)
class LowerJointAttentionPass(ModulePass):
    """Lowers joint-attention ops to ttnn's joint SDPA, the Triton kernel launch or the TT-Lang kernels."""

    name = "lower-joint-attention"
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"target": TARGETS}  # checked by jointattn-opt's -p

    target: str
    gpu: str = "sm_90"  # the GPU the Triton target plans its kernel for (the dispatcher's table is per GPU)
    remarks: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        lower_joint_attention(op, self.target, self.gpu, self.remarks)
