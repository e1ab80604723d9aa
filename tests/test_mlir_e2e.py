"""The whole MLIR path, executed: import -> fuse-joint-attention -> lower-joint-attention{target} -> emit ->
run, against the module in float64 eager, on fresh random inputs, padding on both token sets, sizes that are
not multiples of 32.

Targets here: ttnn through its CPU emulation (`JOINTATTN_TTNN=emulate`: bfloat16 on the device, so judged as
tt-metal judges its joint SDPA, PCC and RMSE) and Triton through its interpreter (`TRITON_INTERPRET=1`, set by
conftest.py without a GPU; float32, so `assert_close`). The lowered IR's configuration is checked against the
functions the runtimes use (`runtime/ttnn/config.py`, `kernels/configs.py`).
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import float64_eager, fx_fused_graph
from joint_cases import MaskInput, as_additive, as_bool, holes_valid, prefix_valid
from jointattn.compiler.mlir.emit import compile_module
from jointattn.compiler.mlir.importer import import_module
from jointattn.compiler.mlir.opt_main import run_pipeline
from jointattn.kernels.configs import forward_launch_config
from jointattn.passes.mlir.dialects import JointSDPAOp, LaunchForwardOp, parse_module
from jointattn.passes.mlir.dialects.torch_types import torch_dtype
from jointattn.passes.mlir.fuse import fuse_joint_attention
from jointattn.runtime.ttnn import config as ttnn_config
from jointattn.runtime.ttnn.module import ENV_VAR

from jointattn import model_zoo
from jointattn.testing.comparison import PCC_THRESHOLD, RMSE_THRESHOLD, pcc, rmse

LOWER = {
    "ttnn": "fuse-joint-attention{emit=operator},lower-joint-attention{target=ttnn}",
    "triton": "fuse-joint-attention,lower-joint-attention{target=triton}",
}


@pytest.fixture(autouse=True)
def _emulated_ttnn(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "emulate")


def assert_matches(target, got, want):
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        if target == "ttnn":  # bfloat16 on the device: tt-metal's own acceptance test
            assert pcc(w, g) >= PCC_THRESHOLD and rmse(w, g) < RMSE_THRESHOLD, (pcc(w, g), rmse(w, g))
        else:
            torch.testing.assert_close(g.double(), w, rtol=1e-4, atol=2e-5)


def run_lowered(module, inputs, target, fresh):
    lowered = run_pipeline(import_module(module, *inputs), LOWER[target])
    assert "torch.aten.scaled_dot_product_attention" not in lowered
    got = compile_module(lowered)(*fresh)
    return lowered, got if isinstance(got, tuple) else (got,)


class BothPadded(torch.nn.Module):
    """Image and text both padded, per batch: `arange(S) < lengths` for each, concatenated, additive."""

    def forward(self, q, k, v, eq, ek, ev, image_lengths, text_lengths):
        valid = torch.cat(
            [
                torch.arange(q.shape[2])[None, :] < image_lengths[:, None],
                torch.arange(eq.shape[2])[None, :] < text_lengths[:, None],
            ],
            dim=1,
        )
        bias = torch.zeros(valid.shape, dtype=q.dtype).masked_fill(~valid, float("-inf"))[:, None, None, :]
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2), attn_mask=bias
        )
        return o[:, :, : q.shape[2]], o[:, :, q.shape[2] :]


class TextFirstSeqFirst(torch.nn.Module):
    """Flux's layout (no RoPE): text first, [B,S,H,D] concat, transpose, flatten, split_with_sizes."""

    def forward(self, q, k, v, eq, ek, ev):
        qq, kk, vv = (torch.cat([e, x], 1).transpose(1, 2) for e, x in ((eq, q), (ek, k), (ev, v)))
        o = F.scaled_dot_product_attention(qq, kk, vv, scale=0.2).transpose(1, 2).flatten(2)
        text, image = o.split_with_sizes([eq.shape[1], q.shape[1]], dim=1)
        return image, text


def _bhsd(b, h, n, length, dh, seed):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, s, dh, generator=g) for s in (n, n, n, length, length, length))


def _bshd(b, h, n, length, dh, seed):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, s, h, dh, generator=g) for s in (n, n, n, length, length, length))


@pytest.mark.parametrize("target", ["ttnn", "triton"])
@pytest.mark.parametrize(
    "b,h,n,length,dh,image_lengths,text_lengths",
    [
        (2, 2, 37, 5, 16, [37, 20], [5, 2]),  # odd lengths, padding on both token sets
        (1, 3, 19, 15, 32, [11], [15]),  # image padded only, L close to N
        (2, 1, 33, 7, 8, [33, 33], [0, 7]),  # a text with no valid key at all
    ],
    ids=["b2-n37-l5", "b1-n19-l15", "empty-text"],
)
def test_padded_joint_attention_lowered_and_run(target, b, h, n, length, dh, image_lengths, text_lengths):
    module = BothPadded()
    lengths = (torch.tensor(image_lengths), torch.tensor(text_lengths))
    _, got = run_lowered(
        module, (*_bhsd(b, h, n, length, dh, 0), *lengths), target, (*_bhsd(b, h, n, length, dh, 1), *lengths)
    )
    want = float64_eager(module, (*_bhsd(b, h, n, length, dh, 1), *lengths))
    assert_matches(target, got, want)


@pytest.mark.parametrize("target", ["ttnn", "triton"])
def test_text_first_seq_first_lowered_and_run(target):
    module = TextFirstSeqFirst()
    lowered, got = run_lowered(module, _bshd(2, 2, 21, 6, 16, 0), target, _bshd(2, 2, 21, 6, 16, 3))
    assert_matches(target, got, float64_eager(module, _bshd(2, 2, 21, 6, 16, 3)))
    assert "scale = 2.000000e-01 : f64" in lowered


MASK_FORMS = {"bool": as_bool, "additive": as_additive}


def _count_target_calls(monkeypatch, target):
    """Counts the lowered target's calls (the scf.if's prefix branch) while the test runs."""
    if target == "triton":
        from jointattn.runtime import triton_runtime as module

        name = "launch_forward"
    else:
        from jointattn.runtime.ttnn import lowering as module

        name = "joint_sdpa"
    calls = []
    real = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


@pytest.mark.parametrize("target", ["ttnn", "triton"])
@pytest.mark.parametrize(
    "form,import_valid,run_valid,branch",
    [
        # prefix padding on both token sets when it runs: the target's call with the counted lengths
        ("bool", holes_valid(9, batch=2, total=37 + 5), prefix_valid([37, 20], [5, 2], 37, 5), "target"),
        # holes in both token sets when it runs: the exact path
        ("additive", prefix_valid([30, 37], [1, 5], 37, 5), holes_valid(4, batch=2, total=37 + 5), "exact"),
    ],
    ids=["prefix-bool", "holes-additive"],
)
def test_mask_argument_lowered_and_run(monkeypatch, target, form, import_valid, run_valid, branch):
    """import -> fuse -> lower -> emit -> run with a mask input, against float64 eager. The module is imported with
    a mask of the other kind than it runs with: the lowered program decides when it runs."""
    module = MaskInput()
    calls = _count_target_calls(monkeypatch, target)
    run_inputs = (*_bhsd(2, 2, 37, 5, 16, 1), MASK_FORMS[form](run_valid))
    lowered, got = run_lowered(
        module, (*_bhsd(2, 2, 37, 5, 16, 0), MASK_FORMS[form](import_valid)), target, run_inputs
    )
    assert lowered.count("jointattn.key_padding_lengths") == 1 and "scf.if" in lowered
    assert len(calls) == (1 if branch == "target" else 0)
    assert_matches(target, got, float64_eager(module, run_inputs))


@pytest.mark.parametrize("target", ["ttnn", "triton"])
def test_an_fx_fused_module_with_a_mask_input_imports_lowers_and_runs(target):
    """The FX pass's masked ops, imported by torch-mlir as torch.operator, lower and run like the MLIR pass's."""
    inputs = (*_bhsd(2, 2, 21, 6, 16, 0), MASK_FORMS["bool"](holes_valid(5, batch=2, total=21 + 6)))
    gm, example_inputs, report = fx_fused_graph(MaskInput(), inputs)
    assert report.fused == 1
    text = import_module(gm, *example_inputs)
    assert 'torch.operator "torch.jointattn.masked_joint_attention"' in text
    lowered = run_pipeline(text, f"lower-joint-attention{{target={target}}}")
    assert "torch.operator" not in lowered and "scf.if" in lowered
    run_valid = prefix_valid([21, 9], [4, 6], 21, 6)
    fresh = (*_bhsd(2, 2, 21, 6, 16, 2), MASK_FORMS["bool"](run_valid))
    order = [next(i for i, t in enumerate(inputs) if t is x) for x in example_inputs]  # Dynamo's input order
    got = compile_module(lowered)(*(fresh[i] for i in order))
    assert_matches(target, got, float64_eager(MaskInput(), fresh))


def test_masked_operator_with_a_run_time_scale_is_not_lowered():
    from xdsl.utils.exceptions import PassFailedException

    q, j, lengths, flag = (
        "!torch.vtensor<[1,2,5,8],f32>",
        "!torch.vtensor<[1,2,3,8],f32>",
        "!torch.vtensor<[1],si64>",
        "!torch.vtensor<[],i1>",
    )
    km, jm = "!torch.vtensor<[1,5],i1>", "!torch.vtensor<[1,3],i1>"
    text = (
        f"func.func @main(%q: {q}, %jq: {j}, %km: {km}, %jm: {jm}, %ln: {lengths}, %ok: {flag}, %scale: !torch.float) -> {q} {{\n"
        f'  %str = torch.constant.str "auto"\n'
        f'  %0:3 = torch.operator "torch.jointattn.masked_joint_attention"(%q, %q, %q, %jq, %jq, %jq, %km, %jm, %ln, %ln, %ok, %scale, %str)'
        f" : ({q}, {q}, {q}, {j}, {j}, {j}, {km}, {jm}, {lengths}, {lengths}, {flag}, !torch.float, !torch.str) -> ({q}, {j}, !torch.vtensor<[1,2,8],f32>)\n"
        f"  return %0#0 : {q}\n}}\n"
    )
    with pytest.raises(PassFailedException, match="scale is computed at run time"):
        run_pipeline(text, "lower-joint-attention{target=triton}")


@pytest.mark.parametrize(
    "dtype,dh,reason",
    [
        ("f64", 8, "the Triton kernels take float16, bfloat16 or float32; got torch.float64"),
        ("f32", 300, "the Triton kernels support 1 <= dh <= 256; got dh=300"),
    ],
    ids=["float64", "dh-300"],
)
def test_triton_lowering_refuses_what_the_kernels_do_not_take(dtype, dh, reason):
    """The Triton runtime's own limits (dtype, head dim) fail the pass with the reason; ttnn takes both."""
    from xdsl.utils.exceptions import PassFailedException

    with pytest.raises(
        PassFailedException, match=f"lower-joint-attention: jointattn.joint_attention: {reason}"
    ):
        run_pipeline(_joint_op_text(1, 2, 5, 3, dh, dtype), "lower-joint-attention{target=triton}")
    assert "ttnn.joint_scaled_dot_product_attention" in run_pipeline(
        _joint_op_text(1, 2, 5, 3, dh, dtype), "lower-joint-attention{target=ttnn}"
    )


def test_triton_lowering_refuses_a_masked_float64_attention():
    from xdsl.utils.exceptions import PassFailedException

    inputs = tuple(x.double() for x in _bhsd(2, 2, 9, 4, 8, 0))
    text = import_module(MaskInput(), *inputs, as_bool(holes_valid(3, batch=2, total=13)))
    with pytest.raises(PassFailedException, match="float16, bfloat16 or float32; got torch.float64"):
        run_pipeline(text, LOWER["triton"])


@pytest.mark.parametrize(
    "element_type,dtype,values",
    [
        ("ui16", torch.uint16, [65535, 1]),
        ("ui32", torch.uint32, [2**32 - 1, 1]),
        ("ui64", torch.uint64, [2**63 + 5, 1]),
        ("ui8", torch.uint8, [255, 1]),
        ("si16", torch.int16, [-1, 1]),
    ],
)
@pytest.mark.parametrize("form", ["dense", "dense_resource"])
def test_integer_tensor_literals_keep_their_values(element_type, dtype, values, form):
    """Unsigned literals decode as unsigned, both as dense elements and as a resource blob."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    vtensor = f"!torch.vtensor<[2],{element_type}>"
    if form == "dense":
        literal, resources = f"dense<{values}>", ""
    else:
        blob = b"".join(v.to_bytes(itemsize, "little", signed=v < 0) for v in values)
        literal = "dense_resource<blob>"
        resources = f'{{-#\n  dialect_resources: {{\n    builtin: {{\n      blob: "0x04000000{blob.hex()}"\n    }}\n  }}\n#-}}\n'
    text = (
        f"func.func @main() -> {vtensor} {{\n"
        f"  %0 = torch.vtensor.literal({literal} : tensor<2x{element_type}>) : {vtensor}\n"
        f"  return %0 : {vtensor}\n}}\n{resources}"
    )
    got = compile_module(text)()
    assert got.dtype == dtype
    assert got.tolist() == values


class CallsTheOp(torch.nn.Module):
    """Model code that already calls the op (what the FX pass produces): it imports as torch.operator."""

    def forward(self, q, k, v, eq, ek, ev):
        import jointattn

        out, joint_out, _ = jointattn.joint_attention(q, k, v, eq, ek, ev, logical_n=30, logical_l=4)
        return out, joint_out


@pytest.mark.parametrize("target", ["ttnn", "triton"])
def test_a_module_calling_the_op_imports_lowers_and_runs(target):
    from helpers import unfused_float64

    text = import_module(CallsTheOp(), *_bhsd(2, 2, 37, 5, 16, 0))
    assert 'torch.operator "torch.jointattn.joint_attention"' in text
    lowered = run_pipeline(text, f"lower-joint-attention{{target={target}}}")
    assert "torch.operator" not in lowered
    fresh = _bhsd(2, 2, 37, 5, 16, 2)
    got = compile_module(lowered)(*fresh)
    want = unfused_float64(*fresh, logical_n=30, logical_l=4)[:2]
    assert_matches(target, got, want)


# --- the configuration printed into the IR is the runtimes' own choice ----------------------------------------


def _joint_op_text(b, h, n, length, dh, dtype):
    q = f"!torch.vtensor<[{b},{h},{n},{dh}],{dtype}>"
    j = f"!torch.vtensor<[{b},{h},{length},{dh}],{dtype}>"
    lse = f"!torch.vtensor<[{b},{h},{n + length}],f32>"
    return (
        f"func.func @main(%q: {q}, %j: {j}) -> {q} {{\n"
        f"  %o, %jo, %lse = jointattn.joint_attention %q, %q, %q, %j, %j, %j {{scale = 1.250000e-01 : f64}} : {q}, {j} -> {lse}\n"
        f"  return %o : {q}\n}}\n"
    )


SHAPES = [
    (1, 24, 4096, 154, 64, "bf16"),  # SD3.5-large at 1024px
    (1, 24, 4096, 512, 128, "bf16"),  # Flux-dev at 1024px
    (1, 24, 44520, 118, 128, "bf16"),  # Mochi
    (2, 2, 37, 5, 16, "f32"),
    (1, 4, 100, 9, 64, "f16"),
]


@pytest.mark.parametrize("b,h,n,length,dh,dtype", SHAPES, ids=["sd35", "flux", "mochi", "tiny-f32", "f16"])
def test_lowered_configs_are_the_runtime_choices(b, h, n, length, dh, dtype):
    ttnn_op = _only(
        parse_module(
            run_pipeline(_joint_op_text(b, h, n, length, dh, dtype), "lower-joint-attention{target=ttnn}")
        ),
        JointSDPAOp,
    )
    program = ttnn_op.program_config.values()
    assert (program["q_chunk_size"], program["k_chunk_size"]) == ttnn_config.sdpa_chunk_sizes(
        n, length, dh, b=b, nh=h
    )
    settings = ttnn_config.current()
    assert ttnn_op.compute_kernel_config.values() == {
        "math_fidelity": settings.math_fidelity,
        "math_approx_mode": settings.math_approx_mode,
        "fp32_dest_acc_en": settings.fp32_dest_acc_en,
        "packer_l1_acc": settings.packer_l1_acc,
    }
    triton_op = _only(
        parse_module(
            run_pipeline(_joint_op_text(b, h, n, length, dh, dtype), "lower-joint-attention{target=triton}")
        ),
        LaunchForwardOp,
    )
    chosen = forward_launch_config(dh, torch_dtype(triton_op.q.type.element_type), n, length)
    assert triton_op.config.values() == {
        "block_m": chosen.block_m,
        "block_n": chosen.block_n,
        "num_warps": chosen.num_warps,
        "num_stages": chosen.num_stages,
    }


def test_ttnn_overrides_at_lowering_time_are_printed_and_applied_when_run(monkeypatch):
    """Settings in force when the pass runs go into the IR; the emitted code re-applies them around the call."""
    with ttnn_config.overrides(q_chunk_size=64, k_chunk_size=96, math_fidelity="HiFi4"):
        lowered = run_pipeline(
            import_module(BothPadded(), *_bhsd(1, 1, 40, 3, 16, 0), torch.tensor([33]), torch.tensor([2])),
            LOWER["ttnn"],
        )
    assert "q_chunk_size = 64, k_chunk_size = 96" in lowered and "math_fidelity = HiFi4" in lowered
    seen = []
    from jointattn.runtime.ttnn import lowering

    real = lowering.joint_sdpa

    def spy(*args, **kwargs):
        seen.append((ttnn_config.current().math_fidelity, kwargs["q_chunk_size"], kwargs["k_chunk_size"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(lowering, "joint_sdpa", spy)
    compile_module(lowered)(*_bhsd(1, 1, 40, 3, 16, 1), torch.tensor([33]), torch.tensor([2]))
    assert seen == [("HiFi4", 64, 96)]
    assert ttnn_config.current().math_fidelity == "HiFi2"  # restored after the call


def _only(module, op_type):
    (op,) = [o for o in module.walk() if isinstance(o, op_type)]
    return op


# --- unmodified diffusers models -------------------------------------------------------------------------------


class Positional(torch.nn.Module):
    """A model_zoo model called with its inputs as positional arguments, the form import_module takes."""

    def __init__(self, case):
        super().__init__()
        self.model, self.names = case.model, list(case.inputs)

    def forward(self, *args):
        return self.model(**dict(zip(self.names, args, strict=True)), return_dict=False)[0]


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_unmodified_diffusers_model_every_joint_attention_fused(name):
    case = model_zoo.build(name)
    model = Positional(case)
    text = import_module(model, *case.inputs.values())
    decisions = fuse_joint_attention(parse_module(text))
    assert sum(d.fused for d in decisions) == case.joint_layers, "\n".join(map(str, decisions))
    lowered = run_pipeline(text, LOWER["triton"])
    assert lowered.count("jointattn_triton.launch_forward") == case.joint_layers
    fresh = model_zoo.build(name, seed=5).inputs.values()  # inputs of the same shapes, other values
    got = compile_module(lowered)(*fresh)
    with torch.no_grad():
        want = model(*fresh)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_mochi_imports_passes_through_unfused_and_runs():
    """diffusers' Mochi gathers each sample's valid text tokens with `nonzero` in a per-sample loop. torch-mlir
    imports it (the loop unrolled per sample, attention over `?` tokens, `torch.runtime.assert` size checks);
    the MLIR pass has no counterpart of the FX pass's unpad rewrite, so it refuses those attentions, leaves the
    module as it is, and the module runs as eager does."""
    case = model_zoo.build("mochi")
    text = import_module(Positional(case), *case.inputs.values())
    decisions = fuse_joint_attention(parse_module(text))
    per_sample = [d for d in decisions if "lengths not known at compile time" in d.reason]
    assert not any(d.fused for d in decisions) and len(per_sample) == 2 * case.joint_layers
    got = compile_module(run_pipeline(text, "fuse-joint-attention"))(*case.inputs.values())
    with torch.no_grad():
        want = case.model(**case.inputs, return_dict=False)[0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


class PlainJoint(torch.nn.Module):
    def forward(self, q, k, v, eq, ek, ev):
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2)
        )
        return o[:, :, : q.shape[2]], o[:, :, q.shape[2] :]


@pytest.mark.parametrize(
    "gpu,table,kernel",
    [
        ("sm_90", None, "hopper"),  # no measurement: dh 128's default is the Hopper kernel
        ("sm_80", None, "triton"),  # not a Hopper GPU
        ("sm_90", "sdpa-fastest", "sdpa"),  # a measurement says PyTorch's SDPA wins at this size
    ],
)
def test_triton_lowering_takes_the_dispatchers_kernel_and_runs_it(gpu, table, kernel, monkeypatch):
    """The lowered IR carries the dispatcher's plan for the GPU it lowers for (one answer for the runtime and the
    lowering), the remark says it, and the emitted Python runs it: here on CPU, where the launcher re-checks and
    the Hopper plan runs the Triton kernel in the interpreter."""
    from jointattn.runtime import dispatch

    rows = []
    if table:
        common = dict(arch="sm_90", dtype="float16", dh=128, b_nh=2, n=37, l=11, padded=False)
        rows = [dict(common, ms={"hopper": 0.2, "triton": 0.3, "sdpa": 0.05}, **{"pass": "forward"})]
    monkeypatch.setattr(dispatch, "_table", lambda: {"rows": rows})
    dispatch.reload_measurements()
    g = torch.Generator().manual_seed(7)
    inputs = [torch.randn(1, 2, s, 128, generator=g).half() for s in (37, 37, 37, 11, 11, 11)]
    text = run_pipeline(
        import_module(PlainJoint(), *inputs),
        f"fuse-joint-attention,lower-joint-attention{{target=triton gpu={gpu}}}",
    )
    (launch,) = [op for op in parse_module(text).walk() if isinstance(op, LaunchForwardOp)]
    assert launch.kernel_name == kernel
    got = compile_module(text)(*inputs)
    want = PlainJoint()(*[t.double() for t in inputs])
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, rtol=2e-3, atol=2e-3)
    dispatch.reload_measurements()
