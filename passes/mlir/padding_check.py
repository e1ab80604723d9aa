"""Joint attention under a key-padding mask checked at run time: what `fuse-joint-attention` writes for a
`CheckedMask` (`masks.py`), the MLIR twin of the FX pass's `_insert_op` / `_padding_check`.

Entry point: `PaddingChecks`, one per pass run; `masked_attention(build, parts, match, tensors, emit)` inserts
before the SDPA
- the mask per token set: the mask's own per-set pieces when it is built as a concat of them along the keys
  (`parts.resolve`, replayed per set, so the concat disappears), else slices of it along the key dim
  at the token-set boundary (a function argument, say); the same two choices the FX pass makes;
- `key_padding_lengths(key_mask, joint_key_mask, b, n, l) -> (lengths_n, lengths_l, is_prefix)`, once per
  distinct (mask, token-set lengths) in a block: the layers that share a mask share its check and its one
  host sync;
- `masked_joint_attention(q, k, v, joint_q, joint_k, joint_v, key_mask, joint_key_mask, lengths_n, lengths_l,
  is_prefix, scale, runtime)`,
each as `torch.operator "torch.jointattn.<name>"` (emit=operator: what torch-mlir's importer writes for the
`torch.library` ops of `runtime/ops/masked.py`) or as the typed ops of `dialects/jointattn_masked.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.ir import Block, Operation, SSAValue

from .dialects.joint_op_base import joint_result_types
from .dialects.jointattn_masked import (
    FLAG_TYPE,
    KeyPaddingLengthsOp,
    MaskedJointAttentionOp,
    lengths_type,
)
from .dialects.torch_ops import OperatorOp
from .ir_values import shape_of
from .joint_match import JointMatch
from .parts import PartsBuilder, resolve
from .torch_builder import TorchBuilder

KEY_PADDING_OPERATOR = "torch.jointattn.key_padding_lengths"  # torch-mlir's names of the torch.library ops
MASKED_OPERATOR = "torch.jointattn.masked_joint_attention"


@dataclass(frozen=True)
class _Check:
    masks: tuple[SSAValue, SSAValue]  # key_mask, joint_key_mask (spatial set first)
    results: tuple[SSAValue, SSAValue, SSAValue]  # lengths_n, lengths_l, is_prefix
    block: Block


class PaddingChecks:
    """The run-time checks inserted so far, by (mask, token-set lengths), so that each mask is checked once."""

    def __init__(self) -> None:
        self._checks: dict[tuple[SSAValue, tuple[int, int]], _Check] = {}

    def masked_attention(
        self, build: TorchBuilder, parts: PartsBuilder, match: JointMatch, tensors: list[SSAValue], emit: str
    ) -> Operation:
        """Inserts the masked op (and, for a mask not seen yet here, its check) before the SDPA."""
        sdpa, checked = match.sdpa, match.checked_mask
        block = sdpa.parent_block()
        key = (checked.mask, match.lengths)
        check = self._checks.get(key)
        if check is None or check.block is not block:  # a check must dominate its users: same block, earlier
            in_order = _mask_parts(build, parts, match)
            masks = (in_order[match.spatial], in_order[match.joint])
            build.at(sdpa)
            batch = shape_of(tensors[0])[0]
            sizes = (match.lengths[match.spatial], match.lengths[match.joint])
            check = _Check(masks, _insert_check(build, masks, batch, sizes, emit), block)
            self._checks[key] = check
        build.at(sdpa)
        if emit == "jointattn":
            return build.insert(
                MaskedJointAttentionOp(tensors, check.masks, check.results, scale=match.scale)
            )
        args = [*tensors, *check.masks, *check.results, sdpa.scale, build.str("auto")]
        return build.insert(
            OperatorOp(MASKED_OPERATOR, args, joint_result_types(tensors[0].type, tensors[3].type))
        )


def _mask_parts(build: TorchBuilder, parts: PartsBuilder, match: JointMatch) -> list[SSAValue]:
    """The mask restricted to each token set's keys, in source order."""
    checked, lengths = match.checked_mask, match.lengths
    plan = resolve(checked.mask, checked.key_dim)
    if not isinstance(plan, str) and plan.lengths == tuple(lengths):
        return [parts.part(plan, index) for index in range(2)]
    build.at(match.sdpa)
    bounds = ((0, lengths[0]), (lengths[0], lengths[0] + lengths[1]))
    return [build.slice(checked.mask, checked.key_dim, start, end) for start, end in bounds]


def _insert_check(
    build: TorchBuilder, masks: tuple[SSAValue, SSAValue], batch: int, sizes: tuple[int, int], emit: str
) -> tuple[SSAValue, SSAValue, SSAValue]:
    n, l = sizes  # noqa: E741
    if emit == "jointattn":
        check = build.insert(KeyPaddingLengthsOp(*masks, batch=batch, n=n, l=l))
    else:
        args = [*masks, build.int(batch), build.int(n), build.int(l)]
        result_types = [lengths_type(batch), lengths_type(batch), FLAG_TYPE]
        check = build.insert(OperatorOp(KEY_PADDING_OPERATOR, args, result_types))
    return tuple(check.results)
