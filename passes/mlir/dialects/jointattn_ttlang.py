"""The `jointattn_ttlang` dialect: joint attention as the TT-Lang kernels (`jointattn.kernels.ttlang`).

Entry points: `JointAttentionOp` (`jointattn_ttlang.joint_attention`, what `lower-joint-attention{target=ttlang}`
writes; emitted as a call of `jointattn.runtime.ttlang.lowering.joint_attention`) and `ConfigAttr`
(`#jointattn_ttlang.config<q_chunk = 2, k_chunk = 4, grid_rows = 8, grid_cols = 8, ring_size = 1>`: chunk sizes in
tiles, the core grid and the number of devices, as `jointattn.runtime.ttlang.config` chose them). Operands and
results follow `JointOpBase`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from xdsl.dialects.builtin import FloatAttr, IntAttr, f64
from xdsl.ir import Dialect, Operation, SSAValue
from xdsl.irdl import irdl_attr_definition, irdl_op_definition, prop_def
from xdsl.utils.exceptions import VerifyException

from .config_attr import ConfigAttr
from .joint_op_base import JointOpBase


@irdl_attr_definition
class TtlangConfigAttr(ConfigAttr):
    name = "jointattn_ttlang.config"
    BOOL_FIELDS: ClassVar[tuple[str, ...]] = ()

    q_chunk: IntAttr
    k_chunk: IntAttr
    grid_rows: IntAttr
    grid_cols: IntAttr
    ring_size: IntAttr

    def __init__(self, q_chunk: int, k_chunk: int, grid_rows: int, grid_cols: int, ring_size: int):
        super().__init__(*(IntAttr(x) for x in (q_chunk, k_chunk, grid_rows, grid_cols, ring_size)))

    def verify(self) -> None:
        for name, value in self.values().items():
            if value <= 0:
                raise VerifyException(f"{self.name}: {name} must be positive; got {value}")


@irdl_op_definition
class TtlangJointAttentionOp(JointOpBase):
    """The op on the TT-Lang kernels, with the configuration the runtime would choose."""

    name = "jointattn_ttlang.joint_attention"
    scale = prop_def(FloatAttr)
    config = prop_def(TtlangConfigAttr)

    def __init__(
        self,
        tensors: Sequence[SSAValue | Operation],
        *,
        scale: float,
        config: TtlangConfigAttr,
        logical_n: SSAValue | None = None,
        logical_l: SSAValue | None = None,
    ):
        super().__init__(
            tensors,
            logical_n=logical_n,
            logical_l=logical_l,
            properties={"scale": FloatAttr(scale, f64), "config": config},
        )


JointAttnTtlang = Dialect("jointattn_ttlang", [TtlangJointAttentionOp], [TtlangConfigAttr])
