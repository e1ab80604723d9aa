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
@pytest.mark.parametrize("b", [1, 2])
def test_private_outputs_have_the_padded_batch_stride(kernel, b):
    """Pairs named in `private` come back in the private layout (the batch stride padded, size-1 batch too), the
    same values; the others contiguous. Kernel and torch.cat fallback alike."""
    nh, n, l, dh = 3, 21, 5, 16  # noqa: E741
    pairs = [
        (_model_layout(b, nh, n, dh, i), _model_layout(b, nh, l, dh, 10 + i), n, l - i) for i in range(3)
    ]
    got = (join.launch_join if kernel else join.join_pairs)(pairs, frozenset({1}))
    for i, (out, (a, c, ra, rb)) in enumerate(zip(got, pairs, strict=True)):
        assert torch.equal(out, torch.cat([a[:, :, :ra], c[:, :, :rb]], dim=2))
        assert join.is_private(out) == (i == 1)
        assert out.stride()[0] == nh * (ra + rb) * dh + (join.PRIVATE_BATCH_PAD if i == 1 else 0)
    assert join.to_private(got[1]) is got[1]
    copied = join.to_private(got[0])
    assert join.is_private(copied) and torch.equal(copied, got[0])


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


@pytest.fixture
def backward_operands(monkeypatch):
    """The operands every SDPA backward of ours is handed (`sdpa_runtime.attention_backward`), recorded."""
    from jointattn.runtime import sdpa_runtime

    seen, real = [], sdpa_runtime.attention_backward
    monkeypatch.setattr(sdpa_runtime, "attention_backward", lambda *a: seen.append(a) or real(*a))
    yield seen


def _keyed_apart(operands):
    """q, k and v private, O and dO packed: what `_cudnn_backward` would otherwise copy them into."""
    grad, q, k, v, out = operands[:5]
    return all(join.is_private(t) for t in (q, k, v)) and grad.is_contiguous() and out.is_contiguous()


@pytest.mark.parametrize("logical_l", [None, torch.tensor([4, 4])])
def test_the_sdpa_paths_backward_joins_in_the_private_layout(kernel_forced, backward_operands, logical_l):
    """The op's sdpa backward: the join kernel writes q, k and v private, so cuDNN's backward needs no copies;
    the gradients are float64's."""
    inputs = [t.requires_grad_() for t in joint_inputs(2, 3, 11, 6, 16, seed=5, device=DEVICE, dtype=DTYPE)]
    lengths = None if logical_l is None else logical_l.to(DEVICE)
    out, joint_out, lse = jointattn.joint_attention(*inputs, logical_l=lengths, scale=0.3, runtime="sdpa")
    clean = [t.detach().double().requires_grad_() for t in inputs]
    ref = unfused_float64(*clean, logical_l=lengths, scale=0.3)
    _check_against_float64(out, joint_out, lse, inputs, clean, ref, TOL)
    (operands,) = backward_operands
    assert _keyed_apart(operands)


@pytest.mark.parametrize("kernel", [True, False])
def test_the_shortcuts_training_call_joins_in_the_private_layout(monkeypatch, backward_operands, kernel):
    """The eager shortcut's training call (`_TrainingSdpa`): q, k and v private, dO packed, and every gradient
    (through lse too) matches float64's; joined by the kernel or by copies."""
    if kernel:
        monkeypatch.setattr(join, "kernel_takes", lambda pairs: True)
    inputs = [t.requires_grad_() for t in joint_inputs(2, 2, 9, 5, 8, seed=6, device=DEVICE, dtype=DTYPE)]
    out, joint_out, lse = eager_sdpa._run(
        inputs, eager_sdpa.Plan(scale=0.5, n=9, joins_by_kernel=True), grad=True
    )
    clean = [t.detach().double().requires_grad_() for t in inputs]
    ref = unfused_float64(*clean, scale=0.5)
    _check_against_float64(out, joint_out, lse, inputs, clean, ref, TOL)
    assert backward_operands and _keyed_apart(backward_operands[0])
    _, _, lse = eager_sdpa._run(
        inputs, eager_sdpa.Plan(scale=0.5, n=9, joins_by_kernel=True), grad=True
    )  # a fresh graph for lse
    want_lse = unfused_float64(*clean, scale=0.5)[2]
    g = torch.Generator().manual_seed(7)
    weights = torch.randn(lse.shape, generator=g, dtype=torch.float64).to(lse.device)
    got = torch.autograd.grad((lse * weights.to(lse.dtype)).sum(), [inputs[i] for i in (0, 1, 3, 4)])
    want = torch.autograd.grad((want_lse * weights).sum(), [clean[i] for i in (0, 1, 3, 4)])
    for a, w in zip(got, want, strict=True):
        assert rel_err(a, w) < TOL
    assert all(_keyed_apart(operands) for operands in backward_operands[1:])


@pytest.mark.parametrize("b", [1, 2])
def test_cudnn_backward_gets_private_keys_and_packed_operands_whatever_it_is_handed(monkeypatch, b):
    """`sdpa_runtime._cudnn_backward` (cuDNN's kernel recorded, computed here by the CPU one): q, k and v in any
    layout reach it private; O, dO and the stats packed, also a model's [b, S, nh, dh] dO and size-1 dims with
    odd strides; the gradients are those of the operands as handed over."""
    import types

    from jointattn.runtime import sdpa_runtime

    calls = []

    def cudnn_backward(grad, q, k, v, out, stats, *rest, scale):
        calls.append((grad, q, k, v, out, stats))
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad, q, k, v, out, stats[..., 0], 0.0, False, scale=scale
        )

    monkeypatch.setattr(
        sdpa_runtime,
        "aten",
        types.SimpleNamespace(_scaled_dot_product_cudnn_attention_backward=cudnn_backward),
    )
    nh, s, dh = 2, 13, 8
    q, k, v = (_model_layout(b, nh, s, dh, i).float().cpu() for i in range(3))
    out, lse = torch._scaled_dot_product_flash_attention_for_cpu(q, k, v, scale=0.4)
    grad = _model_layout(b, nh, s, dh, 3).float().cpu()  # a model's dO: [b, S, nh, dh] in memory
    got = sdpa_runtime._cudnn_backward(grad, q, k, v, out.transpose(1, 2).contiguous().transpose(1, 2),
                                       lse.reshape(b, nh, s, 1), s, 0.4)  # fmt: skip
    ((g_, q_, k_, v_, o_, stats_),) = calls
    assert all(join.is_private(t) for t in (q_, k_, v_))
    for t in (g_, o_, stats_):
        assert t.stride() == torch.empty(t.shape).stride()
    want = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        grad, q, k, v, out, lse, 0.0, False, scale=0.4
    )
    for a, w in zip(got, want, strict=True):
        assert torch.allclose(a, w, atol=1e-6)


def test_the_shortcuts_joined_sets_are_differentiable_as_cat(monkeypatch, kernel_forced):
    """The eager shortcut's training call (`_TrainingSdpa`): gradients are the slices of the joined ones."""
    inputs = [t.requires_grad_() for t in joint_inputs(2, 2, 9, 5, 8, seed=4, device=DEVICE, dtype=DTYPE)]
    plan = eager_sdpa.Plan(scale=0.5, n=9, joins_by_kernel=True)
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


def test_a_backward_takes_the_forwards_kernel_without_asking_pytorchs_choice_again(monkeypatch):
    """`attention_backward(..., first=)`: the forward's kernel first, then the others; PyTorch's choice is asked
    only without one, or once a kernel has refused a call (then the refused one is left out)."""
    from jointattn.runtime import sdpa_runtime

    asked = []
    monkeypatch.setattr(torch, "_fused_sdp_choice", lambda *a, **k: asked.append(1) or 1)  # 1: flash
    q = torch.empty(1, 1, 4, 8)
    assert sdpa_runtime._backward_order("cudnn", q, q, q, 1.0) == ("cudnn", "flash", "efficient")
    assert sdpa_runtime._backward_order("efficient", q, q, q, 1.0)[0] == "efficient"
    assert not asked
    assert sdpa_runtime._backward_order(None, q, q, q, 1.0) == ("flash", "cudnn", "efficient")
    assert asked == [1]
    monkeypatch.setattr(sdpa_runtime, "_BROKEN", {("cudnn", "backward", q.dtype, 8)})
    assert sdpa_runtime._backward_order("cudnn", q, q, q, 1.0) == ("flash", "efficient")
