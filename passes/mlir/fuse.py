"""`fuse-joint-attention`: replaces cat -> scaled_dot_product_attention -> split in torch-dialect IR with one
joint-attention op (the MLIR twin of the FX pass; both apply `passes/rules.py`).

Entry points: `FuseJointAttentionPass` (options `emit`, `remarks`) for `jointattn-opt -p`, and
`fuse_joint_attention(module, emit=...) -> list[Decision]` for Python callers (`passes/decisions.py`, the FX
pass's decision type; `remark(decision)` is the line `remarks=true` prints).

Options:
- `emit=jointattn` (default) writes the typed, verified `jointattn.joint_attention` (resolved scale, valid
  lengths as `!torch.int` or `[b]` tensor operands);
- `emit=operator` writes `torch.operator "torch.jointattn.joint_attention"(q, k, v, jq, jk, jv, "rear", scale,
  logical_n, logical_l, "auto")`, exactly what torch-mlir's importer gives a module that calls the
  `jointattn::joint_attention` op, so FX-fused and MLIR-fused IR agree and the result stays valid for
  `torch-mlir-opt`;
- `remarks=true` prints one line per SDPA on stderr: fused (with the FX pass's summary), or not fused and why
  (the rule's sentence).
Matching is in `joint_match.py` (and `masks.py` for masks); a refused SDPA is left untouched.

Key-padding masks (`masks.py`): one proven to be a prefix of each token set becomes valid lengths; any other
mask that varies only over batch and keys (an argument, bool or additive) becomes `key_padding_lengths` +
`masked_joint_attention` (`padding_check.py`; one check per distinct mask, shared by the layers that read it),
which check at run time that it is prefix padding and otherwise take the exact path, as the FX pass does.

Rewrite: the token sets of q, k, v feed the op, the longer one as the spatial side (`rules.spatial_part`);
position-wise ops between the concat and the SDPA (a permute from [B, S, H, D], RoPE) are replayed per token
set (`parts.py`), position-dependent operands sliced to match; every cut of the old output is rebuilt on
the matching op output (same layout ops, sequence size replaced, a narrower slice where the cut was a
sub-range of a token set); then the SDPA and whatever only fed it or only read it are erased. A concat with
another user stays for that user.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.dialects.func import FuncOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import PassFailedException

from ..decisions import CHECKED_MASK, NO_PADDING, PROVEN_LENGTHS, Decision, summarize
from .axes import is_position_wise
from .dialects.joint_op_base import joint_result_types
from .dialects.jointattn import JointAttentionOp
from .dialects.torch_ops import (
    AtenReshapeOp,
    AtenScaledDotProductAttentionOp,
    AtenViewOp,
    OperatorOp,
)
from .ir_values import shape_of
from .joint_match import JointMatch, PartUse, match_joint_attention
from .masks import Length
from .padding_check import PaddingChecks
from .parts import PartsBuilder
from .torch_builder import TorchBuilder

EMIT_FORMS = ("jointattn", "operator")
OPERATOR_NAME = "torch.jointattn.joint_attention"  # torch-mlir's name for the `jointattn::joint_attention` op


def remark(decision: Decision) -> str:
    """The line `remarks=true` prints for one SDPA."""
    verdict = "fused" if decision.fused else "not fused"
    return f"remark: fuse-joint-attention: {decision.node}: {verdict}: {decision.reason}"


@dataclass
class FuseCatSdpaSplit(RewritePattern):
    """cat -> SDPA -> cut(s) => one joint-attention op whose outputs feed the cuts' users."""

    emit: str
    labels: dict[Operation, tuple[str, int]]
    decisions: list[tuple[tuple[str, int], Decision]] = field(default_factory=list)  # by (function, index)
    checks: PaddingChecks = field(default_factory=PaddingChecks)  # one run-time check per distinct mask

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: AtenScaledDotProductAttentionOp, rewriter: PatternRewriter) -> None:
        label = self.labels.get(op, ("?", -1))
        where = f"@{label[0]} SDPA #{label[1]}"
        match = match_joint_attention(op)
        if isinstance(match, str):
            self.decisions.append((label, Decision(where, False, match)))
            return
        _rewrite(match, self.emit, rewriter, self.checks)
        self.decisions.append((label, Decision(where, True, _summary(match))))


def fuse_joint_attention(module: ModuleOp, emit: str = "jointattn") -> list[Decision]:
    """Runs the fusion on `module` in place; returns one decision per SDPA, in source order."""
    if emit not in EMIT_FORMS:
        raise PassFailedException(
            f"fuse-joint-attention: emit must be one of {', '.join(EMIT_FORMS)}; got {emit!r}"
        )
    pattern = FuseCatSdpaSplit(emit, _label_sdpas(module))
    PatternRewriteWalker(pattern, apply_recursively=False).rewrite_module(module)
    return [decision for _, decision in sorted(pattern.decisions, key=lambda d: d[0])]


@dataclass(frozen=True)
class FuseJointAttentionPass(ModulePass):
    """Fuses cat -> scaled_dot_product_attention -> split into one joint-attention op."""

    name = "fuse-joint-attention"
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"emit": EMIT_FORMS}  # checked by jointattn-opt's -p

    emit: str = "jointattn"
    remarks: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for decision in fuse_joint_attention(op, self.emit):
            if self.remarks:
                print(remark(decision), file=sys.stderr)


def _summary(match: JointMatch) -> str:
    """The same summary the FX pass gives (`decisions.summarize`), so remarks and `explain` read alike."""
    if match.checked_mask is not None:
        padding = CHECKED_MASK
    elif any(length is not None for length in match.valid_lengths):
        padding = PROVEN_LENGTHS
    else:
        padding = NO_PADDING
    used = {use.where.part for use in match.uses}
    return summarize(match.lengths, match.spatial, padding, used, match.whole_uses)


def _label_sdpas(module: ModuleOp) -> dict[Operation, tuple[str, int]]:
    labels = {}
    for func in module.walk():
        if isinstance(func, FuncOp):
            sdpas = [o for o in func.walk() if isinstance(o, AtenScaledDotProductAttentionOp)]
            labels.update({o: (func.sym_name.data, i) for i, o in enumerate(sdpas)})
    return labels


# ---------------------------------------------------------------------------------------------------------
# The rewrite.


def _rewrite(match: JointMatch, emit: str, rewriter: PatternRewriter, checks: PaddingChecks) -> None:
    sdpa = match.sdpa
    build = TorchBuilder(rewriter, sdpa)
    parts = PartsBuilder(build)
    tensors = [parts.part(plan, match.spatial) for plan in match.inputs]
    tensors += [parts.part(plan, match.joint) for plan in match.inputs]
    build.at(sdpa)
    if match.checked_mask is not None:
        fused = checks.masked_attention(build, parts, match, tensors, emit)
    else:
        fused = _joint_attention(build, match, tensors, emit)
    outputs = {match.spatial: fused.results[0], match.joint: fused.results[1]}
    _rebuild_outputs(match, build, rewriter, outputs)


def _joint_attention(build: TorchBuilder, match: JointMatch, tensors: list[SSAValue], emit: str) -> Operation:
    """The length-based op, valid lengths (proven from the mask, or none) as operands."""
    batch = shape_of(tensors[0])[0]
    logical_n, logical_l = (
        _length_operand(build, match.valid_lengths[part], match.lengths[part], batch, tensors[0], emit)
        for part in (match.spatial, match.joint)
    )
    if emit == "jointattn":
        return build.insert(
            JointAttentionOp(tensors, scale=match.scale, logical_n=logical_n, logical_l=logical_l)
        )
    args = [
        *tensors,
        build.str("rear"),
        match.sdpa.scale,  # as the model wrote it: none (SDPA's default) or a constant
        logical_n or build.none(),
        logical_l or build.none(),
        build.str("auto"),
    ]
    return build.insert(OperatorOp(OPERATOR_NAME, args, joint_result_types(tensors[0].type, tensors[3].type)))


def _rebuild_outputs(match: JointMatch, build: TorchBuilder, rewriter: PatternRewriter, outputs) -> None:
    sdpa = match.sdpa
    rebuilt: dict[tuple[Operation, int], SSAValue] = {}
    for use in match.uses:
        value = _rebuild_chain(build, use, outputs[use.where.part], match, rebuilt)
        size = match.lengths[use.where.part]
        if (use.where.start, use.where.end) != (0, size):
            value = build.at(use.cut).slice(value, use.seq_dim, use.where.start, use.where.end)
        rewriter.replace_all_uses_with(use.value, value)
    if sdpa.result.uses:  # consumers of the whole sequence get the two outputs concatenated back
        joined = build.at(sdpa).cat([outputs[0], outputs[1]], 2, sdpa.result.type)
        rewriter.replace_all_uses_with(sdpa.result, joined)

    dead: list[Operation] = []
    for use in match.uses:
        dead += [u.operation for u in use.cut.results[0].uses] + [use.cut]
        dead += [op for op, _ in reversed(use.chain)]
    dead.append(sdpa)
    for plan in match.inputs:
        dead += plan.ops
    for op in dead:
        _erase_if_dead(op, rewriter)


def _length_operand(build: TorchBuilder, length: Length, size: int, batch: int, like: SSAValue, emit: str):
    """The op operand for one token set's valid length: None (all valid), an int, or a [b] int tensor."""
    if length is None:
        return None
    if isinstance(length, int):
        if emit == "jointattn":
            return build.int(length)
        return build.full_int64(batch, length, like)  # the torch op takes lengths as tensors only
    value = length.value
    if len(shape_of(value)) == 2:  # [b, 1] -> [b]
        value = build.view(value, build.int_list([batch]), value.type.with_shape([batch]))
    # Out-of-range lengths mean "all" / "none" in the unfused graph (arange(S) < length): clamp, don't fail.
    return build.clamp(value, 0, size)


def _rebuild_chain(
    build: TorchBuilder, use: PartUse, value: SSAValue, match: JointMatch, rebuilt
) -> SSAValue:
    """Applies the use's layout ops to one part output (once per op and part), sequence size replaced."""
    size = match.lengths[use.where.part]
    for op, seq_dim in use.chain:
        key = (op, use.where.part)
        if key not in rebuilt:
            shape = list(shape_of(op.results[0]))
            shape[seq_dim] = size
            result_type = op.results[0].type.with_shape(shape)
            build.at(op)
            operands = [value, *op.operands[1:]]
            if isinstance(op, (AtenViewOp, AtenReshapeOp)):
                operands[1] = build.sizes_with(op.operands[1], seq_dim, size)
            rebuilt[key] = build.insert(type(op).build(operands, result_type)).results[0]
        value = rebuilt[key]
    return value


def _erase_if_dead(op: Operation, rewriter: PatternRewriter) -> None:
    """Erases `op` if nothing uses it and it has no side effects (Pure, or one of the position-wise ops the
    rewrite replays), then does the same for what fed it."""
    if op.parent is None or any(r.uses for r in op.results):
        return
    if not (op.has_trait(Pure) or is_position_wise(op)):
        return
    producers = [v.owner for v in op.operands if isinstance(v.owner, Operation)]
    rewriter.erase(op)
    for producer in producers:
        _erase_if_dead(producer, rewriter)


__all__ = ["FuseJointAttentionPass", "Decision", "fuse_joint_attention", "remark", "EMIT_FORMS"]
