"""The xDSL dialects of the MLIR path: torch-mlir's syntax parses and prints back exactly (and torch-mlir-opt
reads what is printed); the joint-attention ops verify their shapes and configs with errors that name the
operand and what was expected.
"""

import math
import shutil
import subprocess

import pytest
from jointattn.compiler.mlir.opt_main import run_pipeline
from jointattn.passes.mlir.dialects import parse_module
from jointattn.passes.mlir.dialects.torch_ops import ConstantFloatOp, GenericTorchOp, format_float
from xdsl.utils.exceptions import VerifyException

TORCH_MLIR_OPT = shutil.which("torch-mlir-opt")


def _round_trip(text: str) -> str:
    return run_pipeline(text, "")


def _func_with_arg_type(type_text: str) -> str:
    return f"func.func @f(%a: {type_text}) -> {type_text} {{\n  return %a : {type_text}\n}}\n"


@pytest.mark.parametrize(
    "type_text",
    [
        "!torch.vtensor<[2,?,8],f32>",
        "!torch.vtensor<[],si64>",
        "!torch.vtensor<*,f16>",
        "!torch.vtensor<[3],unk>",
        "!torch.vtensor",
        "!torch.vtensor<[4],bf16>",
        "!torch.list<vtensor>",
        "!torch.list<vtensor<[2],i1>>",
        "!torch.optional<list<int>>",
        "!torch.tuple<int, float, vtensor>",
        "!torch.Device",
        "!torch.number",
    ],
    ids=lambda t: t.removeprefix("!torch."),
)
def test_torch_types_print_back_as_written(type_text):
    printed = _round_trip(_func_with_arg_type(type_text))
    assert f"%a: {type_text})" in printed
    assert f"-> {type_text} {{" in printed


@pytest.mark.parametrize(
    "value", [0.3, 1e-5, -2.5, 0.0, 1e30, float("inf"), float("-inf"), float("nan"), 1 / 3], ids=str
)
def test_float_constants_round_trip_exactly(value):
    text = format_float(value)
    module = parse_module(
        f"func.func @f() -> !torch.float {{\n  %x = torch.constant.float {text}\n  return %x : !torch.float\n}}\n"
    )
    (op,) = [o for o in module.walk() if isinstance(o, ConstantFloatOp)]
    parsed = op.value.value.data
    assert parsed == value or (math.isnan(value) and math.isnan(parsed))


HAND_WRITTEN = """
func.func @main(%x: !torch.vtensor<[5,4],f32>) -> (!torch.vtensor<[5,4],f32>, !torch.list<vtensor>) {
  %int1 = torch.constant.int 1
  %int-1 = torch.constant.int -1
  %str = torch.constant.str "rear"
  %cpu = torch.constant.device "cpu"
  %true = torch.constant.bool true
  %float1.000000e-01 = torch.constant.float 1.000000e-01
  %w = torch.vtensor.literal(dense<[[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]]> : tensor<4x4xf32>) : !torch.vtensor<[4,4],f32>
  %ninf = torch.vtensor.literal(dense<0xFF800000> : tensor<f32>) : !torch.vtensor<[],f32>
  %mm = torch.aten.mm %x, %w : !torch.vtensor<[5,4],f32>, !torch.vtensor<[4,4],f32> -> !torch.vtensor<[5,4],f32>
  %y = torch.aten.add.Tensor %mm, %ninf, %int1 : !torch.vtensor<[5,4],f32>, !torch.vtensor<[],f32>, !torch.int -> !torch.vtensor<[5,4],f32>
  %l = torch.prim.ListConstruct %x, %y : (!torch.vtensor<[5,4],f32>, !torch.vtensor<[5,4],f32>) -> !torch.list<vtensor>
  %0:2 = torch.prim.ListUnpack %l : !torch.list<vtensor> -> !torch.vtensor<[5,4],f32>, !torch.vtensor<[5,4],f32>
  %1:2 = torch.operator "torch.my_ns.two_out"(%0#0, %str, %int-1, %true, %float1.000000e-01) : (!torch.vtensor<[5,4],f32>, !torch.str, !torch.int, !torch.bool, !torch.float) -> (!torch.vtensor<[5,4],f32>, !torch.vtensor<[5,4],f32>)
  return %1#1, %l : !torch.vtensor<[5,4],f32>, !torch.list<vtensor>
}
"""


def test_printing_is_a_fixed_point_and_unknown_torch_ops_stay_opaque():
    once = _round_trip(HAND_WRITTEN)
    assert _round_trip(once) == once
    module = parse_module(HAND_WRITTEN)
    mm = [op for op in module.walk() if op.name == "torch.aten.mm"]
    assert len(mm) == 1 and isinstance(mm[0], GenericTorchOp)
    # The -inf splat keeps its bit pattern (xDSL alone would read 0xFF800000 as the integer 4286578688).
    assert "dense<0xff800000> : tensor<f32>" in once.lower()


@pytest.mark.skipif(
    TORCH_MLIR_OPT is None, reason="torch-mlir-opt is installed with torch-mlir (pip install -e '.[test]')"
)
def test_torch_mlir_opt_reads_what_we_print():
    result = subprocess.run([TORCH_MLIR_OPT], input=_round_trip(HAND_WRITTEN), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert 'torch.operator "torch.my_ns.two_out"' in result.stdout


# --- verification of the joint-attention ops ----------------------------------------------------------------

Q, J = "!torch.vtensor<[2,4,9,16],f16>", "!torch.vtensor<[2,4,3,16],f16>"
LSE = "!torch.vtensor<[2,4,12],f32>"


def _generic_joint(
    types=(Q, Q, Q, J, J, J), results=(Q, J, LSE), lengths="", props="scale = 2.500000e-01 : f64"
):
    """A jointattn.joint_attention in the generic syntax, which lets each operand have its own type."""
    names = ["%q", "%k", "%v", "%jq", "%jk", "%jv"]
    args = [f"{n}: {t}" for n, t in zip(names, types)]
    length_args, length_types, segments = [], [], [0, 0]
    if lengths:
        args.append(f"%len: {lengths}")
        length_args, length_types, segments = ["%len"], [lengths], [0, 1]
    seg = ", ".join(str(s) for s in [1] * 6 + segments)
    return (
        f"func.func @f({', '.join(args)}) {{\n"
        f'  %o:3 = "jointattn.joint_attention"({", ".join(names + length_args)}) '
        f"<{{{props}, operandSegmentSizes = array<i32: {seg}>}}> : ({', '.join([*types, *length_types])}) -> ({', '.join(results)})\n"
        "  return\n}\n"
    )


def test_a_well_formed_op_verifies_and_prints_in_the_short_form():
    printed = _round_trip(_generic_joint(lengths="!torch.vtensor<[2],si32>"))
    assert (
        f"logical_l(%len : !torch.vtensor<[2],si32>) {{scale = 2.500000e-01 : f64}} : {Q}, {J} -> {LSE}"
        in printed
    )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(types=(Q, "!torch.vtensor<[2,4,8,16],f16>", Q, J, J, J)), "k must have shape [2,4,9,16]"),
        (dict(types=(Q, Q, Q, J, J, "!torch.vtensor<[2,4,3,16],f32>")), "joint_v must have q's dtype f16"),
        (
            dict(types=("!torch.vtensor<[2,9,16],f16>", Q, Q, J, J, J)),
            "q must be a rank-4 tensor [b,nh,N,dh]",
        ),
        (dict(types=(Q, Q, Q, "!torch.vtensor<[2,2,3,16],f16>", J, J)), "joint_q must have shape [2,4,3,16]"),
        (dict(results=(Q, J, "!torch.vtensor<[2,4,12],f16>")), "result lse must have dtype f32"),
        (dict(results=(Q, J, "!torch.vtensor<[2,4,11],f32>")), "result lse must have shape [2,4,12]"),
        (
            dict(lengths="!torch.vtensor<[3],si64>"),
            "logical_l must be a !torch.int or an integer tensor of shape [b=2]",
        ),
        (dict(lengths="!torch.vtensor<[2],f32>"), "logical_l must be a !torch.int or an integer tensor"),
        (dict(props="scale = 0x7FF0000000000000 : f64"), "'scale' must be a finite f64"),
    ],
    ids=[
        "k-shape",
        "dtype",
        "rank",
        "heads",
        "lse-dtype",
        "lse-shape",
        "length-shape",
        "length-dtype",
        "scale",
    ],
)
def test_malformed_joint_attention_is_rejected_naming_the_operand(kwargs, message):
    with pytest.raises(VerifyException, match=_literal(message)):
        parse_module(_generic_joint(**kwargs))


TTNN_OP = (
    "func.func @f(%q: {Q}, %j: {J}) {{\n"
    "  %o, %jo, %lse = ttnn.joint_scaled_dot_product_attention %q, %q, %q, %j, %j, %j "
    '{{joint_strategy = "{strategy}", scale = 2.500000e-01 : f64, program_config = #ttnn.sdpa_program_config<q_chunk_size = {qc}, '
    "k_chunk_size = 64, exp_approx_mode = false>, compute_kernel_config = #ttnn.compute_kernel_config<math_fidelity = {fid}, "
    "math_approx_mode = false, fp32_dest_acc_en = true, packer_l1_acc = false>}} : {Q}, {J} -> {LSE}\n"
    "  return\n}}\n"
)


def test_ttnn_configs_print_back_and_their_values_are_checked():
    good = TTNN_OP.format(Q=Q, J=J, LSE=LSE, strategy="rear", qc=128, fid="HiFi4")
    assert (
        "#ttnn.sdpa_program_config<q_chunk_size = 128, k_chunk_size = 64, exp_approx_mode = false>"
        in _round_trip(good)
    )
    with pytest.raises(VerifyException, match="q_chunk_size must be a positive multiple of 32; got 48"):
        parse_module(TTNN_OP.format(Q=Q, J=J, LSE=LSE, strategy="rear", qc=48, fid="HiFi4"))
    with pytest.raises(VerifyException, match="math_fidelity must be LoFi, HiFi2, HiFi3 or HiFi4; got HiFi9"):
        parse_module(TTNN_OP.format(Q=Q, J=J, LSE=LSE, strategy="rear", qc=64, fid="HiFi9"))
    with pytest.raises(VerifyException, match='joint_strategy must be "rear"'):
        parse_module(TTNN_OP.format(Q=Q, J=J, LSE=LSE, strategy="front", qc=64, fid="HiFi4"))


def test_triton_launch_config_must_be_powers_of_two():
    text = (
        f"func.func @f(%q: {Q}, %j: {J}) {{\n"
        "  %o, %jo, %lse = jointattn_triton.launch_forward %q, %q, %q, %j, %j, %j {scale = 2.500000e-01 : f64, "
        f"config = #jointattn_triton.launch_config<block_m = 48, block_n = 64, num_warps = 4, num_stages = 2>}} : {Q}, {J} -> {LSE}\n"
        "  return\n}\n"
    )
    with pytest.raises(VerifyException, match="block_m must be a power of two"):
        parse_module(text)


def _literal(text: str) -> str:
    import re

    return re.escape(text)


# --- the masked forms --------------------------------------------------------------------------------------

KM, JM = "!torch.vtensor<[2,1,1,9],i1>", "!torch.vtensor<[1,3],f16>"  # bool [b,1,1,N]; additive [1,L]
LEN, FLAG = "!torch.vtensor<[2],si64>", "!torch.vtensor<[],i1>"


def _masked_module(km=KM, jm=JM, lengths=LEN, flag=FLAG, sizes="n = 9 : i64, l = 3 : i64", check_only=False):
    """key_padding_lengths + masked_joint_attention + masked_reference, in their short forms."""
    check = (
        f"func.func @f(%q: {Q}, %j: {J}, %km: {km}, %jm: {jm}) -> {Q} {{\n"
        f"  %ln, %ll, %ok = jointattn.key_padding_lengths %km, %jm {{{sizes}}} : {km}, {jm} -> {lengths}, {lengths}, {flag}\n"
    )
    if check_only:  # the attention's short form fixes is_prefix's type
        return check + f"  return %q : {Q}\n}}\n"
    return check + (
        f"  %o, %jo, %lse = jointattn.masked_joint_attention %q, %q, %q, %j, %j, %j masks(%km, %jm : {km}, {jm}) "
        f"check(%ln, %ll, %ok : {lengths}) {{scale = 2.500000e-01 : f64}} : {Q}, {J} -> {LSE}\n"
        f"  %e, %je, %le = jointattn.masked_reference %q, %q, %q, %j, %j, %j masks(%km, %jm : {km}, {jm}) "
        f"{{scale = 2.500000e-01 : f64}} : {Q}, {J} -> {LSE}\n"
        f"  return %o : {Q}\n}}\n"
    )


def test_masked_ops_verify_and_print_back_as_written():
    printed = _round_trip(_masked_module())
    assert _round_trip(printed) == printed
    for line in _masked_module().splitlines()[1:4]:
        assert line.strip() in printed


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            dict(km="!torch.vtensor<[2,1,9,9],i1>"),
            "key_mask must be a bool or float tensor broadcastable to [b=2, 1, 1, 9]",
        ),
        (
            dict(jm="!torch.vtensor<[1,4],f16>"),
            "joint_key_mask must be a bool or float tensor broadcastable to [b=2, 1, 1, 3]",
        ),
        (dict(km="!torch.vtensor<[2,1,1,9],si64>"), "key_mask must be a bool or float tensor"),
        (dict(lengths="!torch.vtensor<[2],si32>"), "lengths_n must be an int64 tensor [b]"),
        (
            dict(flag="!torch.vtensor<[1],i1>", check_only=True),
            "is_prefix must be !torch.vtensor<[],i1> (a 0-d bool)",
        ),
        (dict(sizes="n = 0 : i64, l = 3 : i64"), "n and l must be positive key counts"),
    ],
    ids=["mask-over-queries", "joint-mask-keys", "mask-dtype", "lengths-dtype", "flag", "sizes"],
)
def test_malformed_masked_ops_are_rejected_naming_the_operand(kwargs, message):
    with pytest.raises(VerifyException, match=_literal(message)):
        parse_module(_masked_module(**kwargs))


def test_masked_attention_checks_its_masks_against_q_and_joint_q():
    """A check for other sizes than the attention's token sets: caught on the attention."""
    text = _masked_module(
        km="!torch.vtensor<[2,1,1,8],i1>", sizes="n = 8 : i64, l = 3 : i64"
    )  # the check is consistent, the attention has N = 9
    with pytest.raises(VerifyException, match=_literal("jointattn.masked_joint_attention: key_mask must be")):
        parse_module(text)


RUNTIME_ASSERT = """
func.func @f(%n: !torch.int) -> !torch.int {
  %int7 = torch.constant.int 7
  %0 = torch.aten.le.int %n, %int7 : !torch.int, !torch.int -> !torch.bool
  torch.runtime.assert %0, "Runtime assertion failed for expression u0 <= 7 on node 'le_4'"
  return %n : !torch.int
}
"""


@pytest.mark.filterwarnings("error::DeprecationWarning")  # parsing it used an API xDSL deprecates
def test_runtime_asserts_round_trip_and_run():
    """torch.export's size checks after `nonzero` (Mochi), as torch-mlir writes them."""
    from jointattn.compiler.mlir.emit import compile_module

    printed = _round_trip(RUNTIME_ASSERT)
    assert (
        "torch.runtime.assert %0, \"Runtime assertion failed for expression u0 <= 7 on node 'le_4'\""
        in printed
    )
    function = compile_module(printed, "f")
    assert function(5) == 5
    with pytest.raises(RuntimeError, match="u0 <= 7"):
        function(8)
    if TORCH_MLIR_OPT is not None:
        result = subprocess.run([TORCH_MLIR_OPT], input=printed, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
