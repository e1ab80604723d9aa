"""The `jointattn` torch.compile backend: inductor behind the pass, dynamic shapes, training, options, explain."""

import pytest
import torch
import torch.nn.functional as F
from helpers import count_op_calls

import jointattn


class JointBlock(torch.nn.Module):
    """Projections, heads, concat, SDPA, split back, output projections: a joint block in miniature."""

    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.text_qkv = torch.nn.Linear(dim, 3 * dim)
        self.out = torch.nn.Linear(dim, dim)
        self.text_out = torch.nn.Linear(dim, dim)

    def forward(self, image, text):
        b, n, dim = image.shape
        split = lambda x: x.view(b, -1, self.heads, dim // self.heads).transpose(1, 2)
        q, k, v = (split(t) for t in self.qkv(image).chunk(3, dim=-1))
        tq, tk, tv = (split(t) for t in self.text_qkv(text).chunk(3, dim=-1))
        o = F.scaled_dot_product_attention(
            torch.cat([q, tq], 2), torch.cat([k, tk], 2), torch.cat([v, tv], 2)
        )
        o = o.transpose(1, 2).reshape(b, -1, dim)
        return self.out(o[:, :n]), self.text_out(o[:, n:])


def _inputs(b=2, n=13, l=5, dim=16, seed=0):  # noqa: E741
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, dim, generator=g), torch.randn(b, l, dim, generator=g)


def test_inductor_compiles_the_fused_graph():
    block = JointBlock().eval()
    compiled = torch.compile(block, backend="jointattn")
    inputs = _inputs()
    with torch.no_grad():
        compiled(*inputs)
        got, calls = count_op_calls(compiled, *inputs)
        want = block(*inputs)
    assert calls == 1
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_dynamic_shapes_recompile_correctly():
    """New text and image lengths: either one dynamic graph or a recompile; always the right numbers."""
    from jointattn.compiler.backend import REPORTS

    block = JointBlock().eval()
    compiled = torch.compile(block, backend="jointattn", options={"inner": "eager"}, dynamic=True)
    before = len(REPORTS)
    with torch.no_grad():
        for n, l in ((13, 5), (9, 7), (20, 1)):  # noqa: E741
            inputs = _inputs(n=n, l=l, seed=n)
            for g, w in zip(compiled(*inputs), block(*inputs)):
                torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    assert all(r.fused == 1 for r in REPORTS[before:]) and len(REPORTS) > before


def test_training_through_the_compiled_block_matches_eager_gradients():
    block = JointBlock()
    compiled = torch.compile(block, backend="jointattn")
    image, text = _inputs(seed=3)
    grads = []
    for model in (block, compiled):
        model.zero_grad()
        a, b = model(image, text)
        (a.square().sum() + (b * 3).sum()).backward()
        grads.append([p.grad.clone() for p in block.parameters()])
    for eager, fused in zip(*grads):
        torch.testing.assert_close(fused, eager, rtol=1e-4, atol=1e-5)


def test_runtime_option_reaches_the_op():
    block = JointBlock().eval()
    compiled = torch.compile(block, backend="jointattn", options={"runtime": "reference", "inner": "eager"})
    with torch.no_grad():
        compiled(*_inputs())
        _, calls = count_op_calls(compiled, *_inputs())
    assert calls == 1


@pytest.mark.parametrize(
    "options,message",
    [
        ({"runtime": "gpu"}, "options\\['runtime'\\] must be one of"),
        ({"inner": "aot"}, "options\\['inner'\\] must be one of"),
        ({"speed": 1}, "unknown option"),
    ],
    ids=["runtime", "inner", "unknown"],
)
def test_bad_options_are_named(options, message):
    compiled = torch.compile(JointBlock(), backend="jointattn", options=options)
    with pytest.raises(Exception, match=message):
        compiled(*_inputs())


def test_explain_lists_each_attention_with_a_reason():
    class TwoAttentions(JointBlock):
        def forward(self, image, text):
            a, b = super().forward(image, text)
            causal = F.scaled_dot_product_attention(a[:, None], a[:, None], a[:, None], is_causal=True)
            return causal, b

    report = jointattn.explain(TwoAttentions().eval(), *_inputs())
    text = str(report)
    assert report.fused == 1 and len(report.decisions) == 2, text
    assert "is_causal=True" in text and "token sets [13, 5]" in text


def test_explain_names_the_path_each_pass_of_each_fused_op_takes():
    """One answer for the runtime and explain: the dispatcher's plan, forward and (inputs requiring grad)
    backward."""
    from jointattn.runtime.dispatch import choose, describe_meta

    block = JointBlock()
    image, text = _inputs()
    report = jointattn.explain(block, image, text)
    (plan,) = report.dispatch
    q = torch.empty(2, 2, 13, 8)
    jq = torch.empty(2, 2, 5, 8)
    assert f"forward -> {choose(describe_meta(q, jq, False))}" in plan
    assert f"backward -> {choose(describe_meta(q, jq, False, backward=True))}" in plan
    assert "dispatch " in str(report)
