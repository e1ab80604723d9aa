"""The `jointattn_triton` dialect: one launch of the Triton joint-attention forward kernel.

Entry points: `LaunchForwardOp` (what `lower-joint-attention{target=triton}` writes, with the `kernel` the
dispatcher plans for the GPU the lowering targets: "hopper", "triton" or "sdpa"; emitted as a run of that path
on `jointattn.runtime`) and `LaunchConfigAttr`
(`#jointattn_triton.launch_config<block_m = 64, block_n = 64, num_warps = 4, num_stages = 2>`, the fields of
`jointattn.kernels.configs.LaunchConfig`). Operands and results follow `JointOpBase`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from xdsl.dialects.builtin import FloatAttr, IntAttr, StringAttr, f64
from xdsl.ir import Dialect, Operation, SSAValue
from xdsl.irdl import irdl_attr_definition, irdl_op_definition, opt_prop_def, prop_def
from xdsl.utils.exceptions import VerifyException

from .config_attr import ConfigAttr
from .joint_op_base import JointOpBase


@irdl_attr_definition
class LaunchConfigAttr(ConfigAttr):
    name = "jointattn_triton.launch_config"
    BOOL_FIELDS: ClassVar[tuple[str, ...]] = ()

    block_m: IntAttr
    block_n: IntAttr
    num_warps: IntAttr
    num_stages: IntAttr

    def __init__(self, block_m: int, block_n: int, num_warps: int, num_stages: int):
        super().__init__(IntAttr(block_m), IntAttr(block_n), IntAttr(num_warps), IntAttr(num_stages))

    def verify(self) -> None:
        for name, value in self.values().items():
            if value <= 0:
                raise VerifyException(f"{self.name}: {name} must be positive; got {value}")
        for name in ("block_m", "block_n", "num_warps"):
            value = self.values()[name]
            if value & (value - 1):
                raise VerifyException(
                    f"{self.name}: {name} must be a power of two (Triton block shapes); got {value}"
                )


@irdl_op_definition
class LaunchForwardOp(JointOpBase):
    """launch_forward(q, k, v, joint_q, joint_k, joint_v, out, joint_out, lse, scale, logical_n, logical_l,
    config): the outputs are allocated by the emitted code, in the op's [b, S, nh, dh] memory order."""

    name = "jointattn_triton.launch_forward"
    scale = prop_def(FloatAttr)
    config = prop_def(LaunchConfigAttr)
    kernel = opt_prop_def(StringAttr)  # the dispatcher's plan; absent means "triton" (the config's kernel)

    KERNELS: ClassVar[tuple[str, ...]] = ("hopper", "triton", "sdpa")

    def __init__(
        self,
        tensors: Sequence[SSAValue | Operation],
        *,
        scale: float,
        config: LaunchConfigAttr,
        kernel: str = "triton",
        logical_n: SSAValue | None = None,
        logical_l: SSAValue | None = None,
    ):
        super().__init__(
            tensors,
            logical_n=logical_n,
            logical_l=logical_l,
            properties={"scale": FloatAttr(scale, f64), "config": config, "kernel": StringAttr(kernel)},
        )

    @property
    def kernel_name(self) -> str:
        return self.kernel.data if self.kernel is not None else "triton"

    def verify_(self) -> None:
        super().verify_()
        if self.kernel_name not in self.KERNELS:
            raise VerifyException(
                f"{self.name}: kernel must be one of {', '.join(self.KERNELS)}; got {self.kernel_name!r}"
            )


JointAttnTriton = Dialect("jointattn_triton", [LaunchForwardOp], [LaunchConfigAttr])
