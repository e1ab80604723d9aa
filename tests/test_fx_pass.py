"""The FX fusion pass on hand-written blocks: every form real code writes is fused, everything that is not
joint attention is left alone, and the compiled block computes what eager computes.

Each case is a plain module; `run_case` compiles it with the backend (eager inner compiler: this file tests
the pass; test_backend.py covers inductor), counts `jointattn::joint_attention` calls with the profiler,
and compares with eager on fresh random inputs.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import count_op_calls

B, H, N, L, D = 2, 3, 13, 5, 8  # N, L: no tile multiples


def bhsd(s, seed):
    return torch.randn(B, H, s, D, generator=torch.Generator().manual_seed(seed))


def bshd(s, seed):
    return torch.randn(B, s, H, D, generator=torch.Generator().manual_seed(seed))


def run_case(module, inputs, *, fused, op="jointattn::joint_attention", dynamic=None):
    from jointattn.compiler.backend import REPORTS

    compiled = torch.compile(module, backend="jointattn", options={"inner": "eager"}, dynamic=dynamic)
    expected = module(*inputs)
    compiled(*inputs)  # compile outside the profiler
    got, calls = count_op_calls(compiled, *inputs, op=op)
    assert calls == fused, f"{calls} {op} calls, expected {fused}\n{REPORTS[-1]}"
    for e, g in zip(
        expected if isinstance(expected, tuple) else (expected,), got if isinstance(got, tuple) else (got,)
    ):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    return REPORTS[-1]


# --- forms that are joint attention ------------------------------------------------------------------


class CatBHSDSlice(torch.nn.Module):
    """SD3: image first, cat on [B,H,S,D] dim 2, output sliced after transpose/reshape/to."""

    def forward(self, q, k, v, eq, ek, ev):
        n = q.shape[2]
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], dim=2),
            torch.cat([k, ek], dim=2),
            torch.cat([v, ev], dim=2),
            dropout_p=0.0,
            is_causal=False,
        )
        o = o.transpose(1, 2).reshape(q.shape[0], -1, H * D).to(q.dtype)
        return o[:, :n], o[:, n:]


class TextFirstNegativeDimSplit(torch.nn.Module):
    """Text first, negative cat dim, positional SDPA with scale, `split_with_sizes` after flatten."""

    def forward(self, q, k, v, eq, ek, ev):
        out = F.scaled_dot_product_attention(
            torch.cat([eq, q], -2),
            torch.cat([ek, k], -2),
            torch.cat([ev, v], -2),
            None,
            0.0,
            False,
            scale=0.25,
        )
        text, image = out.permute(0, 2, 1, 3).flatten(2, 3).split_with_sizes([eq.shape[2], q.shape[2]], dim=1)
        return image, text


class CatBSHDTransposeNarrow(torch.nn.Module):
    """[B,S,H,D] concat then transpose, keyword SDPA, outputs by `narrow` and `Tensor.split`."""

    def forward(self, q, k, v, eq, ek, ev):
        qq, kk, vv = (torch.cat(p, dim=1).transpose(1, 2) for p in ((q, eq), (k, ek), (v, ev)))
        o = F.scaled_dot_product_attention(
            query=qq, key=kk, value=vv, attn_mask=None, dropout_p=0.0, scale=None
        )
        o = o.transpose(1, 2)
        first, second = o.split(N, dim=1)
        return o.narrow(1, 0, N) * 2, second


class EqualSetsChunk(torch.nn.Module):
    """Equal-length sets split back with `chunk`."""

    def forward(self, q, k, v, eq, ek, ev):
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2)
        )
        a, b = o.chunk(2, dim=2)
        return a, b


def rope(x, cos, sin):
    """diffusers' apply_rotary_emb(use_real_unbind_dim=-1, sequence_dim=1)."""
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    real, imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
    rotated = torch.stack([-imag, real], dim=-1).flatten(3)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class FluxRope(torch.nn.Module):
    """Flux: text first, cat on [B,S,H,D], RoPE on the whole concatenated q/k, permute, split_with_sizes."""

    def forward(self, q, k, v, eq, ek, ev, cos, sin):
        qq = rope(torch.cat([eq, q], dim=1), cos, sin)
        kk = rope(torch.cat([ek, k], dim=1), cos, sin)
        vv = torch.cat([ev, v], dim=1)
        o = F.scaled_dot_product_attention(
            *(x.permute(0, 2, 1, 3) for x in (qq, kk, vv)), attn_mask=None, dropout_p=0.0, is_causal=False
        )
        o = o.permute(0, 2, 1, 3).flatten(2, 3).to(q.dtype)
        text, image = o.split_with_sizes([eq.shape[1], o.shape[1] - eq.shape[1]], dim=1)
        return image, text


class OnlyImageUsed(CatBHSDSlice):
    """SD3's last block (context_pre_only): only the image part is used afterwards."""

    def forward(self, *args):
        return super().forward(*args)[0]


class CatAlsoReturned(torch.nn.Module):
    """The concatenated q is used elsewhere too: the fusion happens, that concat stays for its other user."""

    def forward(self, q, k, v, eq, ek, ev):
        qq = torch.cat([q, eq], 2)
        o = F.scaled_dot_product_attention(qq, torch.cat([k, ek], 2), torch.cat([v, ev], 2))
        return o[:, :, : q.shape[2]], o[:, :, q.shape[2] :], qq.sum()


class WholeOutputUsed(torch.nn.Module):
    """No split: the whole output is consumed; it is re-joined from the two outputs."""

    def forward(self, q, k, v, eq, ek, ev):
        return F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2)
        ).sum(1)


class PositionDependentOperand(torch.nn.Module):
    """k = cat + something that mixes positions: fused, the mixed term sliced per token set (still exact)."""

    def forward(self, q, k, v, eq, ek, ev):
        kk = torch.cat([k, ek], 2)
        o = F.scaled_dot_product_attention(torch.cat([q, eq], 2), kk + kk.flip(2), torch.cat([v, ev], 2))
        return o[:, :, :N], o[:, :, N:]


CAT_INPUTS = lambda: (bhsd(N, 1), bhsd(N, 2), bhsd(N, 3), bhsd(L, 4), bhsd(L, 5), bhsd(L, 6))


@pytest.mark.parametrize(
    "module,inputs",
    [
        (CatBHSDSlice(), CAT_INPUTS),
        (TextFirstNegativeDimSplit(), CAT_INPUTS),
        (
            CatBSHDTransposeNarrow(),
            lambda: (bshd(N, 1), bshd(N, 2), bshd(N, 3), bshd(L, 4), bshd(L, 5), bshd(L, 6)),
        ),
        (EqualSetsChunk(), lambda: (bhsd(N, 1), bhsd(N, 2), bhsd(N, 3), bhsd(N, 4), bhsd(N, 5), bhsd(N, 6))),
        (
            FluxRope(),
            lambda: (
                bshd(N, 1),
                bshd(N, 2),
                bshd(N, 3),
                bshd(L, 4),
                bshd(L, 5),
                bshd(L, 6),
                torch.randn(N + L, D),
                torch.randn(N + L, D),
            ),
        ),
        (OnlyImageUsed(), CAT_INPUTS),
        (CatAlsoReturned(), CAT_INPUTS),
        (WholeOutputUsed(), CAT_INPUTS),
        (PositionDependentOperand(), CAT_INPUTS),
    ],
    ids=[
        "sd3-slice",
        "text-first-split",
        "bshd-narrow",
        "chunk",
        "flux-rope",
        "one-part",
        "cat-reused",
        "whole",
        "sliced-operand",
    ],
)
def test_fused(module, inputs):
    report = run_case(module, inputs(), fused=1)
    assert report.fused == 1


def test_flux_rope_leaves_no_concat_and_no_whole_sequence_rope():
    """The concat moved below RoPE and vanished: RoPE now runs per token set on slices of cos/sin."""
    from jointattn.passes.fx import fuse_joint_attention

    graphs = []

    def backend(gm, example_inputs):
        fuse_joint_attention(gm)
        graphs.append(gm)
        return gm.forward

    inputs = (
        bshd(N, 1),
        bshd(N, 2),
        bshd(N, 3),
        bshd(L, 4),
        bshd(L, 5),
        bshd(L, 6),
        torch.randn(N + L, D),
        torch.randn(N + L, D),
    )
    torch.compile(FluxRope(), backend=backend)(*inputs)
    targets = [n.target for n in graphs[0].graph.nodes if n.op in ("call_function", "call_method")]
    assert torch.cat not in targets, targets
    assert targets.count("unbind") == 4  # q and k, each per token set


def test_text_first_outputs_come_back_in_model_order():
    report = run_case(TextFirstNegativeDimSplit(), CAT_INPUTS(), fused=1)
    assert "text-first" in str(report)


# --- key-padding masks -------------------------------------------------------------------------------


class ProvenPrefixMask(torch.nn.Module):
    """Boolean key-padding mask built from valid lengths: fused with those lengths, no mask at run time."""

    def forward(self, q, k, v, eq, ek, ev, text_lengths):
        text_valid = torch.arange(eq.shape[2])[None, :] < text_lengths[:, None]
        image_valid = torch.ones(q.shape[0], q.shape[2], dtype=torch.bool)
        mask = torch.cat([image_valid, text_valid], dim=1)[:, None, None, :]
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2), attn_mask=mask
        )
        return o[:, :, : q.shape[2]], o[:, :, q.shape[2] :]


class MaskInput(torch.nn.Module):
    """A mask that arrives as an input (bool or additive [b,1,1,S]): checked at run time."""

    def forward(self, q, k, v, eq, ek, ev, mask):
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2), attn_mask=mask
        )
        return o[:, :, : q.shape[2]], o[:, :, q.shape[2] :]


def test_proven_prefix_mask_becomes_valid_lengths():
    report = run_case(ProvenPrefixMask(), (*CAT_INPUTS(), torch.tensor([3, 0])), fused=1)
    assert "valid lengths proven" in str(report)


def _padding_mask(image_lengths, text_lengths, additive, prefix=True):
    valid = torch.cat(
        [
            torch.arange(N)[None] < torch.tensor(image_lengths)[:, None],
            torch.arange(L)[None] < torch.tensor(text_lengths)[:, None],
        ],
        1,
    )
    if not prefix:
        valid[:, N + 1] = False  # a hole inside the text tokens
        valid[:, N] = True
    mask = valid[:, None, None, :]
    return torch.zeros(mask.shape).masked_fill(~mask, float("-inf")) if additive else mask


@pytest.mark.parametrize("additive", [False, True], ids=["bool", "additive"])
def test_prefix_mask_input_checked_at_run_time_uses_the_lengths(additive):
    mask = _padding_mask([N, 9], [2, L], additive)
    run_case(MaskInput(), (*CAT_INPUTS(), mask), fused=1, op="jointattn::masked_joint_attention")
    compiled = torch.compile(MaskInput(), backend="jointattn", options={"inner": "eager"})
    compiled(*CAT_INPUTS(), mask)
    _, inner_calls = count_op_calls(compiled, *CAT_INPUTS(), mask)
    assert inner_calls == 1  # the prefix check passed: the length-based op ran


def test_non_prefix_mask_takes_the_exact_path():
    mask = _padding_mask([N, 9], [3, L], additive=False, prefix=False)
    run_case(MaskInput(), (*CAT_INPUTS(), mask), fused=1, op="jointattn::masked_joint_attention")
    compiled = torch.compile(MaskInput(), backend="jointattn", options={"inner": "eager"})
    compiled(*CAT_INPUTS(), mask)
    _, inner_calls = count_op_calls(compiled, *CAT_INPUTS(), mask)
    assert inner_calls == 0


# --- what is not joint attention ---------------------------------------------------------------------


def _sdpa_module(**sdpa_kwargs):
    class Block(torch.nn.Module):
        def forward(self, q, k, v, eq, ek, ev):
            o = F.scaled_dot_product_attention(
                torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2), **sdpa_kwargs
            )
            return o[:, :, :N], o[:, :, N:]

    return Block()


class MisalignedSlice(torch.nn.Module):
    def forward(self, q, k, v, eq, ek, ev):
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2)
        )
        return o[:, :, : N - 1], o[:, :, N - 1 :]


class ThreeSets(torch.nn.Module):
    def forward(self, q, k, v, eq, ek, ev):
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq, eq], 2), torch.cat([k, ek, ek], 2), torch.cat([v, ev, ev], 2)
        )
        return o[:, :, :N]


class KeyNotConcat(torch.nn.Module):
    """k mixes positions (flip): not position-wise, so not seen as two token sets."""

    def forward(self, q, k, v, eq, ek, ev):
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2).flip(2), torch.cat([v, ev], 2)
        )
        return o[:, :, :N]


class Gqa(torch.nn.Module):
    def forward(self, q, k, v, eq, ek, ev):
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2)[:, :1], torch.cat([v, ev], 2)[:, :1], enable_gqa=True
        )
        return o[:, :, :N]


class QueryVaryingMask(torch.nn.Module):
    def forward(self, q, k, v, eq, ek, ev, mask):
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2), attn_mask=mask
        )
        return o[:, :, :N]


@pytest.mark.parametrize(
    "module,extra,reason",
    [
        (_sdpa_module(is_causal=True), (), "is_causal=True"),
        (_sdpa_module(dropout_p=0.1), (), "dropout_p=0.1"),
        (MisalignedSlice(), (), "crosses the concat boundary"),
        (ThreeSets(), (), "concat of 3 token sets"),
        (KeyNotConcat(), (), "k is not a concat of token sets"),
        (Gqa(), (), "enable_gqa=True"),
        (QueryVaryingMask(), (torch.rand(B, 1, N + L, N + L) > 0.3,), "varies over queries"),
    ],
    ids=["causal", "dropout", "misaligned", "three-sets", "key-not-cat", "gqa", "query-mask"],
)
def test_not_fused(module, extra, reason):
    from jointattn.compiler.backend import REPORTS

    inputs = (*CAT_INPUTS(), *extra)
    compiled = torch.compile(module, backend="jointattn", options={"inner": "eager"})
    compiled(*inputs)
    got, calls = count_op_calls(compiled, *inputs)
    assert calls == 0
    assert reason in str(REPORTS[-1]), str(REPORTS[-1])
    if "dropout" not in reason:  # dropout draws random numbers: nothing to compare
        want = module(*inputs)
        for g, w in zip(
            got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)
        ):
            torch.testing.assert_close(g, w)
