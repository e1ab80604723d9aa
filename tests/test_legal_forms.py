"""Legal programs the op does not take as they are (issue 16): fused correctly or refused with a reason, never a
crash of the backend, of `jointattn.explain` or of `jointattn.export`; and double backward.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradgradcheck

import jointattn

N, L, H, D = 6, 3, 2, 8


def _t(b, h, s, d, seed, dtype=torch.float32):
    return torch.randn(b, h, s, d, generator=torch.Generator().manual_seed(seed)).to(dtype)


def joint_block(q, k, v, jq, jk, jv):
    o = F.scaled_dot_product_attention(torch.cat([q, jq], 2), torch.cat([k, jk], 2), torch.cat([v, jv], 2))
    return o[:, :, : q.shape[2]], o[:, :, q.shape[2] :]


def promoting_block(q, k, v, jq, jk, jv):
    """Half image tokens and float text tokens: the concat promotes to float."""
    return joint_block(q.half(), k.half(), v.half(), jq, jk, jv)


def _six(shapes, dtype=torch.float32):
    return [_t(*s, seed=i, dtype=dtype) for i, s in enumerate(shapes)]


def _sets(b=(2, 2, 2), h=(H, H, H), d=(D, D, D), l=L):  # noqa: E741
    spatial = [(b[i], h[i], N, d[i]) for i in range(3)]
    joint = [(b[i], h[i], l, d[i]) for i in range(3)]
    return spatial + joint


# name -> (block, inputs, fused?, words the reason must hold when refused)
CASES = {
    "concat-promotes-dtypes": (promoting_block, _six(_sets()), True, None),
    "batch-broadcast-kv": (joint_block, _six(_sets(b=(2, 1, 1))), False, "batch sizes differ"),
    "batch-broadcast-v": (joint_block, _six(_sets(b=(2, 2, 1))), False, "batch sizes differ"),
    "head-broadcast": (joint_block, _six(_sets(h=(H, 1, 1))), False, "heads differ"),
    "value-head-dim-differs": (joint_block, _six(_sets(d=(D, D, 4))), False, "head dims differ"),
    "head-dim-0": (joint_block, _six(_sets(d=(0, 0, 0))), False, "head dim 0"),
    "no-tokens": (joint_block, _six([(2, H, 0, D)] * 3 + [(2, H, 0, D)] * 3), False, "the op rejects"),
    "empty-text": (joint_block, _six(_sets(l=0)), True, None),
}


@pytest.mark.parametrize("name", CASES)
def test_compile_explain_and_export_never_crash(name):
    from jointattn.compiler.backend import REPORTS

    block, inputs, fused, reason = CASES[name]
    want = block(*inputs)
    got = torch.compile(block, backend="jointattn", options={"inner": "eager"})(*inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    (decision,) = REPORTS[-1].decisions
    assert decision.fused == fused, str(decision)
    if reason is not None:
        assert reason in decision.reason, decision.reason

    assert jointattn.explain(block, *inputs).fused == int(fused)

    class Block(torch.nn.Module):
        def forward(self, *args):
            return block(*args)

    exported = jointattn.export(Block(), tuple(inputs))
    assert exported.report.fused == int(fused)
    for g, w in zip(exported.program.module()(*inputs), want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_a_refused_insertion_leaves_no_op_behind():
    """The op rejected by its fake kernel while being inserted must not stay in the graph as a dead call that
    then runs (and raises) with the graph."""
    from helpers import fx_fused_graph

    inputs = _six(_sets(b=(2, 2, 1)))
    gm, _, report = fx_fused_graph(lambda *a: joint_block(*a), inputs)
    assert report.fused == 0
    assert not any("joint_attention" in str(n.target) for n in gm.graph.nodes)


def test_head_dim_0_is_a_clear_error_of_the_op():
    with pytest.raises(ValueError, match="dh .* must be at least 1"):
        jointattn.joint_attention(*_six(_sets(d=(0, 0, 0))))


@pytest.mark.parametrize("pad", [False, True], ids=["nopad", "pad"])
def test_double_backward_matches_numerical(pad):
    """Second derivatives of out and joint_out, padding on both sets, float64; the gradient of lse is checked
    to first order in test_op.py (lse is float32, too coarse for numerical second differences)."""
    inputs = [t.double().requires_grad_() for t in _six([(2, 2, 5, 4)] * 3 + [(2, 2, 3, 4)] * 3)]
    ln, ll = (torch.tensor([5, 2]), torch.tensor([1, 3])) if pad else (None, None)

    def outputs(*tensors):
        out, joint_out, _ = jointattn.joint_attention(*tensors, logical_n=ln, logical_l=ll)
        return out, joint_out

    assert gradgradcheck(outputs, inputs)


def test_double_backward_through_lse_matches_the_unfused_graph():
    inputs = [t.double().requires_grad_() for t in _six([(1, 2, 5, 4)] * 3 + [(1, 2, 3, 4)] * 3)]

    def loss(lse):
        return (lse.double() ** 2).sum()

    _, _, lse = jointattn.joint_attention(*inputs)
    (g,) = torch.autograd.grad(loss(lse), inputs[0], create_graph=True)
    (gg,) = torch.autograd.grad(g.pow(2).sum(), inputs[3])

    q, k = (torch.cat([a, b], 2) for a, b in ((inputs[0], inputs[3]), (inputs[1], inputs[4])))
    ref_lse = torch.logsumexp((q @ k.transpose(-1, -2)) * 4**-0.5, -1)
    (g_ref,) = torch.autograd.grad(loss(ref_lse), inputs[0], create_graph=True)
    (gg_ref,) = torch.autograd.grad(g_ref.pow(2).sum(), inputs[3])
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)  # lse is stored in float32
    torch.testing.assert_close(gg, gg_ref, rtol=1e-4, atol=1e-5)


def test_double_backward_of_the_prologue_op():
    """The op's second derivatives equal those of the formula it implements (which computes its norm in float32,
    so numerical second differences would measure that rounding instead)."""
    from jointattn.runtime.ops.rms_norm_rope import reference

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 2, 4, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(4, dtype=torch.float64, generator=g, requires_grad=True)
    cos, sin = (torch.randn(3, 2, 2, dtype=torch.float64, generator=g) for _ in range(2))
    cotangent = torch.randn(1, 3, 2, 4, dtype=torch.float64, generator=g, requires_grad=True)

    def second_derivatives(fn):
        grads = torch.autograd.grad(fn(x, w, 1e-6, cos, sin), (x, w), cotangent, create_graph=True)
        return torch.autograd.grad(sum(t.pow(2).sum() for t in grads), (x, w, cotangent))

    got = second_derivatives(torch.ops.jointattn.rms_norm_rope)
    want = second_derivatives(reference)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
