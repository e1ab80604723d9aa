"""The sdpa path's joins (`runtime/join.py`, `kernels/join_sets.py`): the Triton kernel against torch.cat on the
model's strided layouts, odd sizes, cut sets (valid keys only), one to five pairs; the sdpa path and the eager
shortcut with the kernel forced on (interpreter on CPU) against the float64 unfused graph, gradients included.
Joins are copies, so every comparison is exact."""

import pytest
import torch
from helpers import joint_inputs, rel_err, unfused_float64
from jointattn.runtime import join
from jointattn.runtime.ops import eager_sdpa

import jointattn

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32
TOL = 2e-2 if DEVICE == "cuda" else 1e-5  # against float64: bf16 kernels on the GPU, float32 on CPU


def _model_layout(b, nh, s, dh, seed):
    """[b, nh, s, dh] as models hand it over: a [b, s, nh, dh] tensor transposed (heads strided)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, s, nh, dh, generator=g).to(DEVICE, DTYPE).transpose(1, 2)


@pytest.mark.parametrize(
    "b,nh,n,l,dh,cuts",
    [
        (2, 3, 13, 7, 16, [(13, 7)]),  # one pair, whole sets
        # five pairs, the keys cut (dh not a power of 2)
        (1, 2, 9, 5, 24, [(9, 5), (4, 2), (4, 2), (9, 5), (9, 5)]),
        (2, 1, 0, 6, 8, [(0, 6), (0, 3)]),  # no spatial tokens
        (1, 2, 70, 3, 8, [(70, 3), (70, 0)]),  # more rows than one program's block; an empty second set
    ],
)
def test_the_kernel_joins_as_cat_does(b, nh, n, l, dh, cuts):  # noqa: E741
    pairs = []
    for i, (ra, rb) in enumerate(cuts):
        a, c = _model_layout(b, nh, n, dh, 2 * i), _model_layout(b, nh, l, dh, 2 * i + 1)
        pairs.append((a, c, ra, rb))
    got = join.launch_join(pairs)
    for out, (a, c, ra, rb) in zip(got, pairs, strict=True):
        assert out.is_contiguous()
        assert torch.equal(out, torch.cat([a[:, :, :ra], c[:, :, :rb]], dim=2))


@pytest.mark.parametrize("kernel", [True, False])
def test_heads_inner_outputs_are_laid_out_as_a_models_attention_output(kernel):
    """Pairs named in heads_inner come back [b, S, nh, dh] in memory (what `transpose(1, 2)` of a model's output
    is), the same values; the others contiguous. Kernel and torch.cat fallback alike."""
    b, nh, n, l, dh = 2, 3, 21, 5, 16  # noqa: E741
    pairs = [
        (_model_layout(b, nh, n, dh, i), _model_layout(b, nh, l, dh, 10 + i), n, l - i) for i in range(3)
    ]
    got = (join.launch_join if kernel else join.join_pairs)(pairs, frozenset({1}))
    for i, (out, (a, c, ra, rb)) in enumerate(zip(got, pairs, strict=True)):
        assert torch.equal(out, torch.cat([a[:, :, :ra], c[:, :, :rb]], dim=2))
        heads_inner = out.transpose(1, 2).is_contiguous()
        assert heads_inner == (i == 1) and out.is_contiguous() == (i != 1)


def test_join_pairs_falls_back_to_cat_below_the_size_or_off_the_gpu():
    a, c = _model_layout(1, 2, 5, 8, 0), _model_layout(1, 2, 3, 8, 1)
    assert not join.kernel_takes([(a, c, 5, 3)])  # small (and on CPU)
    assert torch.equal(join.join_pairs([(a, c, 5, 2)])[0], torch.cat([a, c[:, :, :2]], dim=2))


def test_launch_join_refuses_more_than_five_pairs():
    a = _model_layout(1, 1, 2, 8, 0)
    with pytest.raises(ValueError, match="pairs must number 1 to 5, got 6"):
        join.launch_join([(a, a, 2, 2)] * 6)


@pytest.fixture
def kernel_forced(monkeypatch):
    """Every join through the Triton kernel (on CPU: the interpreter), whatever its size; yields the launches'
    pair counts."""
    launches, real = [], join.launch_join
    monkeypatch.setattr(join, "kernel_takes", lambda pairs: True)
    monkeypatch.setattr(
        join, "launch_join", lambda pairs, *rest: launches.append(len(pairs)) or real(pairs, *rest)
    )
    yield launches


def _check_against_float64(out, joint_out, lse, inputs, clean, ref, tol):
    for got, want in zip((out, joint_out, lse), ref):
        assert rel_err(got, want) < tol
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(r.shape, generator=g, dtype=torch.float64).to(r.device) for r in ref[:2]]
    grads = torch.autograd.grad((out, joint_out), inputs, [w.to(out.device, out.dtype) for w in weights])
    want = torch.autograd.grad(ref[:2], clean, weights)
    for got, expected in zip(grads, want, strict=True):
        assert rel_err(got, expected) < tol


@pytest.mark.parametrize("logical_l", [None, torch.tensor([4, 4])])
def test_sdpa_path_with_the_kernel_matches_float64(kernel_forced, logical_l):
    """The op's sdpa runtime (not the eager shortcut, which `runtime="auto"` may take)."""
    inputs = [t.requires_grad_() for t in joint_inputs(2, 3, 11, 6, 16, seed=3, device=DEVICE, dtype=DTYPE)]
    out, joint_out, lse = jointattn.joint_attention(
        *inputs, logical_l=None if logical_l is None else logical_l.to(DEVICE), scale=0.3, runtime="sdpa"
    )
    clean = [t.detach().double().requires_grad_() for t in inputs]
    ref = unfused_float64(*clean, logical_l=None if logical_l is None else logical_l.to(DEVICE), scale=0.3)
    _check_against_float64(out, joint_out, lse, inputs, clean, ref, TOL)
    assert kernel_forced == [3, 5]  # the forward's q, k, v; the backward's q, k, v, out, dO


def test_the_model_do_layout_switch_joins_do_as_a_model_output_and_computes_the_same(
    monkeypatch, kernel_forced
):
    """JOINTATTN_SDPA_DO_LAYOUT=model (experimental): the backward's dO reaches SDPA's backward laid out
    [b, S, nh, dh] in memory; the gradients are the same as float64's."""
    from jointattn.runtime import sdpa_runtime

    seen, real = [], sdpa_runtime.attention_backward
    monkeypatch.setattr(sdpa_runtime, "attention_backward", lambda g, *a: seen.append(g) or real(g, *a))
    monkeypatch.setenv(sdpa_runtime.DO_LAYOUT_ENV, "model")
    inputs = [t.requires_grad_() for t in joint_inputs(2, 3, 11, 6, 16, seed=5, device=DEVICE, dtype=DTYPE)]
    out, joint_out, lse = jointattn.joint_attention(*inputs, scale=0.3, runtime="sdpa")
    clean = [t.detach().double().requires_grad_() for t in inputs]
    _check_against_float64(out, joint_out, lse, inputs, clean, unfused_float64(*clean, scale=0.3), TOL)
    (d_o,) = seen
    assert d_o.transpose(1, 2).is_contiguous() and not d_o.is_contiguous()


def test_the_model_do_layout_switch_also_lays_out_the_shortcuts_do(monkeypatch):
    """The eager shortcut's training call under JOINTATTN_SDPA_DO_LAYOUT=model: its SDPA backward gets dO as
    [b, S, nh, dh] memory, and every gradient (through lse too) still matches float64."""
    from jointattn.runtime import sdpa_runtime

    seen, real = [], sdpa_runtime.attention_backward
    monkeypatch.setattr(sdpa_runtime, "attention_backward", lambda g, *a: seen.append(g) or real(g, *a))
    monkeypatch.setenv(sdpa_runtime.DO_LAYOUT_ENV, "model")
    inputs = [t.requires_grad_() for t in joint_inputs(2, 2, 9, 5, 8, seed=6, device=DEVICE, dtype=DTYPE)]
    out, joint_out, lse = eager_sdpa._run(inputs, eager_sdpa.Plan(scale=0.5, n=9), grad=True)
    clean = [t.detach().double().requires_grad_() for t in inputs]
    ref = unfused_float64(*clean, scale=0.5)
    _check_against_float64(out, joint_out, lse, inputs, clean, ref, TOL)
    assert seen and seen[0].transpose(1, 2).is_contiguous() and not seen[0].is_contiguous()
    _, _, lse = eager_sdpa._run(inputs, eager_sdpa.Plan(scale=0.5, n=9), grad=True)  # a fresh graph for lse
    want_lse = unfused_float64(*clean, scale=0.5)[2]
    g = torch.Generator().manual_seed(7)
    weights = torch.randn(lse.shape, generator=g, dtype=torch.float64).to(lse.device)
    got = torch.autograd.grad((lse * weights.to(lse.dtype)).sum(), [inputs[i] for i in (0, 1, 3, 4)])
    want = torch.autograd.grad((want_lse * weights).sum(), [clean[i] for i in (0, 1, 3, 4)])
    for a, w in zip(got, want, strict=True):
        assert rel_err(a, w) < TOL


def test_the_shortcuts_joined_sets_are_differentiable_as_cat(monkeypatch, kernel_forced):
    """The eager shortcut's training call (`_JoinedSets`): gradients are the slices of the joined ones."""
    inputs = [t.requires_grad_() for t in joint_inputs(2, 2, 9, 5, 8, seed=4, device=DEVICE, dtype=DTYPE)]
    plan = eager_sdpa.Plan(scale=0.5, n=9)
    out, joint_out, lse = eager_sdpa._run(inputs, plan, grad=True)
    clean = [t.detach().double().requires_grad_() for t in inputs]
    ref = unfused_float64(*clean, scale=0.5)
    _check_against_float64(out, joint_out, lse, inputs, clean, ref, TOL)
    assert kernel_forced == [3]


@pytest.mark.gpu
def test_large_gpu_joins_take_the_kernel_and_match_cat():
    a, c = _model_layout(1, 24, 4096, 128, 0), _model_layout(1, 24, 512, 128, 1)
    pairs = [(a, c, 4096, 512), (a, c, 4096, 77), (c, a, 512, 4096)]  # Flux's size: 80 MB joined
    assert join.kernel_takes(pairs)
    for out, (x, y, ra, rb) in zip(join.join_pairs(pairs), pairs, strict=True):
        assert torch.equal(out, torch.cat([x[:, :, :ra], y[:, :, :rb]], dim=2))
