"""Lowering joint attention under a run-time-checked key-padding mask (part of `lower-joint-attention`).

Entry points: `masked_lowering_patterns(target)` and `unlowerable_masked(op) -> reason | None`, used by
`lower_joint_attention.py`.

The decision the masked op makes when it runs stays in the lowered IR, as control flow on its flag:

    %ln, %ll, %ok = jointattn.key_padding_lengths %km, %jm {n = N, l = L} ...   (the check stays: one host sync)
    %flag = torch.aten.Bool.Tensor %ok : !torch.vtensor<[],i1> -> !torch.bool   (a host tensor: no sync)
    %c = torch_c.to_i1 %flag
    %out, %joint_out, %lse = scf.if %c -> (...) {
      <the target's call, `target_calls.target_call`, with logical_n = %ln, logical_l = %ll>
    } else {
      jointattn.masked_reference ... masks(%km, %jm ...)   (the exact path, any device)
    }

Patterns (one per rewrite):
- `OperatorToKeyPaddingLengths`: `torch.operator "torch.jointattn.key_padding_lengths"(km, jm, b, n, l)` ->
  `jointattn.key_padding_lengths`;
- `OperatorToMaskedJointAttention`: `torch.operator "torch.jointattn.masked_joint_attention"(...)` ->
  `jointattn.masked_joint_attention`, scale resolved, the `runtime` string dropped (the target is the runtime);
- `MaskedJointAttentionToTarget`: `jointattn.masked_joint_attention` -> the `scf.if` above.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from xdsl.dialects.scf import IfOp, YieldOp
from xdsl.ir import Operation
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern, op_type_rewrite_pattern

from .dialects.jointattn_masked import KeyPaddingLengthsOp, MaskedJointAttentionOp, MaskedReferenceOp
from .dialects.torch_conversion import ToI1Op
from .dialects.torch_ops import GenericTorchOp, OperatorOp
from .dialects.torch_types import BoolType
from .ir_values import const_int
from .padding_check import KEY_PADDING_OPERATOR, MASKED_OPERATOR
from .target_calls import joint_sizes, resolved_scale, target_call

_BOOL_OF_TENSOR = "torch.aten.Bool.Tensor"  # bool(tensor): free on a host tensor, which `is_prefix` is


def masked_lowering_patterns(target: str, gpu: str = "sm_90", remarks: bool = False) -> list[RewritePattern]:
    return [
        OperatorToKeyPaddingLengths(),
        OperatorToMaskedJointAttention(),
        MaskedJointAttentionToTarget(target, gpu, remarks),
    ]


def unlowerable_masked(op: Operation) -> str | None:
    """Why a masked-form op cannot be lowered (None when it can, or when `op` is not one)."""
    if isinstance(op, OperatorOp) and op.op_name.data == KEY_PADDING_OPERATOR:
        found = _check_sizes(op)
        return found if isinstance(found, str) else None
    if isinstance(op, OperatorOp) and op.op_name.data == MASKED_OPERATOR:
        if len(op.args) != 13 or len(op.results) != 3:
            return f"expected 13 operands and 3 results; got {len(op.args)} and {len(op.results)}"
        scale = resolved_scale(op.args[11], op.args[0])
        return scale if isinstance(scale, str) else _sizes_reason(op.args[0], op.args[3])
    if isinstance(op, MaskedJointAttentionOp):
        return _sizes_reason(op.q, op.joint_q)
    return None


def _sizes_reason(q, joint_q) -> str | None:
    sizes = joint_sizes(q, joint_q)
    return sizes if isinstance(sizes, str) else None


def _check_sizes(op: OperatorOp) -> tuple[int, int, int] | str:
    """b, n, l of an operator-form check, or why they are not usable."""
    if len(op.args) != 5 or len(op.results) != 3:
        return f"expected 5 operands and 3 results; got {len(op.args)} and {len(op.results)}"
    sizes = tuple(const_int(a) for a in op.args[2:])
    if None in sizes:
        return "b, n and l must be constants"
    if op.results[0].type.shape != (sizes[0],):
        return f"b={sizes[0]} does not match the lengths type {op.results[0].type}"
    return sizes


class OperatorToKeyPaddingLengths(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: OperatorOp, rewriter: PatternRewriter) -> None:
        if op.op_name.data != KEY_PADDING_OPERATOR:
            return
        b, n, l = _check_sizes(op)  # noqa: E741  (checked by `unlowerable_masked` first)
        typed = KeyPaddingLengthsOp(op.args[0], op.args[1], batch=b, n=n, l=l)
        rewriter.replace(op, typed, typed.results)


class OperatorToMaskedJointAttention(RewritePattern):
    """torch.operator "torch.jointattn.masked_joint_attention"(q, k, v, jq, jk, jv, km, jm, ln, ll, is_prefix,
    scale, runtime) -> jointattn.masked_joint_attention."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: OperatorOp, rewriter: PatternRewriter) -> None:
        if op.op_name.data != MASKED_OPERATOR:
            return
        scale = resolved_scale(op.args[11], op.args[0])
        assert isinstance(scale, float), scale
        typed = MaskedJointAttentionOp(op.args[:6], op.args[6:8], op.args[8:11], scale=scale)
        rewriter.replace(op, typed, typed.results)


@dataclass
class MaskedJointAttentionToTarget(RewritePattern):
    target: str
    gpu: str = "sm_90"
    remarks: bool = False

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: MaskedJointAttentionOp, rewriter: PatternRewriter) -> None:
        flag = GenericTorchOp.with_name(_BOOL_OF_TENSOR).create(
            operands=[op.is_prefix], result_types=[BoolType()]
        )
        condition = ToI1Op(flag.results[0])
        prefix = target_call(
            self.target, op.tensors, op.scale_value, op.logical_n, op.logical_l, gpu=self.gpu
        )
        if self.remarks:
            from .lower_joint_attention import dispatch_remark

            print(dispatch_remark(self.target, op, self.gpu), file=sys.stderr)
        exact = MaskedReferenceOp(op.tensors, op.masks, scale=op.scale_value)
        branch = IfOp(
            condition,
            [r.type for r in op.results],
            [prefix, YieldOp(*prefix.results)],
            [exact, YieldOp(*exact.results)],
        )
        rewriter.replace(op, [flag, condition, branch], branch.results)
