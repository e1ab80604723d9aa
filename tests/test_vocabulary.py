"""The vocabulary both passes share (`passes/positionwise.py`, `passes/mask_proofs.py`, `passes/decisions.py`):
one table of position-wise ops derived from ATen's tags, one set of mask-proof rules, one decision summary.

The FX and MLIR suites check the passes' behaviour; these check the table itself: that it covers every op
either pass used to list by hand (so moving to one table lost nothing), that it comes from ATen's `pointwise`
tag rather than a list, and that it never admits what would be wrong to replay per token set.
"""

import pytest
import torch
from jointattn.passes import positionwise as pw
from jointattn.passes.decisions import CHECKED_MASK, NO_PADDING, PROVEN_LENGTHS, summarize
from jointattn.passes.mask_proofs import admits_every_key, factory_fill, keeps_mask_meaning, positions_exact

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


@pytest.mark.parametrize(
    "dtype,size,exact",
    [
        (torch.int64, 2**40, True),
        (torch.uint8, 256, True),
        (torch.uint8, 257, False),
        (torch.int8, 128, True),
        (torch.int8, 129, False),
        (torch.float32, 2**24, True),
        (torch.float32, 2**24 + 1, False),
        (torch.float64, 2**53, True),
        (torch.bfloat16, 2, False),
        (torch.float16, 2, False),
        (torch.bool, 1, False),
        (None, 1, False),
    ],
)
def test_positions_exact(dtype, size, exact):
    assert positions_exact(dtype, size) is exact
    if exact and size <= 2**16:  # the claim, checked (the rule is conservative: bf16 holds 0 and 1)
        positions = torch.arange(size, dtype=torch.int64)
        assert torch.equal(positions.to(dtype).to(torch.int64), positions)


@pytest.mark.parametrize(
    "source,result,keeps",
    [
        (torch.bool, torch.bool, True),
        (torch.float32, torch.bfloat16, True),
        (torch.int64, torch.int64, True),  # no conversion at all
        (torch.bool, torch.float32, False),  # validity becomes a +1/+0 bias
        (torch.float32, torch.bool, False),  # a bias read as validity flips it
        (torch.float32, torch.int64, False),  # -inf does not survive an integer
        (torch.int64, torch.float32, False),
    ],
)
def test_casts_that_keep_a_mask_meaning(source, result, keeps):
    assert keeps_mask_meaning(source, result) is keeps


def test_factories_that_admit_every_key():
    assert admits_every_key(torch.bool, factory_fill("ones"))
    assert admits_every_key(torch.bool, factory_fill("full", True))
    assert admits_every_key(torch.float16, factory_fill("zeros_like"))
    assert admits_every_key(torch.float32, factory_fill("full", 0.0))
    assert not admits_every_key(torch.float32, factory_fill("ones"))  # a +1 bias against the other set
    assert not admits_every_key(torch.bool, factory_fill("zeros"))  # no key at all
    assert factory_fill("empty") is None


def test_the_summary_both_passes_print():
    assert summarize([5, 3], 0, NO_PADDING, {0, 1}, 0) == (
        "token sets [5, 3] (spatial-first), no padding, both outputs used"
    )
    assert summarize((3, 5), 1, PROVEN_LENGTHS, [1], 2) == (
        "token sets [3, 5] (text-first), padding as valid lengths proven from the mask, only the second token "
        "set used; re-joined for 2 whole-sequence consumer(s)"
    )
    assert summarize([5, 3], 0, CHECKED_MASK, set(), 1) == (
        "token sets [5, 3] (spatial-first), key-padding mask checked at run time (exact path if it is not a "
        "prefix), no per-set output; re-joined for 1 whole-sequence consumer(s)"
    )
