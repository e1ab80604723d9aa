"""`fuse-joint-attention` on imported modules: every form the FX pass fuses is fused here too, everything that
is not joint attention is left untouched, and the fused module, emitted as Python and run, computes what the
module computes in float64 eager.

Each case is a plain module (the forms of tests/test_fx_pass.py, plus key-padding masks built in the graph).
`run_case` imports it with torch-mlir, runs the pass (both `emit` forms), checks the decisions and that no
SDPA is left, then runs the emitted function (the op with runtime "auto") on fresh random inputs.
"""

import pytest
import torch
import torch.nn.functional as F
from jointattn.compiler.mlir_emit import compile_module
from jointattn.compiler.mlir_import import import_module
from jointattn.compiler.opt_main import run_pipeline
from jointattn.passes.mlir.dialects import parse_module
from jointattn.passes.mlir.fuse_joint_attention import fuse_joint_attention

B, H, N, L, D = 2, 3, 13, 5, 8  # N, L: no tile multiples


def bhsd(s, seed):
    return torch.randn(B, H, s, D, generator=torch.Generator().manual_seed(seed))


def bshd(s, seed):
    return torch.randn(B, s, H, D, generator=torch.Generator().manual_seed(seed))


def cat_inputs(seed=0):
    return tuple(bhsd(s, seed + i) for i, s in enumerate((N, N, N, L, L, L)))


def seq_first_inputs(seed=0):
    return tuple(bshd(s, seed + i) for i, s in enumerate((N, N, N, L, L, L)))


def float64_eager(module, inputs):
    doubled = [x.double() if x.is_floating_point() else x for x in inputs]
    with torch.no_grad():
        out = module.double()(*doubled)
    module.float()
    return out if isinstance(out, tuple) else (out,)


def decisions_of(text, emit="jointattn"):
    return fuse_joint_attention(parse_module(text), emit)


def run_case(module, inputs, *, fused=1, fresh_inputs=None):
    """Import, fuse (both emit forms), run; returns the emit=jointattn text and the decisions."""
    text = import_module(module, *inputs)
    decisions = decisions_of(text)
    assert sum(d.fused for d in decisions) == fused, "\n".join(d.remark() for d in decisions)
    fresh = fresh_inputs() if fresh_inputs else inputs
    want = float64_eager(module, fresh)
    texts = {}
    for emit in ("jointattn", "operator"):
        texts[emit] = run_pipeline(text, f"fuse-joint-attention{{emit={emit}}}")
        assert texts[emit].count("torch.aten.scaled_dot_product_attention") == len(decisions) - fused
        got = compile_module(texts[emit])(*fresh)
        got = got if isinstance(got, tuple) else (got,)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g.double(), w, rtol=1e-4, atol=1e-5)
    return texts["jointattn"], decisions


# --- forms that are joint attention ------------------------------------------------------------------------


class CatBHSDSlice(torch.nn.Module):
    """SD3: image first, cat on [B,H,S,D] dim 2, output sliced after transpose/reshape."""

    def forward(self, q, k, v, eq, ek, ev):
        n = q.shape[2]
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], dim=2), torch.cat([k, ek], dim=2), torch.cat([v, ev], dim=2), dropout_p=0.0
        )
        o = o.transpose(1, 2).reshape(q.shape[0], -1, H * D)
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
    """[B,S,H,D] concat then transpose, outputs by `narrow` and `Tensor.split`."""

    def forward(self, q, k, v, eq, ek, ev):
        qq, kk, vv = (torch.cat(p, dim=1).transpose(1, 2) for p in ((q, eq), (k, ek), (v, ev)))
        o = F.scaled_dot_product_attention(
            query=qq, key=kk, value=vv, attn_mask=None, dropout_p=0.0
        ).transpose(1, 2)
        _, second = o.split(N, dim=1)
        return o.narrow(1, 0, N) * 2, second


class EqualSetsChunk(torch.nn.Module):
    def forward(self, q, k, v, eq, ek, ev):
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2)
        )
        return o.chunk(2, dim=2)


def rope(x, cos, sin):
    """diffusers' apply_rotary_emb(use_real_unbind_dim=-1, sequence_dim=1)."""
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    real, imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
    rotated = torch.stack([-imag, real], dim=-1).flatten(3)
    return (x * cos + rotated * sin).to(x.dtype)


class FluxRope(torch.nn.Module):
    """Flux: text first, cat on [B,S,H,D], RoPE on the whole concatenated q/k, permute, split_with_sizes."""

    def forward(self, q, k, v, eq, ek, ev, cos, sin):
        qq = rope(torch.cat([eq, q], dim=1), cos, sin)
        kk = rope(torch.cat([ek, k], dim=1), cos, sin)
        vv = torch.cat([ev, v], dim=1)
        o = F.scaled_dot_product_attention(*(x.permute(0, 2, 1, 3) for x in (qq, kk, vv)))
        o = o.permute(0, 2, 1, 3).flatten(2, 3)
        text, image = o.split_with_sizes([eq.shape[1], o.shape[1] - eq.shape[1]], dim=1)
        return image, text


class OnlyImageUsed(CatBHSDSlice):
    """SD3's last block (context_pre_only): only the image part is used afterwards."""

    def forward(self, *args):
        return super().forward(*args)[0]


class CatAlsoReturned(torch.nn.Module):
    """The concatenated q is used elsewhere too: fused, that concat stays for its other user."""

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
    """k = cat + something that mixes positions: fused, the mixed term sliced per token set."""

    def forward(self, q, k, v, eq, ek, ev):
        kk = torch.cat([k, ek], 2)
        o = F.scaled_dot_product_attention(torch.cat([q, eq], 2), kk + kk.flip(2), torch.cat([v, ev], 2))
        return o[:, :, :N], o[:, :, N:]


class SubRanges(torch.nn.Module):
    """Cuts inside one token set each (a slice of the image, a negative-start slice of the text)."""

    def forward(self, q, k, v, eq, ek, ev):
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2)
        )
        return o[:, :, 2:7], o[:, :, -3:]


class NormsAfterConcat(torch.nn.Module):
    """RMS norm, layer norm and softmax over the head dim applied to the whole concatenated [B,S,H,D] tensors:
    reductions over other dims are position-wise, so they are replayed per token set."""

    def __init__(self):
        super().__init__()
        self.norm_q, self.norm_k = torch.nn.RMSNorm(D), torch.nn.LayerNorm(D)

    def forward(self, q, k, v, eq, ek, ev):
        qq = self.norm_q(torch.cat([q, eq], 1)).transpose(1, 2)
        kk = self.norm_k(torch.cat([k, ek], 1)).transpose(1, 2)
        vv = torch.softmax(torch.cat([v, ev], 1), dim=-1).transpose(1, 2)
        o = F.scaled_dot_product_attention(qq, kk, vv).transpose(1, 2)
        return o[:, :N], o[:, N:]


def ROPE_INPUTS(seed=0):
    g = torch.Generator().manual_seed(seed + 100)
    return (*seq_first_inputs(seed), torch.randn(N + L, D, generator=g), torch.randn(N + L, D, generator=g))


def EQUAL_INPUTS(seed=0):
    return tuple(bhsd(N, seed + i) for i in range(6))


@pytest.mark.parametrize(
    "module,inputs,expected",
    [
        (CatBHSDSlice(), cat_inputs, "token sets [13, 5] (spatial-first), no padding, both outputs used"),
        (TextFirstNegativeDimSplit(), cat_inputs, "token sets [5, 13] (text-first)"),
        (CatBSHDTransposeNarrow(), seq_first_inputs, "both outputs used"),
        (EqualSetsChunk(), EQUAL_INPUTS, "token sets [13, 13]"),
        (FluxRope(), ROPE_INPUTS, "token sets [5, 13] (text-first)"),
        (OnlyImageUsed(), cat_inputs, "only the first token set used"),
        (CatAlsoReturned(), cat_inputs, "both outputs used"),
        (WholeOutputUsed(), cat_inputs, "re-joined for 1 whole-sequence consumer(s)"),
        (PositionDependentOperand(), cat_inputs, "both outputs used"),
        (SubRanges(), cat_inputs, "both outputs used"),
        (NormsAfterConcat(), seq_first_inputs, "both outputs used"),
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
        "sub-ranges",
        "norms-after-cat",
    ],
)
def test_fused(module, inputs, expected):
    _, decisions = run_case(module, inputs(0), fresh_inputs=lambda: inputs(7))
    assert expected in decisions[0].reason


def test_flux_rope_runs_per_token_set_and_leaves_no_concat():
    """The concat moved below RoPE and vanished: RoPE runs per token set on slices of cos/sin."""
    fused_text, _ = run_case(FluxRope(), ROPE_INPUTS())
    assert f"[{B},{N + L}," not in fused_text  # no whole-sequence q/k left; only cos/sin are [N+L, D]
    body = fused_text.split("jointattn.joint_attention")[0]
    assert body.count("torch.aten.neg") == 4  # -imag of q and k, for each token set
    assert body.count("torch.aten.slice.Tensor") >= 8  # cos and sin sliced per token set, for q and k


def test_cat_with_another_user_stays():
    fused_text, _ = run_case(CatAlsoReturned(), cat_inputs())
    assert fused_text.count("torch.aten.cat") == 1


# --- key-padding masks proven from the graph -----------------------------------------------------------------


class BoolPrefixMask(torch.nn.Module):
    """Boolean mask: all image keys valid (a constant), text keys `arange(L) < lengths`."""

    def forward(self, q, k, v, eq, ek, ev, text_lengths):
        text_valid = torch.arange(eq.shape[2])[None, :] < text_lengths[:, None]
        image_valid = torch.ones(q.shape[0], q.shape[2], dtype=torch.bool)
        mask = torch.cat([image_valid, text_valid], dim=1)[:, None, None, :]
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2), attn_mask=mask
        )
        return o[:, :, : q.shape[2]], o[:, :, q.shape[2] :]


class AdditiveBothPadded(torch.nn.Module):
    """Additive mask where(valid, 0, -inf): image valid up to a constant 9, text per-batch lengths."""

    def forward(self, q, k, v, eq, ek, ev, text_lengths):
        image_valid = (torch.arange(q.shape[2]) < 9)[None, :].expand(q.shape[0], -1)
        text_valid = text_lengths[:, None] > torch.arange(eq.shape[2])[None, :]
        valid = torch.cat([image_valid, text_valid], dim=-1).view(q.shape[0], 1, 1, -1)
        bias = torch.where(valid, 0.0, float("-inf")).to(q.dtype)
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2), attn_mask=bias
        )
        return o[:, :, : q.shape[2]], o[:, :, q.shape[2] :]


class MaskedFillTextFirst(torch.nn.Module):
    """Text first; zeros.masked_fill(~valid, -inf); lengths out of range (clamped, as `arange < length` reads)."""

    def forward(self, q, k, v, eq, ek, ev, text_lengths):
        b, total = q.shape[0], q.shape[2] + eq.shape[2]
        valid = torch.cat(
            [
                torch.arange(eq.shape[2])[None, :] < text_lengths[:, None],
                torch.ones(b, q.shape[2], dtype=torch.bool),
            ],
            1,
        )
        bias = torch.zeros(b, total, dtype=q.dtype).masked_fill(~valid, float("-inf"))[:, None, None, :]
        o = F.scaled_dot_product_attention(
            torch.cat([eq, q], 2), torch.cat([ek, k], 2), torch.cat([ev, v], 2), attn_mask=bias
        )
        return o[:, :, eq.shape[2] :], o[:, :, : eq.shape[2]]


@pytest.mark.parametrize(
    "module,lengths",
    [
        (BoolPrefixMask(), [3, 0]),
        (AdditiveBothPadded(), [1, 4]),
        (MaskedFillTextFirst(), [7, -2]),
    ],
    ids=["bool", "additive-both", "masked-fill-clamped"],
)
def test_prefix_masks_become_valid_lengths(module, lengths):
    fused_text, decisions = run_case(module, (*cat_inputs(), torch.tensor(lengths)))
    assert "padding as valid lengths proven from the mask" in decisions[0].reason
    assert "torch.aten.where" not in fused_text and "torch.aten.masked_fill" not in fused_text
    assert "logical_l(" in fused_text


def test_a_constant_image_length_becomes_an_int_operand():
    fused_text, _ = run_case(AdditiveBothPadded(), (*cat_inputs(), torch.tensor([2, 5])))
    assert "logical_n(%int9 : !torch.int)" in fused_text


# --- key-padding masks checked at run time ------------------------------------------------------------------


class MaskInput(torch.nn.Module):
    """A mask that arrives as an input: nothing in the graph says whether it is prefix padding."""

    def forward(self, q, k, v, eq, ek, ev, mask):
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2), attn_mask=mask
        )
        return o[:, :, :N], o[:, :, N:]


class MaskInputTextFirst(torch.nn.Module):
    """Text first, [B,S,H,D] concat, transposed; the mask input covers the keys in that order."""

    def forward(self, q, k, v, eq, ek, ev, mask):
        qq, kk, vv = (torch.cat([e, x], 1).transpose(1, 2) for e, x in ((eq, q), (ek, k), (ev, v)))
        o = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask, scale=0.3).transpose(1, 2).flatten(2)
        text, image = o.split_with_sizes([eq.shape[1], q.shape[1]], dim=1)
        return image, text


class SuffixMask(torch.nn.Module):
    """Built in the graph, but text keys are valid from `lengths` on (a suffix): no compile-time proof."""

    def forward(self, q, k, v, eq, ek, ev, text_lengths):
        text_valid = torch.arange(eq.shape[2])[None, :] >= text_lengths[:, None]
        mask = torch.cat([torch.ones(q.shape[0], N, dtype=torch.bool), text_valid], 1)[:, None, None, :]
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2), attn_mask=mask
        )
        return o[:, :, :N], o[:, :, N:]


class SharedMask(torch.nn.Module):
    """Two attention layers reading one mask input (Mochi's 48 layers share one text mask)."""

    def forward(self, q, k, v, eq, ek, ev, mask):
        a, b = MaskInput()(q, k, v, eq, ek, ev, mask)
        return MaskInput()(a, k + a, v, b, ek * b, ev, mask)


def prefix_valid(image_lengths, text_lengths, n=N, length=L):
    image = torch.arange(n)[None, :] < torch.tensor(image_lengths)[:, None]
    text = torch.arange(length)[None, :] < torch.tensor(text_lengths)[:, None]
    return torch.cat([image, text], 1)


def holes_valid(seed, batch=B, total=N + L):
    """Random validity with holes (not a prefix), at least one valid key per row so eager SDPA has no NaN."""
    valid = torch.rand(batch, total, generator=torch.Generator().manual_seed(seed)) > 0.4
    valid[:, 0] = True
    return valid


def as_bool(valid):
    return valid[:, None, None, :]


def as_additive(valid):
    return torch.where(valid, 0.0, float("-inf"))[:, None, None, :]


def checked_cases():
    """(id, module, mask to import with, mask to run with): the run-time mask differs from the import-time one,
    so the fused program must decide when it runs."""
    text_first = lambda valid: as_bool(torch.cat([valid[:, N:], valid[:, :N]], 1))  # noqa: E731
    finite_bias = torch.randn(1, 1, 1, N + L, generator=torch.Generator().manual_seed(3))
    return [
        (
            "bool-prefix-then-holes",
            MaskInput(),
            as_bool(prefix_valid([13, 9], [5, 2])),
            as_bool(holes_valid(1)),
        ),
        (
            "bool-holes-then-prefix",
            MaskInput(),
            as_bool(holes_valid(2)),
            as_bool(prefix_valid([7, 13], [0, 4])),
        ),
        (
            "additive-prefix",
            MaskInput(),
            as_additive(prefix_valid([4, 13], [5, 1])),
            as_additive(prefix_valid([13, 2], [3, 5])),
        ),
        ("additive-holes", MaskInput(), as_additive(holes_valid(4)), as_additive(holes_valid(5))),
        ("finite-bias-1xS", MaskInput(), finite_bias[0, 0], finite_bias[0, 0] * 2),
        (
            "text-first",
            MaskInputTextFirst(),
            text_first(holes_valid(6)),
            text_first(prefix_valid([10, 13], [2, 5])),
        ),
    ]


CHECKED = checked_cases()


@pytest.mark.parametrize("module,mask,run_mask", [c[1:] for c in CHECKED], ids=[c[0] for c in CHECKED])
def test_unproven_key_padding_masks_are_checked_at_run_time(module, mask, run_mask):
    inputs = seq_first_inputs if isinstance(module, MaskInputTextFirst) else cat_inputs
    fused_text, decisions = run_case(module, (*inputs(), mask), fresh_inputs=lambda: (*inputs(11), run_mask))
    assert "key-padding mask checked at run time (exact path if it is not a prefix)" in decisions[0].reason
    assert fused_text.count("jointattn.key_padding_lengths") == 1
    assert fused_text.count("jointattn.masked_joint_attention") == 1


def test_a_suffix_mask_built_in_the_graph_is_checked_at_run_time():
    fused_text, decisions = run_case(SuffixMask(), (*cat_inputs(), torch.tensor([2, 3])))
    assert "checked at run time" in decisions[0].reason
    assert "torch.aten.cat" not in fused_text  # the mask is taken per token set, its concat is gone


@pytest.mark.parametrize(
    "emit,check",
    [("jointattn", "jointattn.key_padding_lengths"), ("operator", "torch.jointattn.key_padding_lengths")],
)
def test_layers_sharing_a_mask_share_one_check(emit, check):
    inputs = (*cat_inputs(), as_bool(holes_valid(7)))
    text = import_module(SharedMask(), *inputs)
    assert [d.fused for d in decisions_of(text)] == [True, True]
    fused_text = run_pipeline(text, f"fuse-joint-attention{{emit={emit}}}")
    assert fused_text.count(check) == 1
    assert fused_text.count("masked_joint_attention") == 2
    got = compile_module(fused_text)(*inputs)
    for g, w in zip(got, float64_eager(SharedMask(), inputs), strict=True):
        torch.testing.assert_close(g.double(), w, rtol=1e-4, atol=1e-5)


# --- what is not joint attention ----------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    "module,extra,reason",
    [
        (_sdpa_module(is_causal=True), (), "is_causal=True"),
        (_sdpa_module(dropout_p=0.1), (), "dropout_p=0.1"),
        (MisalignedSlice(), (), "crosses the concat boundary"),
        (ThreeSets(), (), "concat of 3 token sets"),
        (KeyNotConcat(), (), "k is not a concat of token sets (it is computed by torch.aten.flip)"),
        (Gqa(), (), "enable_gqa=True"),
        (MaskInput(), (torch.rand(B, 1, N + L, N + L) > 0.3,), "varies over queries"),
        (MaskInput(), (torch.rand(1, H, 1, N + L) > 0.3,), "varies over heads"),
        (MaskInput(), (torch.zeros(B, 1, 1, 1),), "does not vary over keys"),
    ],
    ids=[
        "causal",
        "dropout",
        "misaligned",
        "three-sets",
        "key-not-cat",
        "gqa",
        "query-mask",
        "head-mask",
        "keyless-mask",
    ],
)
def test_not_fused_and_left_untouched(module, extra, reason):
    text = import_module(module, *cat_inputs(), *extra)
    module_ir = parse_module(text)
    before = run_pipeline(text, "")
    decisions = fuse_joint_attention(module_ir)
    assert [d.fused for d in decisions] == [False]
    assert reason in decisions[0].reason, decisions[0].reason
    assert run_pipeline(text, "fuse-joint-attention") == before
    if "dropout" not in reason:  # dropout draws random numbers: nothing to compare
        got = compile_module(before)(*cat_inputs(), *extra)
        want = module(*cat_inputs(), *extra)
        for g, w in zip(
            got if isinstance(got, tuple) else (got,),
            want if isinstance(want, tuple) else (want,),
            strict=True,
        ):
            torch.testing.assert_close(g, w)


# --- agreement with the FX pass ------------------------------------------------------------------------------


class PaddedTextFirst(torch.nn.Module):
    def forward(self, q, k, v, eq, ek, ev, lengths):
        text_valid = torch.arange(eq.shape[2])[None, :] < lengths[:, None]
        image_valid = torch.ones(q.shape[0], q.shape[2], dtype=torch.bool)
        mask = torch.cat([text_valid, image_valid], 1)[:, None, None, :]
        o = F.scaled_dot_product_attention(
            torch.cat([eq, q], 2), torch.cat([ek, k], 2), torch.cat([ev, v], 2), attn_mask=mask, scale=0.3
        )
        o = o.transpose(1, 2).flatten(2)
        return o[:, eq.shape[2] :], o[:, : eq.shape[2]]


def _operator_signature(text):
    """The jointattn op of a module in operator form: operand types and constant operands, lengths' producer."""
    from jointattn.passes.mlir.dialects.torch_ops import (
        ConstantFloatOp,
        ConstantNoneOp,
        ConstantStrOp,
        OperatorOp,
    )

    (op,) = [o for o in parse_module(text).walk() if isinstance(o, OperatorOp)]
    described = []
    for arg in op.args:
        owner = arg.owner
        if isinstance(owner, (ConstantStrOp, ConstantFloatOp)):
            described.append(owner.value.data if isinstance(owner, ConstantStrOp) else owner.value.value.data)
        elif isinstance(owner, ConstantNoneOp):
            described.append(None)
        else:
            described.append((str(arg.type), getattr(owner, "name", "argument")))
    return op.op_name.data, described, [str(t) for t in op.result_types]


def test_fx_fused_and_mlir_fused_ir_agree():
    """The FX pass's output, imported, and the MLIR pass's emit=operator output carry the same op call."""
    from jointattn.passes.fx import fuse_joint_attention as fx_fuse

    inputs = (*cat_inputs(), torch.tensor([3, 5]))
    captured = []

    def backend(gm, example_inputs):
        assert fx_fuse(gm).fused == 1
        captured.append((gm, example_inputs))
        return gm.forward

    torch.compile(PaddedTextFirst(), backend=backend)(*inputs)
    gm, example_inputs = captured[0]
    from_fx = _operator_signature(import_module(gm, *example_inputs))
    from_mlir = _operator_signature(
        run_pipeline(import_module(PaddedTextFirst(), *inputs), "fuse-joint-attention{emit=operator}")
    )
    assert from_fx == from_mlir
    name, args, _ = from_mlir
    assert name == "torch.jointattn.joint_attention"
    assert args[6:9] == ["rear", 0.3, None] and args[10] == "auto"
    assert args[9] == ("!torch.vtensor<[2],si64>", "torch.aten.clamp")


def _masked_signature(text):
    """The check and the masked op of a module in operator form: per operand, a constant's value, a block
    argument's type, a slice of one (type, dim, start, end), or which check result it is."""
    from jointattn.passes.mlir.dialects.torch_ops import (
        AtenSliceTensorOp,
        ConstantFloatOp,
        ConstantIntOp,
        ConstantNoneOp,
        ConstantStrOp,
        OperatorOp,
    )

    ops = [o for o in parse_module(text).walk() if isinstance(o, OperatorOp)]
    assert [o.op_name.data for o in ops] == [
        "torch.jointattn.key_padding_lengths",
        "torch.jointattn.masked_joint_attention",
    ]
    check = ops[0]

    def describe(value):
        owner = value.owner
        if isinstance(owner, (ConstantStrOp, ConstantIntOp, ConstantFloatOp)):
            return owner.value.data if isinstance(owner, ConstantStrOp) else owner.value.value.data
        if isinstance(owner, ConstantNoneOp):
            return None
        if owner is check:
            return ("check result", value.index)
        if isinstance(owner, AtenSliceTensorOp):
            bounds = [o.owner.value.value.data for o in owner.operands[1:]]
            return ("slice", str(owner.self_.type), *bounds)
        return (str(value.type), getattr(owner, "name", "argument"))

    return [
        (op.op_name.data, [describe(a) for a in op.args], [str(t) for t in op.result_types]) for op in ops
    ]


def test_fx_fused_and_mlir_fused_ir_agree_on_a_mask_input():
    """With a mask input, both passes write the same check and masked op on the same per-set slices."""
    from jointattn.passes.fx import fuse_joint_attention as fx_fuse

    inputs = (*seq_first_inputs(), as_bool(holes_valid(8)))
    captured = []

    def backend(gm, example_inputs):
        assert fx_fuse(gm).fused == 1
        captured.append((gm, example_inputs))
        return gm.forward

    torch.compile(MaskInputTextFirst(), backend=backend)(*inputs)
    gm, example_inputs = captured[0]
    from_fx = _masked_signature(import_module(gm, *example_inputs))
    from_mlir = _masked_signature(
        run_pipeline(import_module(MaskInputTextFirst(), *inputs), "fuse-joint-attention{emit=operator}")
    )
    assert from_fx == from_mlir
    (_, check_args, _), (_, masked_args, _) = from_mlir
    # text first: the image keys (the op's spatial side) are the mask's second piece
    image_slice = ("slice", f"!torch.vtensor<[{B},1,1,{N + L}],i1>", 3, L, N + L, 1)
    text_slice = ("slice", f"!torch.vtensor<[{B},1,1,{N + L}],i1>", 3, 0, L, 1)
    assert check_args == [image_slice, text_slice, B, N, L]
    assert masked_args[6:] == [image_slice, text_slice, *(("check result", i) for i in range(3)), 0.3, "auto"]
