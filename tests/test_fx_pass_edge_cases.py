"""Cases where a fusion could silently compute something else, each once found by review: the compiled block
must equal eager whether it is fused or not (and say why not when it is not).

Masks whose dtype changes meaning, learned biases, `squeeze()` on a length-1 token set, RoPE tables shared by
differently split attentions, symbolic sub-ranges, variants of Mochi's per-sample loop, and padded keys
whose storage holds NaN.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import count_op_calls, joint_inputs

import jointattn

B, H, N, L, D = 2, 3, 13, 5, 8


def _bhsd(b, s, seed):
    return torch.randn(b, H, s, D, generator=torch.Generator().manual_seed(seed))


def _inputs(b=B, n=N, l=L):  # noqa: E741
    return tuple(_bhsd(b, s, i) for i, s in enumerate((n, n, n, l, l, l)))


def _cat3(q, k, v, eq, ek, ev, first_text=False):
    pair = (lambda a, b: [b, a]) if first_text else (lambda a, b: [a, b])
    return (torch.cat(pair(q, eq), 2), torch.cat(pair(k, ek), 2), torch.cat(pair(v, ev), 2))


def assert_same_as_eager(module, *inputs, dynamic=None):
    from jointattn.compiler.backend import REPORTS

    compiled = torch.compile(module, backend="jointattn", options={"inner": "eager"}, dynamic=dynamic)
    want = module(*inputs)
    got = compiled(*inputs)
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    return REPORTS[-1]


class MaskedBlock(torch.nn.Module):
    def __init__(self, make_mask):
        super().__init__()
        self.make_mask = make_mask

    def forward(self, q, k, v, eq, ek, ev, text_lengths):
        mask = self.make_mask(q, text_lengths)
        o = F.scaled_dot_product_attention(*_cat3(q, k, v, eq, ek, ev), attn_mask=mask)
        return o[:, :, :N], o[:, :, N:]


def _prefix(q, lengths):
    return torch.cat([torch.ones(B, N, dtype=torch.bool), torch.arange(L)[None, :] < lengths[:, None]], 1)


@pytest.mark.parametrize(
    "make_mask",
    [
        # bool -> float: an additive +1/+0 bias, every key counts
        lambda q, n: _prefix(q, n).to(q.dtype)[:, None, None, :],
        # where(valid, 0, -inf).bool(): True exactly on the padded keys
        lambda q, n: torch.cat(
            [
                torch.ones(B, N, dtype=torch.bool),
                torch.where(torch.arange(L)[None, :] < n[:, None], 0.0, float("-inf")).bool(),
            ],
            1,
        )[:, None, None, :],
        # where(valid, 0, -inf) through an integer and back: -inf becomes a finite bias, and sample 1 has no
        # valid key, so SDPA averages V over every key there (valid lengths would say 0).
        lambda q, n: (
            torch.where(
                torch.cat(
                    [
                        torch.arange(N)[None, :] < torch.tensor([9, 0])[:, None],
                        torch.arange(L)[None, :] < torch.tensor([3, 0])[:, None],
                    ],
                    1,
                ),
                0.0,
                float("-inf"),
            )
            .to(torch.int64)
            .to(q.dtype)[:, None, None, :]
        ),
    ],
    ids=["bool-to-float", "additive-to-bool", "additive-through-int64"],
)
def test_a_cast_that_changes_what_the_mask_means_is_not_read_as_padding(make_mask):
    report = assert_same_as_eager(MaskedBlock(make_mask), *_inputs(), torch.tensor([3, 1]))
    assert "proven" not in str(report)


def test_a_learned_bias_keeps_its_gradient():
    class Biased(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.randn(1, 1, 1, N + L))

        def forward(self, q, k, v, eq, ek, ev):
            return F.scaled_dot_product_attention(*_cat3(q, k, v, eq, ek, ev), attn_mask=self.bias)[:, :, :N]

    module = Biased()
    report = assert_same_as_eager(module, *_inputs())
    assert "requires grad" in str(report)
    compiled = torch.compile(module, backend="jointattn", options={"inner": "eager"})
    grads = []
    for fn in (module, compiled):
        module.bias.grad = None
        fn(*_inputs()).sum().backward()
        grads.append(module.bias.grad.clone())
    torch.testing.assert_close(grads[1], grads[0])


def test_squeeze_of_a_length_one_token_set():
    class Squeezed(torch.nn.Module):
        def forward(self, q, k, v, eq, ek, ev):
            o = F.scaled_dot_product_attention(*_cat3(q, k, v, eq, ek, ev)).squeeze()  # b = 1: [H, S, D]
            return o[:, :N] * 2, o[:, N:] * 2

    assert_same_as_eager(Squeezed(), *_inputs(b=1, l=1))


def _rope(x, cos, sin):
    return x * cos[None, None] + x.flip(-1) * sin[None, None]


def test_rope_tables_sliced_for_k_before_q_and_for_two_different_splits():
    class TwoAttentions(torch.nn.Module):
        def forward(self, q, k, v, eq, ek, ev, cos, sin):
            kk = _rope(torch.cat([k, ek], 2), cos, sin)  # k first: the slices of cos/sin are made for k
            qq = _rope(torch.cat([q, eq], 2), cos, sin)
            first = F.scaled_dot_product_attention(qq, kk, torch.cat([v, ev], 2))
            # the same tables, split 10 | 8 this time
            q2, k2, v2 = (x[:, :, :10] for x in (qq, kk, first))
            e2 = [x[:, :, 10:] for x in (qq, kk, first)]
            second = F.scaled_dot_product_attention(
                _rope(torch.cat([q2, e2[0]], 2), cos, sin),
                torch.cat([k2, e2[1]], 2),
                torch.cat([v2, e2[2]], 2),
            )
            return first[:, :, :N], first[:, :, N:], second[:, :, :10], second[:, :, 10:]

    assert_same_as_eager(TwoAttentions(), *_inputs(), torch.randn(N + L, D), torch.randn(N + L, D))


def test_a_symbolic_sub_range_of_a_token_set_is_refused_not_miscomputed():
    class SubRange(torch.nn.Module):
        def forward(self, q, k, v, eq, ek, ev):
            n = q.shape[2]
            o = F.scaled_dot_product_attention(*_cat3(q, k, v, eq, ek, ev))
            return o[:, :, 1 : n - 1], o[:, :, n:]

    for n, l in ((13, 5), (9, 7)):  # noqa: E741
        report = assert_same_as_eager(SubRange(), *_inputs(n=n, l=l), dynamic=True)
    assert "symbolic sub-range" in str(report)


def _stock_loop(q, k, v, eq, ek, ev, mask, *, text_first=False, extra_pad=0, row_2d=False):
    """Mochi's per-sample unpad loop, with the variants a matcher could get wrong."""
    outs = []
    n, total = q.shape[2], q.shape[2] + eq.shape[2]
    for i in range(q.shape[0]):
        idx = torch.nonzero(mask[i][None, :] if row_2d else mask[i]).flatten()
        parts = [(x[i : i + 1], e[i : i + 1, :, idx, :]) for x, e in ((q, eq), (k, ek), (v, ev))]
        parts = [[b, a] if text_first else [a, b] for a, b in parts]
        o = F.scaled_dot_product_attention(*(torch.cat(p, 2) for p in parts))
        outs.append(F.pad(o, (0, 0, 0, total + extra_pad - o.size(2))))
    out = torch.cat(outs, 0)
    return out[:, :, :n], out[:, :, n:]


@pytest.mark.parametrize(
    "variant",
    [dict(), dict(text_first=True), dict(extra_pad=3), dict(row_2d=True)],
    ids=["stock", "text-first", "padded-longer", "nonzero-of-2d-row"],
)
def test_mochi_loop_variants(variant):
    class Loop(torch.nn.Module):
        def forward(self, q, k, v, eq, ek, ev, mask):
            return _stock_loop(q, k, v, eq, ek, ev, mask, **variant)

    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 1, 0, 0]])
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        assert_same_as_eager(Loop(), *_inputs(), mask)


def test_an_hf_style_mask_that_masks_every_key_of_a_sample():
    """finfo.min everywhere for one sample: SDPA averages V over all keys; so must the fused graph."""
    valid = torch.ones(B, N + L, dtype=torch.bool)
    valid[1] = False
    mask = torch.zeros(B, 1, 1, N + L).masked_fill(~valid[:, None, None, :], torch.finfo(torch.float32).min)

    class Block(torch.nn.Module):
        def forward(self, q, k, v, eq, ek, ev, mask):
            o = F.scaled_dot_product_attention(*_cat3(q, k, v, eq, ek, ev), attn_mask=mask)
            return o[:, :, :N], o[:, :, N:]

    assert_same_as_eager(Block(), *_inputs(), mask)


def test_padded_keys_holding_nan_do_not_reach_the_result():
    q, k, v, jq, jk, jv = joint_inputs(2, 2, 9, 4, 8, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        k[:, :, 6:] = float("nan")
        v[:, :, 6:] = float("nan")
        jv[:, :, 3:] = float("inf")
    out, joint_out, lse = jointattn.joint_attention(
        q, k, v, jq, jk, jv, logical_n=6, logical_l=3, runtime="reference"
    )
    assert torch.isfinite(out).all() and torch.isfinite(joint_out).all() and torch.isfinite(lse).all()
    (out.sum() + joint_out.sum()).backward()
    assert (
        torch.isfinite(q.grad).all()
        and torch.isfinite(k.grad[:, :, :6]).all()
        and torch.isfinite(v.grad[:, :, :6]).all()
    )


def test_the_fused_count_of_the_stock_loop():
    class Loop(torch.nn.Module):
        def forward(self, q, k, v, eq, ek, ev, mask):
            return _stock_loop(q, k, v, eq, ek, ev, mask)

    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        compiled = torch.compile(Loop(), backend="jointattn", options={"inner": "eager"})
        compiled(*_inputs(), mask)
        _, checked = count_op_calls(compiled, *_inputs(), mask, op="jointattn::masked_joint_attention")
    assert checked == 1


@pytest.mark.parametrize(
    "make_mask",
    [
        # finfo.min as "absent", and sample 1 has no valid key at all: SDPA averages V over every key there.
        lambda q, n: torch.where(
            torch.cat(
                [
                    torch.arange(N)[None, :] < torch.tensor([9, 0])[:, None],
                    torch.arange(L)[None, :] < n[:, None],
                ],
                1,
            ),
            0.0,
            torch.finfo(torch.float32).min,
        )[:, None, None, :],
        # 1-D lengths against arange: compared position by position (b == L here), not one length per sample.
        lambda q, n: torch.cat(
            [
                torch.ones(B, N, dtype=torch.bool),
                (torch.arange(L) < torch.tensor([5, 0, 5, 1, 4]))[None, :].expand(B, L),
            ],
            1,
        )[:, None, None, :],
        # arange in bfloat16 is not exact past 256 positions.
        lambda q, n: torch.cat(
            [
                torch.arange(q.shape[2], dtype=torch.bfloat16)[None, :] < torch.tensor([257, 261])[:, None],
                torch.arange(L)[None, :] < n[:, None],
            ],
            1,
        )[:, None, None, :],
        # an exact float32 arange cast to bfloat16 on the way is not exact: a cast counts as much as the arange.
        lambda q, n: torch.cat(
            [
                torch.arange(q.shape[2], dtype=torch.float32).to(torch.bfloat16)[None, :]
                < torch.tensor([257, 261])[:, None],
                torch.arange(L)[None, :] < n[:, None],
            ],
            1,
        )[:, None, None, :],
        # int8 positions wrap past 127: arange(300, int8) < 200 is not a prefix.
        lambda q, n: torch.cat(
            [
                torch.arange(q.shape[2], dtype=torch.int8)[None, :] < torch.tensor([200, 261])[:, None],
                torch.arange(L)[None, :] < n[:, None],
            ],
            1,
        )[:, None, None, :],
    ],
    ids=[
        "finfo-min-empty-sample",
        "lengths-not-a-column",
        "bf16-arange",
        "f32-arange-to-bf16",
        "int8-arange",
    ],
)
def test_masks_that_look_like_lengths_but_are_not(make_mask, request):
    inputs = _inputs(n=300) if "arange" in request.node.callspec.id else _inputs()
    lengths = torch.tensor([3, 0])

    class Block(torch.nn.Module):
        def forward(self, q, k, v, eq, ek, ev, text_lengths):
            o = F.scaled_dot_product_attention(
                *_cat3(q, k, v, eq, ek, ev), attn_mask=make_mask(q, text_lengths)
            )
            return o[:, :, : q.shape[2]], o[:, :, q.shape[2] :]

    report = assert_same_as_eager(Block(), *inputs, lengths)
    assert "proven" not in str(report)


@pytest.mark.parametrize(
    "dtype,converted",
    [
        (torch.float32, torch.float32),
        (torch.float32, torch.float64),
        (torch.uint8, torch.int16),
        (torch.int64, torch.float32),
    ],
    ids=["f32-arange", "f32-arange-to-f64", "uint8-arange-to-int16", "int64-arange-to-f32"],
)
def test_aranges_exact_at_every_step_prove_lengths(dtype, converted):
    n = 250  # within uint8; float32 and float64 hold far more

    class Block(torch.nn.Module):
        def forward(self, q, k, v, eq, ek, ev, text_lengths):
            positions = torch.arange(q.shape[2], dtype=dtype).to(converted)
            mask = torch.cat(
                [
                    positions[None, :] < torch.tensor([200, 250])[:, None],
                    torch.arange(L)[None, :] < text_lengths[:, None],
                ],
                1,
            )[:, None, None, :]
            o = F.scaled_dot_product_attention(*_cat3(q, k, v, eq, ek, ev), attn_mask=mask)
            return o[:, :, :n], o[:, :, n:]

    report = assert_same_as_eager(Block(), *_inputs(n=n), torch.tensor([3, 1]))
    assert "proven" in str(report)
