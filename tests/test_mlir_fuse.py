"""`fuse-joint-attention` on imported modules: every form the FX pass fuses is fused here too, everything that
is not joint attention is left untouched, and the fused module, emitted as Python and run, computes what the
module computes in float64 eager.

Each case is a plain module: the forms of tests/joint_cases.py (which the FX pass is checked on too), plus
key-padding masks built in the graph. `run_case` imports it with torch-mlir, runs the pass (both `emit`
forms), checks the decisions and that no SDPA is left, then runs the emitted function (the op with runtime
"auto") on fresh random inputs.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import float64_eager, fx_fused_graph
from joint_cases import (
    FUSED,
    MASKS_NOT_PADDING,
    NOT_JOINT,
    B,
    BoolPrefixMask,
    CatAlsoReturned,
    D,
    FluxRope,
    L,
    MaskInput,
    N,
    as_additive,
    as_bool,
    cat_inputs,
    holes_valid,
    prefix_valid,
    rope_inputs,
    seq_first_inputs,
)
from jointattn.compiler.mlir.emit import compile_module
from jointattn.compiler.mlir.importer import import_module
from jointattn.compiler.mlir.opt_main import run_pipeline
from jointattn.passes.mlir.dialects import parse_module
from jointattn.passes.mlir.fuse import fuse_joint_attention


def decisions_of(text, emit="jointattn"):
    return fuse_joint_attention(parse_module(text), emit)


def run_case(module, inputs, *, fused=1, fresh_inputs=None):
    """Import, fuse (both emit forms), run; returns the emit=jointattn text and the decisions."""
    text = import_module(module, *inputs)
    decisions = decisions_of(text)
    assert sum(d.fused for d in decisions) == fused, "\n".join(map(str, decisions))
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


# --- forms that are joint attention: tests/joint_cases.py ------------------------------------------------

# What the pass's remark says for each fused form.
EXPECTED = {
    "sd3-slice": "token sets [13, 5] (spatial-first), no padding, both outputs used",
    "text-first-split": "token sets [5, 13] (text-first)",
    "bshd-narrow": "both outputs used",
    "chunk": "token sets [13, 13]",
    "flux-rope": "token sets [5, 13] (text-first)",
    "one-part": "only the first token set used",
    "cat-reused": "both outputs used",
    "whole": "re-joined for 1 whole-sequence consumer(s)",
    "sliced-operand": "both outputs used",
    "sub-ranges": "both outputs used",
    "norms-after-cat": "both outputs used",
    "one-value-two-dims": "token sets [13, 5] (spatial-first), no padding, both outputs used",
}


@pytest.mark.parametrize("case", list(FUSED))
def test_fused(case):
    block, inputs = FUSED[case]
    _, decisions = run_case(block(), inputs(0), fresh_inputs=lambda: inputs(7))
    assert EXPECTED[case] in decisions[0].reason


def test_flux_rope_runs_per_token_set_and_leaves_no_concat():
    """The concat moved below RoPE and vanished: RoPE runs per token set on slices of cos/sin."""
    fused_text, _ = run_case(FluxRope(), rope_inputs())
    assert f"[{B},{N + L}," not in fused_text  # no whole-sequence q/k left; only cos/sin are [N+L, D]
    body = fused_text.split("jointattn.joint_attention")[0]
    assert body.count("torch.aten.neg") == 4  # -imag of q and k, for each token set
    assert body.count("torch.aten.slice.Tensor") >= 8  # cos and sin sliced per token set, for q and k


def test_cat_with_another_user_stays():
    fused_text, _ = run_case(CatAlsoReturned(), cat_inputs())
    assert fused_text.count("torch.aten.cat") == 1


def _squeeze_text(cat_dim: int) -> tuple[str, list[tuple[int, ...]]]:
    """q = squeeze(cat(a, b, cat_dim), 1) with 3 heads: a no-op squeeze (torch.export drops it; hand-written IR
    keeps it). Returns the module text and the argument shapes."""
    s, heads = N + L, 3
    a, b = ((B, heads, N, s), (B, heads, L, s)) if cat_dim == 2 else ((B, heads, s, N), (B, heads, s, L))
    shapes = [a, b, (B, heads, N, s), (B, heads, L, s), (B, heads, N, s), (B, heads, L, s)]
    t = lambda shape: f"!torch.vtensor<[{','.join(map(str, shape))}],f32>"  # noqa: E731
    whole, image, text = t((B, heads, s, s)), t((B, heads, N, s)), t((B, heads, L, s))
    args = ", ".join(f"%{name}: {t(shape)}" for name, shape in zip("abcdef", shapes, strict=True))
    cat = lambda x, y, dim: (  # noqa: E731
        f"torch.prim.ListConstruct %{x}, %{y} : ({t(shapes['abcdef'.index(x)])}, {t(shapes['abcdef'.index(y)])})"
        f" -> !torch.list<vtensor>\n  %cat_{x} = torch.aten.cat %list_{x}, %int{dim} : !torch.list<vtensor>, "
        f"!torch.int -> {whole}"
    )
    text_ir = f"""func.func @main({args}) -> ({image}, {text}) {{
  %int0 = torch.constant.int 0
  %int1 = torch.constant.int 1
  %int2 = torch.constant.int 2
  %int3 = torch.constant.int 3
  %intN = torch.constant.int {N}
  %intS = torch.constant.int {s}
  %none = torch.constant.none
  %false = torch.constant.bool false
  %float0 = torch.constant.float 0.000000e+00
  %list_a = {cat("a", "b", cat_dim)}
  %q = torch.aten.squeeze.dim %cat_a, %int1 : {whole}, !torch.int -> {whole}
  %list_c = {cat("c", "d", 2)}
  %list_e = {cat("e", "f", 2)}
  %o = torch.aten.scaled_dot_product_attention %q, %cat_c, %cat_e, %none, %float0, %false, %none, %false : {whole}, {whole}, {whole}, !torch.none, !torch.float, !torch.bool, !torch.none, !torch.bool -> {whole}
  %image = torch.aten.slice.Tensor %o, %int2, %int0, %intN, %int1 : {whole}, !torch.int, !torch.int, !torch.int, !torch.int -> {image}
  %text = torch.aten.slice.Tensor %o, %int2, %intN, %intS, %int1 : {whole}, !torch.int, !torch.int, !torch.int, !torch.int -> {text}
  return %image, %text : {image}, {text}
}}
"""
    return text_ir, shapes


@pytest.mark.parametrize(
    "cat_dim,fused",
    [(2, True), (3, False)],
    ids=["tokens-along-the-sequence", "tokens-along-the-head-dim"],
)
def test_a_squeeze_that_removes_no_dim_keeps_the_sequence_dim(cat_dim, fused):
    """squeeze.dim of a dim of size 3 is a no-op: the sequence dim stays where it is, so q is a concat of the
    token sets when the concat is along the sequence dim (fused), and is not when it is along the head dim."""
    text, shapes = _squeeze_text(cat_dim)
    decisions = decisions_of(text)
    assert [d.fused for d in decisions] == [fused], decisions[0].reason
    g = torch.Generator().manual_seed(4)
    inputs = [torch.randn(*shape, generator=g) for shape in shapes]
    a, b, k, ek, v, ev = (x.double() for x in inputs)
    q = torch.cat([a, b], cat_dim)
    o = F.scaled_dot_product_attention(q, torch.cat([k, ek], 2), torch.cat([v, ev], 2))
    got = compile_module(run_pipeline(text, "fuse-joint-attention"))(*inputs)
    for g_, w in zip(got, (o[:, :, :N], o[:, :, N:]), strict=True):
        torch.testing.assert_close(g_.double(), w, rtol=1e-4, atol=1e-5)


# --- key-padding masks proven from the graph -----------------------------------------------------------------


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


# --- masks that look like valid lengths but are not (the rules of passes/fx/masks.py) -----------------------


def _bhsd_sizes(n, length, seed):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, 1, s, D, generator=g) for s in (n, n, n, length, length, length))


class _MaskedCat(torch.nn.Module):
    """cat -> SDPA -> slice under `self.mask(q, eq, image_lengths, text_lengths)`, built in the graph."""

    def forward(self, q, k, v, eq, ek, ev, image_lengths, text_lengths):
        mask = self.mask(q, eq, image_lengths, text_lengths)
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2), attn_mask=mask
        )
        return o[:, :, : q.shape[2]], o[:, :, q.shape[2] :]


class FiniteAbsentBias(_MaskedCat):
    """finfo.min as "absent": a sample with no valid key at all averages V over every key in SDPA, which valid
    lengths (out = 0 there) do not say."""

    def mask(self, q, eq, image_lengths, text_lengths):
        valid = torch.cat(
            [
                torch.arange(q.shape[2])[None, :] < image_lengths[:, None],
                torch.arange(eq.shape[2])[None, :] < text_lengths[:, None],
            ],
            1,
        )
        return torch.where(valid, 0.0, torch.finfo(torch.float32).min)[:, None, None, :]


class BiasThroughAnInteger(_MaskedCat):
    """where(valid, 0, -inf) taken through an integer dtype and back: -inf does not survive the integer step, so
    the bias that reaches SDPA is finite (`mask_proofs.keeps_mask_meaning`), and sample 1 has no valid key."""

    def mask(self, q, eq, image_lengths, text_lengths):
        valid = torch.cat(
            [
                torch.arange(q.shape[2])[None, :] < image_lengths[:, None],
                torch.arange(eq.shape[2])[None, :] < text_lengths[:, None],
            ],
            1,
        )
        return torch.where(valid, 0.0, float("-inf")).to(torch.int64).to(q.dtype)[:, None, None, :]


class LengthsNotAColumn(_MaskedCat):
    """`arange(L) < lengths` with a 1-D `lengths` (b == L): compared position by position, the same validity
    for every sample, not one length per sample."""

    def mask(self, q, eq, image_lengths, text_lengths):
        text_valid = (torch.arange(eq.shape[2]) < text_lengths)[None, :].expand(q.shape[0], -1)
        valid = torch.cat([torch.ones(q.shape[0], q.shape[2], dtype=torch.bool), text_valid], 1)
        return valid[:, None, None, :]


class ImageArange(_MaskedCat):
    """Image keys `arange(n, dtype=dtype).to(converted) < image_lengths[:, None]`, text keys all valid. Only
    exact positions prove lengths: bfloat16 rounds past 256 (`arange(300, bf16) < 257` admits 258 keys), int8
    wraps past 127, and a conversion on the way counts as much as the arange's own dtype."""

    def __init__(self, dtype, converted=None):
        super().__init__()
        self.dtype, self.converted = dtype, converted or dtype

    def mask(self, q, eq, image_lengths, text_lengths):
        positions = torch.arange(q.shape[2], dtype=self.dtype).to(self.converted)
        image_valid = positions[None, :] < image_lengths[:, None]
        valid = torch.cat([image_valid, torch.ones(q.shape[0], eq.shape[2], dtype=torch.bool)], 1)
        return valid[:, None, None, :]


@pytest.mark.parametrize(
    "module,n,length,image_lengths,text_lengths",
    [
        (FiniteAbsentBias(), 6, 3, [4, 0], [2, 0]),  # sample 1: no valid key on either token set
        (BiasThroughAnInteger(), 6, 3, [4, 0], [2, 0]),
        (LengthsNotAColumn(), 6, B, [6, 6], [2, 0]),
        (ImageArange(torch.bfloat16), 300, 3, [257, 261], [3, 3]),
        (ImageArange(torch.float32, torch.bfloat16), 300, 3, [257, 261], [3, 3]),
        (ImageArange(torch.int8), 300, 3, [200, 261], [3, 3]),
    ],
    ids=[
        "finfo-min-empty-sample",
        "bias-through-int64",
        "lengths-not-a-column",
        "bf16-arange",
        "f32-arange-to-bf16",
        "int8-arange",
    ],
)
def test_masks_that_look_like_lengths_but_are_not_are_checked(module, n, length, image_lengths, text_lengths):
    lengths = (torch.tensor(image_lengths), torch.tensor(text_lengths))
    _, decisions = run_case(
        module,
        (*_bhsd_sizes(n, length, 0), *lengths),
        fresh_inputs=lambda: (*_bhsd_sizes(n, length, 1), *lengths),
    )
    assert "proven" not in decisions[0].reason
    assert "key-padding mask checked at run time" in decisions[0].reason


@pytest.mark.parametrize(
    "module",
    [
        ImageArange(torch.float32),
        ImageArange(torch.float32, torch.float64),
        ImageArange(torch.uint8),
        ImageArange(torch.uint8, torch.int16),
        ImageArange(torch.int64, torch.float32),
    ],
    ids=["f32-arange", "f32-arange-to-f64", "uint8-arange", "uint8-arange-to-int16", "int64-arange-to-f32"],
)
def test_exact_aranges_prove_lengths(module):
    """An arange is read through any conversion whose positions stay exact (`mask_proofs.positions_exact`), as
    in the FX pass, integer conversions included."""
    n = 250  # within uint8; float32 and float64 hold far more
    lengths = (torch.tensor([200, 261]), torch.tensor([3, 3]))
    _, decisions = run_case(module, (*_bhsd_sizes(n, 3, 0), *lengths))
    assert "padding as valid lengths proven from the mask" in decisions[0].reason


_NONES = "%f_none, %f_none, %f_none : !torch.list<int>"
_FACTORIES = {  # the text token set's validity as a factory op: [2, 3] bool (dtype 11)
    "ones": f"torch.aten.ones %f_sizes, %f_dtype, {_NONES}, !torch.int, !torch.none, !torch.none, !torch.none",
    "full-true": f"torch.aten.full %f_sizes, %f_true, %f_dtype, {_NONES}, !torch.bool, !torch.int, "
    "!torch.none, !torch.none, !torch.none",
    "zeros": f"torch.aten.zeros %f_sizes, %f_dtype, {_NONES}, !torch.int, !torch.none, !torch.none, !torch.none",
}


@pytest.mark.parametrize("factory,proven", [("ones", True), ("full-true", True), ("zeros", False)])
def test_validity_factories_admit_every_key_as_in_the_fx_pass(factory, proven):
    """torch-mlir's importer folds `torch.ones(b, L, dtype=bool)` into a literal; written as the factory op it is
    read by the FX pass's rule (`mask_proofs.admits_every_key`): bool ones or full(True) admit every key, bool
    zeros none."""
    inputs = (*_bhsd_sizes(6, 3, 0), torch.tensor([4, 9]), torch.tensor([3, 3]))
    text = import_module(ImageArange(torch.int64), *inputs)
    literal = "torch.vtensor.literal(dense<true> : tensor<2x3xi1>) : !torch.vtensor<[2,3],i1>"
    assert text.count(literal) == 1  # the text token set's validity, all True
    line = next(line for line in text.splitlines() if literal in line)
    result = line.split("=")[0].strip()
    constants = [
        "%f_b = torch.constant.int 2",
        "%f_l = torch.constant.int 3",
        "%f_dtype = torch.constant.int 11",
        "%f_true = torch.constant.bool true",
        "%f_none = torch.constant.none",
        "%f_sizes = torch.prim.ListConstruct %f_b, %f_l : (!torch.int, !torch.int) -> !torch.list<int>",
        f"{result} = {_FACTORIES[factory]} -> !torch.vtensor<[2,3],i1>",
    ]
    text = text.replace(line, "\n".join("    " + c for c in constants))
    decisions = decisions_of(text)
    assert decisions[0].fused
    reason = decisions[0].reason
    assert ("padding as valid lengths proven from the mask" in reason) is proven, reason
    want = compile_module(text)(*inputs)  # the edited module, unfused
    got = compile_module(run_pipeline(text, "fuse-joint-attention"))(*inputs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


# --- key-padding masks checked at run time ------------------------------------------------------------------


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

# The MLIR pass also names the op that computes k.
MORE_PRECISE = {"key-not-cat": "k is not a concat of token sets (it is computed by torch.aten.flip)"}


@pytest.mark.parametrize(
    "module,extra,reason",
    [
        *((block(), (), MORE_PRECISE.get(case, reason)) for case, (block, reason) in NOT_JOINT.items()),
        *((MaskInput(), (mask(),), reason) for mask, reason in MASKS_NOT_PADDING.values()),
    ],
    ids=[*NOT_JOINT, *MASKS_NOT_PADDING],
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


def _from_both_passes(block, inputs, signature):
    """`signature` of the FX pass's output graph, imported, and of the MLIR pass's emit=operator output."""
    gm, example_inputs, report = fx_fused_graph(block(), inputs)
    assert report.fused == 1
    from_fx = signature(import_module(gm, *example_inputs))
    from_mlir = signature(
        run_pipeline(import_module(block(), *inputs), "fuse-joint-attention{emit=operator}")
    )
    return from_fx, from_mlir


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
    from_fx, from_mlir = _from_both_passes(
        PaddedTextFirst, (*cat_inputs(), torch.tensor([3, 5])), _operator_signature
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
    from_fx, from_mlir = _from_both_passes(
        MaskInputTextFirst, (*seq_first_inputs(), as_bool(holes_valid(8))), _masked_signature
    )
    assert from_fx == from_mlir
    (_, check_args, _), (_, masked_args, _) = from_mlir
    # text first: the image keys (the op's spatial side) are the mask's second piece
    image_slice = ("slice", f"!torch.vtensor<[{B},1,1,{N + L}],i1>", 3, L, N + L, 1)
    text_slice = ("slice", f"!torch.vtensor<[{B},1,1,{N + L}],i1>", 3, 0, L, 1)
    assert check_args == [image_slice, text_slice, B, N, L]
    assert masked_args[6:] == [image_slice, text_slice, *(("check result", i) for i in range(3)), 0.3, "auto"]
