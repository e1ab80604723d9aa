"""The `jointattn` dialect: `jointattn.joint_attention`, joint attention as one typed, verified op.

Entry point: `JointAttentionOp(tensors, scale=..., logical_n=..., logical_l=...)`; format and verification
come from `JointOpBase` (see `joint_op_base.py`). It is what `fuse-joint-attention{emit=jointattn}` writes and
what `lower-joint-attention` reads; `torch.operator "torch.jointattn.joint_attention"` is the same op spelled
the way torch-mlir spells a `torch.library` op (`emit=operator`).

The scale is stored resolved (SDPA's default 1/sqrt(dh) already applied), so lowerings need no defaults.
The dialect also holds the masked forms (`jointattn_masked.py`): `key_padding_lengths`, `masked_joint_attention`
and `masked_reference`, for key-padding masks checked at run time.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import FloatAttr, f64
from xdsl.ir import Dialect, Operation, SSAValue
from xdsl.irdl import irdl_op_definition, prop_def

from .joint_op_base import JointOpBase
from .jointattn_masked import MASKED_OPS


@irdl_op_definition
class JointAttentionOp(JointOpBase):
    """Non-causal attention of all N+L queries over the valid keys of both token sets (cat -> SDPA -> split)."""

    name = "jointattn.joint_attention"
    scale = prop_def(FloatAttr)

    def __init__(
        self,
        tensors: Sequence[SSAValue | Operation],
        *,
        scale: float,
        logical_n: SSAValue | None = None,
        logical_l: SSAValue | None = None,
    ):
        super().__init__(
            tensors, logical_n=logical_n, logical_l=logical_l, properties={"scale": FloatAttr(scale, f64)}
        )


JointAttn = Dialect("jointattn", [JointAttentionOp, *MASKED_OPS], [])
