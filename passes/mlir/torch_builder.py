"""Building torch-dialect ops from a pattern: constants, int lists, edited view sizes, cat, slice, view, full,
clamp.

Entry point: `TorchBuilder(rewriter, anchor)`; each method inserts at the rewriter's insertion point (moved
with `at(op)`, initially before `anchor`) and returns the new SSA value. Scalar constants are shared: one
already defined above the insertion point is reused, as in torch-mlir's canonicalized IR; new ones get
torch-mlir-style names (`%int5`, `%none`).
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import IntegerType, Signedness
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.pattern_rewriter import PatternRewriter
from xdsl.rewriter import InsertPoint

from .dialects.torch_ops import (
    AtenCatOp,
    AtenClampOp,
    AtenFullOp,
    AtenSliceTensorOp,
    AtenViewOp,
    ConstantIntOp,
    ConstantNoneOp,
    ConstantStrOp,
    PrimDeviceOp,
    PrimListConstructOp,
)
from .dialects.torch_types import DeviceType, IntType, ListType, ValueTensorType
from .ir_values import const_int

TORCH_INT64 = 4  # torch-mlir's ScalarType code of torch.int64


class TorchBuilder:
    """Inserts new ops at a movable point (`at(op)`: before `op`). A scalar constant is reused when the block
    already defines one of that value above the insertion point, else created right there."""

    def __init__(self, rewriter: PatternRewriter, anchor: Operation):
        self.rewriter = rewriter
        self.at(anchor)

    def at(self, op: Operation) -> TorchBuilder:
        """Inserts the following ops before `op`."""
        self.rewriter.insertion_point = InsertPoint.before(op)
        return self

    def insert(self, op: Operation) -> Operation:
        self.rewriter.insert(op)
        return op

    def _constant(self, op_type: type, value, make) -> SSAValue:
        point = self.rewriter.insertion_point
        for op in point.block.ops:
            if op is point.insert_before:
                break
            if isinstance(op, op_type) and _constant_value(op) == value:
                return op.results[0]
        return self.insert(make()).results[0]

    def int(self, value: int) -> SSAValue:
        return self._constant(ConstantIntOp, value, lambda: ConstantIntOp(value))

    def none(self) -> SSAValue:
        return self._constant(ConstantNoneOp, None, ConstantNoneOp)

    def str(self, value: str) -> SSAValue:
        return self._constant(ConstantStrOp, value, lambda: ConstantStrOp(value))

    def int_list(self, values: Sequence[int | SSAValue]) -> SSAValue:
        elements = [v if isinstance(v, SSAValue) else self.int(v) for v in values]
        return self.insert(PrimListConstructOp(elements, ListType(IntType()))).result

    def cat(self, tensors: Sequence[SSAValue], dim: int, result_type: Attribute) -> SSAValue:
        listed = self.insert(PrimListConstructOp(tensors, ListType(ValueTensorType(None, None)))).result
        return self.insert(AtenCatOp.build([listed, self.int(dim)], result_type)).results[0]

    def slice(self, x: SSAValue, dim: int, start: int, end: int) -> SSAValue:
        shape = list(x.type.shape)
        shape[dim] = end - start
        operands = [x, self.int(dim), self.int(start), self.int(end), self.int(1)]
        return self.insert(AtenSliceTensorOp.build(operands, x.type.with_shape(shape))).results[0]

    def sizes_with(self, sizes: SSAValue, index: int, size: int) -> SSAValue:
        """A view's size list (a `prim.ListConstruct`) with entry `index` set to `size`; the list itself when
        that entry is -1, which infers the new size."""
        elements = list(sizes.owner.elements)
        if const_int(elements[index]) == -1:
            return sizes
        elements[index] = self.int(size)
        return self.insert(PrimListConstructOp(elements, sizes.type)).results[0]

    def view(self, x: SSAValue, sizes: SSAValue, result_type: Attribute) -> SSAValue:
        return self.insert(AtenViewOp.build([x, sizes], result_type)).results[0]

    def clamp(self, x: SSAValue, low: int, high: int) -> SSAValue:
        return self.insert(AtenClampOp.build([x, self.int(low), self.int(high)], x.type)).results[0]

    def device_of(self, x: SSAValue) -> SSAValue:
        return self.insert(PrimDeviceOp.build([x], DeviceType())).results[0]

    def full_int64(self, batch: int, value: int, like: SSAValue) -> SSAValue:
        """An int64 tensor [batch] filled with `value`, on the device of `like`."""
        sizes = self.int_list([batch])
        device = self.device_of(like)
        operands = [sizes, self.int(value), self.int(TORCH_INT64), self.none(), device, self.none()]
        result_type = ValueTensorType([batch], IntegerType(64, Signedness.SIGNED))
        return self.insert(AtenFullOp.build(operands, result_type)).results[0]


def _constant_value(op: Operation):
    if isinstance(op, ConstantNoneOp):
        return None
    if isinstance(op, ConstantIntOp):
        return op.value.value.data
    return op.value.data  # ConstantStrOp
