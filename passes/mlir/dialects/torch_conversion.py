"""A sliver of torch-mlir's `torch_c` dialect (TorchConversion): `torch_c.to_i1`, a `!torch.bool` as the builtin
`i1` that `scf.if` branches on. The masked lowering (`lower_masked.py`) reads the host-side `is_prefix` flag
with `torch.aten.Bool.Tensor` and this op, as torch-mlir's own conversions spell it; torch-mlir-opt parses it.
"""

from __future__ import annotations

from xdsl.dialects.builtin import i1
from xdsl.ir import Dialect, SSAValue
from xdsl.irdl import IRDLOperation, irdl_op_definition, operand_def, result_def, traits_def
from xdsl.traits import Pure

from .torch_types import BoolType


@irdl_op_definition
class ToI1Op(IRDLOperation):
    """`%c = torch_c.to_i1 %b`: !torch.bool -> i1."""

    name = "torch_c.to_i1"
    operand = operand_def(BoolType)
    result = result_def(i1)
    traits = traits_def(Pure())
    assembly_format = "$operand attr-dict"

    def __init__(self, operand: SSAValue):
        super().__init__(operands=[operand], result_types=[i1])


TorchConversion = Dialect("torch_c", [ToI1Op], [])
