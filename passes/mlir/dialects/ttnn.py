"""A small `ttnn` dialect: `ttnn.joint_scaled_dot_product_attention`, mirroring the ttnn Python call.

Entry points: `JointSDPAOp` (what `lower-joint-attention{target=ttnn}` writes), `SDPAProgramConfigAttr`
(`#ttnn.sdpa_program_config<q_chunk_size = 64, k_chunk_size = 128, exp_approx_mode = false>`, ttnn's
`SDPAProgramConfig`: chunk sizes must be positive multiples of the 32x32 tile) and `ComputeKernelConfigAttr` (ttnn's
`WormholeComputeKernelConfig`). Operands and results follow `JointOpBase`; the valid lengths are ttnn's
`logical_n` / `logical_l`.

The real ttnn call takes device tensors and returns (out, joint_out); the lowering entry this op is emitted to,
`jointattn.runtime.ttnn.lowering.joint_sdpa`, takes torch tensors and also returns the log-sum-exp.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from xdsl.dialects.builtin import FloatAttr, IntAttr, StringAttr, f64
from xdsl.ir import Dialect, Operation, SSAValue
from xdsl.irdl import irdl_attr_definition, irdl_op_definition, prop_def
from xdsl.utils.exceptions import VerifyException

from .config_attr import ConfigAttr
from .joint_op_base import JointOpBase

TILE = 32


@irdl_attr_definition
class SDPAProgramConfigAttr(ConfigAttr):
    name = "ttnn.sdpa_program_config"
    BOOL_FIELDS: ClassVar[tuple[str, ...]] = ("exp_approx_mode",)

    q_chunk_size: IntAttr
    k_chunk_size: IntAttr
    exp_approx_mode: IntAttr

    def __init__(self, q_chunk_size: int, k_chunk_size: int, exp_approx_mode: bool = False):
        super().__init__(IntAttr(q_chunk_size), IntAttr(k_chunk_size), IntAttr(int(exp_approx_mode)))

    def verify(self) -> None:
        for name, value in (
            ("q_chunk_size", self.q_chunk_size.data),
            ("k_chunk_size", self.k_chunk_size.data),
        ):
            if value <= 0 or value % TILE:
                raise VerifyException(
                    f"{self.name}: {name} must be a positive multiple of {TILE}; got {value}"
                )


@irdl_attr_definition
class ComputeKernelConfigAttr(ConfigAttr):
    name = "ttnn.compute_kernel_config"
    BOOL_FIELDS: ClassVar[tuple[str, ...]] = ("math_approx_mode", "fp32_dest_acc_en", "packer_l1_acc")

    math_fidelity: StringAttr  # LoFi, HiFi2, HiFi3, HiFi4
    math_approx_mode: IntAttr
    fp32_dest_acc_en: IntAttr
    packer_l1_acc: IntAttr

    def __init__(
        self, math_fidelity: str, math_approx_mode: bool, fp32_dest_acc_en: bool, packer_l1_acc: bool
    ):
        super().__init__(
            StringAttr(math_fidelity),
            IntAttr(int(math_approx_mode)),
            IntAttr(int(fp32_dest_acc_en)),
            IntAttr(int(packer_l1_acc)),
        )

    def verify(self) -> None:
        if self.math_fidelity.data not in ("LoFi", "HiFi2", "HiFi3", "HiFi4"):
            raise VerifyException(
                f"{self.name}: math_fidelity must be LoFi, HiFi2, HiFi3 or HiFi4; got {self.math_fidelity.data}"
            )


@irdl_op_definition
class JointSDPAOp(JointOpBase):
    """ttnn.transformer.joint_scaled_dot_product_attention(q, k, v, joint_q, joint_k, joint_v, *,
    joint_strategy, program_config, scale, compute_kernel_config), plus logical_n / logical_l."""

    name = "ttnn.joint_scaled_dot_product_attention"
    joint_strategy = prop_def(StringAttr)
    scale = prop_def(FloatAttr)
    program_config = prop_def(SDPAProgramConfigAttr)
    compute_kernel_config = prop_def(ComputeKernelConfigAttr)

    def __init__(
        self,
        tensors: Sequence[SSAValue | Operation],
        *,
        scale: float,
        program_config: SDPAProgramConfigAttr,
        compute_kernel_config: ComputeKernelConfigAttr,
        logical_n: SSAValue | None = None,
        logical_l: SSAValue | None = None,
    ):
        super().__init__(
            tensors,
            logical_n=logical_n,
            logical_l=logical_l,
            properties={
                "joint_strategy": StringAttr("rear"),
                "scale": FloatAttr(scale, f64),
                "program_config": program_config,
                "compute_kernel_config": compute_kernel_config,
            },
        )

    def verify_(self) -> None:
        super().verify_()
        if self.joint_strategy.data != "rear":
            raise VerifyException(
                f'{self.name}: joint_strategy must be "rear" (ttnn\'s only one); got {self.joint_strategy.data!r}'
            )


TTNN = Dialect("ttnn", [JointSDPAOp], [SDPAProgramConfigAttr, ComputeKernelConfigAttr])
