"""The vocabulary both passes share (`passes/positionwise.py`): one table of position-wise ops derived from
ATen's tags.

The FX and MLIR suites check the passes' behaviour; these check the table itself: that it covers every op
either pass used to list by hand (so moving to one table lost nothing), that it comes from ATen's `pointwise`
tag rather than a list, and that it never admits what would be wrong to replay per token set.
"""

import pytest
import torch
from jointattn.passes import positionwise as pw

# The MLIR pass's hand list before the shared table (overload names, as torch-mlir spells them).
MLIR_ELEMENTWISE = (
    "add.Tensor sub.Tensor mul.Tensor div.Tensor add.Scalar sub.Scalar mul.Scalar div.Scalar rsub.Scalar "
    "neg exp sin cos tanh sigmoid relu gelu silu rsqrt sqrt reciprocal abs pow.Tensor_Scalar "
    "pow.Tensor_Tensor maximum minimum where.self where.ScalarOther where.ScalarSelf where.Scalar "
    "masked_fill.Scalar masked_fill.Tensor bitwise_not logical_not logical_and logical_or "
    "bitwise_and.Tensor bitwise_or.Tensor eq.Tensor ne.Tensor lt.Tensor le.Tensor gt.Tensor ge.Tensor "
    "eq.Scalar ne.Scalar lt.Scalar le.Scalar gt.Scalar ge.Scalar"
).split()
MLIR_CASTS = "to.dtype _to_copy clone type_as contiguous convert_element_type".split()
MLIR_LAYOUT = {
    "permute": pw.PERMUTE,
    "transpose.int": pw.PERMUTE,
    "view": pw.RESHAPE,
    "reshape": pw.RESHAPE,
    "unsqueeze": pw.RESHAPE,
    "squeeze.dim": pw.RESHAPE,
    "flatten.using_ints": pw.RESHAPE,
    "unflatten.int": pw.RESHAPE,
    "select.int": pw.ALONG_DIMS,
    "slice.Tensor": pw.ALONG_DIMS,
    "sum.dim_IntList": pw.ALONG_DIMS,
    "mean.dim": pw.ALONG_DIMS,
    "amax": pw.ALONG_DIMS,
    "amin": pw.ALONG_DIMS,
    "softmax.int": pw.ALONG_DIMS,
    "_softmax": pw.ALONG_DIMS,
    "log_softmax.int": pw.ALONG_DIMS,
    "layer_norm": pw.ALONG_DIMS,
}
# The FX pass's explicit table before (packet names, and Tensor methods).
FX_TABLE = {
    **dict.fromkeys(
        "to float half bfloat16 double type type_as contiguous clone detach _to_copy alias".split(), pw.CAST
    ),
    **dict.fromkeys("transpose swapaxes swapdims t permute movedim".split(), pw.PERMUTE),
    **dict.fromkeys("view reshape _unsafe_view flatten unflatten unsqueeze squeeze".split(), pw.RESHAPE),
    **dict.fromkeys(
        "select narrow slice softmax log_softmax sum mean amax amin logsumexp rms_norm layer_norm normalize".split(),
        pw.ALONG_DIMS,
    ),
    **dict.fromkeys(("stack", "cat"), pw.STACK),
}


def _overload(name: str) -> str:
    return name if "." in name else f"{name}.default"


@pytest.mark.parametrize("name", MLIR_ELEMENTWISE)
def test_every_elementwise_op_the_mlir_pass_listed_is_in_the_table(name):
    assert pw.kind_of(_overload(name)) == pw.ELEMENTWISE


def test_the_mlir_pass_casts_and_layout_ops_keep_their_kind():
    assert {n: pw.kind_of(_overload(n)) for n in MLIR_CASTS} == dict.fromkeys(MLIR_CASTS, pw.CAST)
    assert {n: pw.kind_of(_overload(n)) for n in MLIR_LAYOUT} == MLIR_LAYOUT


def test_the_fx_pass_table_is_the_same_table_by_packet():
    assert {n: pw.kind_of(n) for n in FX_TABLE} == FX_TABLE


def test_elementwise_ops_come_from_the_pointwise_tag():
    """Ops neither pass ever listed are position-wise because ATen tags them, per overload."""
    for name in ("erf.default", "lerp.Scalar", "clamp.default", "atan2.default", "hypot.default"):
        packet, overload = name.split(".")
        assert torch.Tag.pointwise in getattr(getattr(torch.ops.aten, packet), overload).tags
        assert packet not in FX_TABLE and name not in MLIR_ELEMENTWISE
        assert pw.kind_of(name) == pw.ELEMENTWISE, name
    assert pw.kind_of("erf") == pw.ELEMENTWISE  # a packet: any of its overloads


@pytest.mark.parametrize(
    "name",
    [
        "mm.default",  # a matrix product is never split
        "bmm.default",
        "matmul",
        "scaled_dot_product_attention",
        "flip.default",  # mixes positions
        "cumsum.default",
        "add_.Tensor",  # writes its input
        "add_",
        "add.out",
        "relu_",
        "frexp.Tensor",  # two results
        "sum.default",  # no dims argument: sums everything
        "where.default",  # where(condition) is nonzero
        "joint_attention.default",  # not an ATen op at all
    ],
)
def test_never_position_wise(name):
    assert pw.kind_of(name) is None


def test_along_dims_facts_are_the_same_for_a_packet_and_its_overload():
    assert pw.along_dims("sum") == pw.along_dims("sum.dim_IntList") == pw.AlongDims(1, keepdim_at=2)
    assert pw.along_dims("select.int").keeps is False
    assert pw.along_dims("layer_norm.default").trailing
    assert pw.along_dims("add.Tensor") is None
