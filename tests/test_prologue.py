"""The QK-norm + RoPE prologue: its kernel, the `jointattn::rms_norm_rope` op, and the post-grad pass that puts it
where Mochi's attention computes it.

The kernel runs in Triton's interpreter here (float32); the op is checked against the model code's own formula
(`runtime.rms_norm_rope.reference`) and its gradient against that formula's; the pass is checked on a tiny stock
Mochi (every q/k prologue replaced, outputs equal eager's), on look-alike forms it must leave alone, and on a
training graph.
"""

import pytest
import torch
from helpers import count_op_calls
from jointattn.passes.fx import prologue
from jointattn.runtime.rms_norm_rope import reference

import jointattn  # noqa: F401
from jointattn import model_zoo

# The pass tests turn the compile caches off, so that the pass runs on every compile; Dynamo warns that this
# turns its profile-guided cache off too.
pytestmark = pytest.mark.filterwarnings("ignore:dynamo_pgo force disabled:UserWarning:torch._dynamo.pgo")

OP = torch.ops.jointattn.rms_norm_rope
# The kernel tests run on the GPU where there is one, else in Triton's interpreter (conftest).
KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(b=2, s=37, nh=3, dh=16, table_heads=3, seed=0, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, s, nh, dh, generator=g).to(dtype)
    weight = (1 + 0.1 * torch.randn(dh, generator=g)).to(dtype)
    angles = torch.rand(s, table_heads, dh // 2, generator=g) * 40
    return tuple(t.to(device) for t in (x, weight, angles.cos(), angles.sin()))


# ---- kernel (Triton interpreter on CPU) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        "norm+rope",
        "norm without weight",
        "rope only",
        "norm only",
        "tables shared by heads",
        "per-sample tables",
    ],
)
def test_kernel_equals_the_model_formula(case):
    from jointattn.kernels.rms_norm_rope import rms_norm_rope

    x, weight, cos, sin = _inputs(
        table_heads=1 if case == "tables shared by heads" else 3, device=KERNEL_DEVICE
    )
    if case == "per-sample tables":
        cos, sin = torch.stack([cos, cos.flip(0)]), torch.stack([sin, sin.flip(0)])
    weight = None if case in ("norm without weight", "rope only") else weight
    eps = None if case == "rope only" else 1e-5
    cos, sin = (None, None) if case == "norm only" else (cos, sin)
    torch.testing.assert_close(rms_norm_rope(x, weight, eps, cos, sin), reference(x, weight, eps, cos, sin))


def test_kernel_reads_strided_x_and_writes_into_a_given_output():
    from jointattn.kernels.rms_norm_rope import rms_norm_rope

    x, weight, cos, sin = _inputs(s=19, nh=5, table_heads=1, device=KERNEL_DEVICE)
    strided = x.transpose(1, 2).contiguous().transpose(1, 2)  # [b, S, nh, dh] with heads outermost in memory
    out = torch.full((2, 5, 19, 16), float("nan"), device=KERNEL_DEVICE).transpose(1, 2)
    rms_norm_rope(strided, weight, 1e-6, cos[:19, :, :], sin[:19], out=out)
    torch.testing.assert_close(out, reference(x, weight, 1e-6, cos[:19], sin[:19]))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("dh,heads", [(128, 24), (64, 38)], ids=["mochi-heads", "sd3-heads"])
def test_op_on_cuda_runs_the_kernel_within_one_rounding_of_the_formula(dtype, dh, heads, monkeypatch):
    """Real head sizes: the kernel may round a product differently from torch (fused multiply-add), so half
    results agree to a unit in the last place of x's dtype, and most are bitwise equal."""
    from jointattn.kernels import rms_norm_rope as kernel_module

    launches = []
    launch = kernel_module.rms_norm_rope
    monkeypatch.setattr(kernel_module, "rms_norm_rope", lambda *a: launches.append(1) or launch(*a))
    x, weight, cos, sin = _inputs(b=2, s=1001, nh=heads, dh=dh, table_heads=heads, dtype=dtype, device="cuda")
    got, expected = OP(x, weight, 1e-5, cos, sin), reference(x, weight, 1e-5, cos, sin)
    tolerance = max(
        2 * torch.finfo(dtype).eps, 1e-5
    )  # float32: rsqrt and fused multiply-adds differ by ~1e-6
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance)
    if dtype != torch.float32:  # float32 results are not rounded again, so they differ in the last bits
        assert (got != expected).float().mean() < 0.02
    assert len(launches) == 1


# ---- op ---------------------------------------------------------------------------------------------------------


def test_op_passes_opcheck():
    x, weight, cos, sin = _inputs()
    torch.library.opcheck(OP, (x, weight, 1e-5, cos, sin))
    torch.library.opcheck(OP, (x, None, None, cos, sin))
    torch.library.opcheck(OP, (x.requires_grad_(), weight, 1e-5, None, None))


def test_op_gradients_equal_the_formula_gradients():
    def leaves():
        return [t.clone().requires_grad_() for t in _inputs(seed=3)]

    fused, plain = leaves(), leaves()
    grad = torch.randn(2, 37, 3, 16)
    OP(fused[0], fused[1], 1e-5, fused[2], fused[3]).backward(grad)
    reference(plain[0], plain[1], 1e-5, plain[2], plain[3]).backward(grad)
    for got, expected in zip(fused, plain, strict=True):
        torch.testing.assert_close(got.grad, expected.grad, rtol=0, atol=0)


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(weight=torch.ones(8)), r"weight must be \[dh\] = \[16\]"),
        (dict(cos=torch.ones(37, 3, 9)), r"cos must broadcast to \[b, S, nh, dh/2\] = \[2, 37, 3, 8\]"),
        (dict(sin=None), "cos and sin must be given together"),
        (dict(eps=None), "weight is given without eps"),
        (dict(x=torch.ones(2, 37, 3, 15)), r"x must be \[b, S, nh, dh\] with an even dh"),
    ],
)
def test_op_names_the_argument_that_does_not_fit(change, message):
    x, weight, cos, sin = _inputs()
    args = dict(x=x, weight=weight, eps=1e-5, cos=cos, sin=sin) | change
    with pytest.raises(ValueError, match=message):
        OP(**args)


# ---- pass -------------------------------------------------------------------------------------------------------


@pytest.fixture
def replacements(monkeypatch):
    """Lets the pass run on CPU graphs (it only targets CUDA by default) and records what each run replaced."""
    counts = []
    fuse = prologue.fuse_prologues
    monkeypatch.setattr(prologue, "DEVICES", {"cuda", "cpu"})
    monkeypatch.setattr(prologue, "fuse_prologues", lambda graph: counts.append(fuse(graph)) or counts[-1])
    with torch._inductor.config.patch(force_disable_caches=True):
        yield counts


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_mochi_prologue_becomes_the_op(replacements, dtype):
    case = model_zoo.build("mochi", dtype=dtype)
    compiled = torch.compile(case.model, backend="jointattn")
    with torch.no_grad(), torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        eager = case.model(**case.inputs)[0]
        compiled(**case.inputs)
        out, calls = count_op_calls(lambda: compiled(**case.inputs)[0], op="jointattn::rms_norm_rope")
    assert sum(replacements) == 2 * case.joint_layers  # q and k of the video tokens, per layer
    assert calls == 2 * case.joint_layers
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=0.02, atol=0.02)
    torch.testing.assert_close(out, eager, **tolerance)


def mochi_prologue(x, weight, cos, sin, eps=1e-5):
    variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
    y = (x * torch.rsqrt(variance + eps) * weight).to(x.dtype)
    even, odd = y[..., 0::2].float(), y[..., 1::2].float()
    c = (even * cos - odd * sin).to(x.dtype)
    s = (even * sin + odd * cos).to(x.dtype)
    return torch.stack([c, s], dim=-1).flatten(-2)


def swapped_pairs(x, weight, cos, sin):
    y = mochi_prologue(x, weight, cos, sin)
    even, odd = x[..., 1::2].float(), x[..., 0::2].float()
    return y + torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2).to(x.dtype)


def norm_over_heads(x, weight, cos, sin):
    variance = x.pow(2).mean(2, keepdim=True)
    y = x * torch.rsqrt(variance + 1e-5) * weight
    even, odd = y[..., 0::2], y[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


def cubed_norm(x, weight, cos, sin):
    variance = x.pow(3).abs().mean(-1, keepdim=True)
    y = x * torch.rsqrt(variance + 1e-5) * weight
    even, odd = y[..., 0::2], y[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


def norm_also_returned(x, weight, cos, sin):
    variance = x.pow(2).mean(-1, keepdim=True)
    y = x * torch.rsqrt(variance + 1e-5) * weight
    even, odd = y[..., 0::2], y[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2), y


def rotate_half(x, weight, cos, sin):
    """GPT-NeoX-style RoPE: pairs (i, i + dh/2), not interleaved; not what the kernel computes."""
    even, odd = x[..., :8], x[..., 8:]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


def rotation_with_alpha(x, weight, cos, sin):
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([torch.sub(even * cos, odd * sin, alpha=2), even * sin + odd * cos], dim=-1).flatten(
        -2
    )


def eps_with_alpha(x, weight, cos, sin):
    y = x * torch.rsqrt(torch.add(x.pow(2).mean(-1, keepdim=True), 1e-5, alpha=3)) * weight
    even, odd = y[..., 0::2], y[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


def rotation_reversed(x, weight, cos, sin):
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos + odd * sin, odd * cos - even * sin], dim=-1).flatten(-2)


@pytest.mark.parametrize(
    "fn,expected",
    [
        (mochi_prologue, 1),
        (lambda x, w, c, s: mochi_prologue(x, w, c, s) * 2, 1),
        (lambda x, w, c, s: mochi_prologue(x, torch.ones_like(w), c, s), 1),
        (swapped_pairs, 1),  # only the first, well-formed, prologue
        (norm_over_heads, 1),  # the rope alone, on the norm's output
        (cubed_norm, 1),  # likewise
        (norm_also_returned, 0),
        (rotate_half, 0),
        (rotation_reversed, 0),
        (rotation_with_alpha, 0),
        (eps_with_alpha, 1),  # the rope alone: the norm's eps is scaled
        (lambda x, w, c, s: mochi_prologue(x, w, c, s, eps=x.new_full((), 1e-5)), 1),  # the rope alone
        (lambda x, w, c, s: mochi_prologue(x, w[:1], c, s), 1),  # the rope alone: the op's weight is [dh]
    ],
    ids=[
        "mochi-form",
        "mochi-form-then-scaled",
        "mochi-form-unit-weight",
        "pairs-swapped",
        "norm-over-heads",
        "cubed-norm",
        "norm-also-returned",
        "rotate-half",
        "rotation-reversed",
        "rotation-with-alpha",
        "eps-with-alpha",
        "eps-as-a-tensor",
        "weight-broadcast-over-dh",
    ],
)
def test_only_the_exact_form_is_replaced(replacements, fn, expected):
    x, weight, cos, sin = _inputs(b=2, s=11, nh=3, dh=16, seed=5)
    got = torch.compile(fn, backend="jointattn")(x, weight, cos, sin)
    assert sum(replacements) == expected
    torch.testing.assert_close(got, fn(x, weight, cos, sin), rtol=1e-5, atol=1e-5)


def test_rope_alone_and_tables_of_another_dtype(replacements):
    x, _, cos, sin = _inputs(b=1, s=9, nh=2, dh=8, table_heads=1, dtype=torch.bfloat16)

    def rope_only(x, cos, sin):
        even, odd = x[..., 0::2].float(), x[..., 1::2].float()
        return torch.stack(
            [(even * cos - odd * sin).to(x.dtype), (even * sin + odd * cos).to(x.dtype)], -1
        ).flatten(-2)

    got = torch.compile(rope_only, backend="jointattn")(x, cos.bfloat16(), sin.bfloat16())
    assert sum(replacements) == 1
    torch.testing.assert_close(got, rope_only(x, cos.bfloat16(), sin.bfloat16()), rtol=0, atol=0)
    torch._dynamo.reset()
    torch.compile(rope_only, backend="jointattn")(
        x, cos.double(), sin.double()
    )  # float64 products: not the form
    assert sum(replacements) == 1


def test_a_weight_that_broadcasts_x_up_is_not_taken_for_the_norm(replacements):
    """x [..., 1] times a weight [16] is [..., 16]: not a norm of x (review repro: compiling crashed)."""

    def norm_rope(x, weight, cos, sin):
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * weight
        even, odd = y[..., 0::2], y[..., 1::2]
        return torch.stack([even * cos - odd * sin, even * sin + odd * cos], -1).flatten(-2)

    args = torch.randn(2, 5, 3, 1), torch.rand(16), torch.rand(5, 1, 1), torch.rand(5, 1, 1)
    got = torch.compile(norm_rope, backend="jointattn")(*args)
    torch.testing.assert_close(got, norm_rope(*args))


def test_an_odd_head_dim_is_left_alone(replacements):
    """dh = 1: the pairs are [..., 1] and [..., 0], which broadcast, so the formula traces; the op refuses it."""

    def rope_only(x, cos, sin):
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack([even * cos - odd * sin, even * sin + odd * cos], -1).flatten(-2)

    args = torch.randn(2, 5, 3, 1), torch.rand(5, 1, 1), torch.rand(5, 1, 1)
    got = torch.compile(rope_only, backend="jointattn")(*args)
    assert sum(replacements) == 0
    torch.testing.assert_close(got, rope_only(*args))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_graphs_are_left_alone(replacements, dtype):
    """The forward graph saves the norm's rsqrt for the backward: neither the prologue nor the RoPE after its norm
    is replaced (the first pattern-matcher version replaced that RoPE alone)."""
    x, weight, cos, sin = _inputs(b=2, s=11, nh=3, dh=16, seed=5, dtype=dtype)
    x.requires_grad_()
    got = torch.compile(mochi_prologue, backend="jointattn")(x, weight, cos, sin)
    assert sum(replacements) == 0
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=0.02, atol=0.02)
    torch.testing.assert_close(got, mochi_prologue(x, weight, cos, sin), **tolerance)


def test_tables_that_would_broadcast_x_up_are_left_alone(replacements):
    x, weight, cos, sin = _inputs(b=1, s=11, nh=3, dh=16)
    cos, sin = cos.expand(2, 11, 3, 8), sin.expand(2, 11, 3, 8)  # batch 2 against x's batch 1
    got = torch.compile(mochi_prologue, backend="jointattn")(x, weight, cos, sin)
    assert sum(replacements) == 0
    torch.testing.assert_close(got, mochi_prologue(x, weight, cos, sin))


@pytest.mark.gpu
def test_mochi_on_cuda_runs_the_kernel_for_every_prologue():
    case = model_zoo.build("mochi", device="cuda", dtype=torch.bfloat16)
    compiled = torch.compile(case.model, backend="jointattn")
    with torch.no_grad(), torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        eager = case.model(**case.inputs)[0]
        compiled(**case.inputs)
        out, calls = count_op_calls(lambda: compiled(**case.inputs)[0], op="jointattn::rms_norm_rope")
    assert calls == 2 * case.joint_layers
    torch.testing.assert_close(out, eager, rtol=0.02, atol=0.02)


def test_the_pass_keeps_inductors_code_on_devices_without_the_kernel():
    """By default only CUDA graphs are rewritten: on CPU the op would run its unfused reference."""
    x, weight, cos, sin = _inputs(b=1, s=11, nh=3, dh=16)
    with torch._inductor.config.patch(force_disable_caches=True):
        _, calls = count_op_calls(
            torch.compile(mochi_prologue, backend="jointattn"),
            x,
            weight,
            cos,
            sin,
            op="jointattn::rms_norm_rope",
        )
    assert calls == 0
