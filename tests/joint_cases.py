"""The catalogue of joint-attention forms that both fusion passes must handle.

The FX pass (tests/test_fx_pass.py, through the torch.compile backend) and the MLIR pass
(tests/test_mlir_fuse.py, through torch-mlir's importer) promise the same pattern coverage, so both suites run
the blocks of this module: plain modules written the way model code writes joint attention (cat of the two
token sets along the sequence -> SDPA -> slice), and near misses that are not joint attention and must be left
alone. Each suite keeps its own `run_case` (how it compiles, what it counts) and its own expectations (the
remark texts); cases that only one suite runs stay in that suite's file.

- `FUSED`: id -> (block class, input factory) for the forms both passes fuse.
- `NOT_JOINT`: id -> (block factory, words of the reason) for the forms both passes refuse.
- Blocks with a mask input (`MaskInput`, `BoolPrefixMask`) and the mask factories (`prefix_valid`,
  `holes_valid`, `as_bool`, `as_additive`), shared with tests/test_mlir_e2e.py.

Input factories take a seed, so a suite can trace or import on one draw and run on a fresh one. N and L are
not tile multiples; the blocks read token counts from their inputs where model code does.
"""

from functools import partial

import torch
import torch.nn.functional as F

B, H, N, L, D = 2, 3, 13, 5, 8  # N, L: no tile multiples


# --- input factories ------------------------------------------------------------------------------------


def bhsd(s, seed):
    return torch.randn(B, H, s, D, generator=torch.Generator().manual_seed(seed))


def bshd(s, seed):
    return torch.randn(B, s, H, D, generator=torch.Generator().manual_seed(seed))


def cat_inputs(seed=0):
    """q, k, v [B,H,N,D] and the text's eq, ek, ev [B,H,L,D]."""
    return tuple(bhsd(s, seed + i) for i, s in enumerate((N, N, N, L, L, L)))


def seq_first_inputs(seed=0):
    """The same in [B,S,H,D] (what Flux and diffusers' processors hold before the transpose)."""
    return tuple(bshd(s, seed + i) for i, s in enumerate((N, N, N, L, L, L)))


def equal_inputs(seed=0):
    """Both token sets N long: the split back is an even `chunk`."""
    return tuple(bhsd(N, seed + i) for i in range(6))


def blocks_inputs(seed=0):
    """The four blocks of one [N+L, N+L] tensor per head (image rows/columns first), and v, ev [B,H,*,D]."""
    g = torch.Generator().manual_seed(seed)
    sizes = ((N, N), (N, L), (L, N), (L, L), (N, D), (L, D))
    return tuple(torch.randn(B, H, rows, cols, generator=g) for rows, cols in sizes)


def rope_inputs(seed=0):
    """`seq_first_inputs` plus RoPE cos and sin tables over the whole concatenated sequence."""
    g = torch.Generator().manual_seed(seed + 100)
    return (*seq_first_inputs(seed), torch.randn(N + L, D, generator=g), torch.randn(N + L, D, generator=g))


# --- forms that are joint attention ---------------------------------------------------------------------


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
        _, second = o.split(N, dim=1)
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
    """Flux: text first, cat on [B,S,H,D], RoPE on the whole concatenated q/k, permute, split_with_sizes.
    RoPE mixes positions only within a row of cos/sin, so the passes move the concat below it."""

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


class OneValueTwoSequenceDims(torch.nn.Module):
    """One tensor X = [[a11, a12], [a21, a22]] is a concat of the token sets along its rows (q = X[..., :D])
    and along its columns (k = X^T[..., :D]): its parts along dim 2 and along dim 3 are different tensors,
    so each is rebuilt for its own dim."""

    def forward(self, a11, a12, a21, a22, v, ev):
        x = torch.cat([torch.cat([a11, a12], 3), torch.cat([a21, a22], 3)], 2)
        o = F.scaled_dot_product_attention(x[..., :D], x.transpose(2, 3)[..., :D], torch.cat([v, ev], 2))
        return o[:, :, :N], o[:, :, N:]


FUSED = {
    "sd3-slice": (CatBHSDSlice, cat_inputs),
    "text-first-split": (TextFirstNegativeDimSplit, cat_inputs),
    "bshd-narrow": (CatBSHDTransposeNarrow, seq_first_inputs),
    "chunk": (EqualSetsChunk, equal_inputs),
    "flux-rope": (FluxRope, rope_inputs),
    "one-part": (OnlyImageUsed, cat_inputs),
    "cat-reused": (CatAlsoReturned, cat_inputs),
    "whole": (WholeOutputUsed, cat_inputs),
    "sliced-operand": (PositionDependentOperand, cat_inputs),
    "sub-ranges": (SubRanges, cat_inputs),
    "norms-after-cat": (NormsAfterConcat, seq_first_inputs),
    "one-value-two-dims": (OneValueTwoSequenceDims, blocks_inputs),
}


# --- key-padding masks ----------------------------------------------------------------------------------


class BoolPrefixMask(torch.nn.Module):
    """Boolean mask built in the graph from valid lengths: all image keys valid (a constant), text keys
    `arange(L) < lengths`; provably prefix padding, so it becomes valid lengths and no mask at run time."""

    def forward(self, q, k, v, eq, ek, ev, text_lengths):
        text_valid = torch.arange(eq.shape[2])[None, :] < text_lengths[:, None]
        image_valid = torch.ones(q.shape[0], q.shape[2], dtype=torch.bool)
        mask = torch.cat([image_valid, text_valid], dim=1)[:, None, None, :]
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2), attn_mask=mask
        )
        return o[:, :, : q.shape[2]], o[:, :, q.shape[2] :]


class MaskInput(torch.nn.Module):
    """A mask that arrives as an input (bool or additive, [b,1,1,S]): nothing in the graph says whether it is
    prefix padding, so it is checked at run time (and refused where it cannot be key padding at all)."""

    def forward(self, q, k, v, eq, ek, ev, mask):
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2), attn_mask=mask
        )
        return o[:, :, : q.shape[2]], o[:, :, q.shape[2] :]


def prefix_valid(image_lengths, text_lengths, n=N, length=L):
    """[b, n + length] bool: key validity of prefix padding on both token sets, image keys first."""
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


# --- what is not joint attention ------------------------------------------------------------------------


def sdpa_module(**sdpa_kwargs):
    """A joint-attention block but for SDPA's keywords (is_causal, dropout_p): those change the function."""

    class Block(torch.nn.Module):
        def forward(self, q, k, v, eq, ek, ev):
            o = F.scaled_dot_product_attention(
                torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2), **sdpa_kwargs
            )
            return o[:, :, :N], o[:, :, N:]

    return Block()


class MisalignedSlice(torch.nn.Module):
    """The output is cut one row before the boundary: each piece would need rows of both token sets."""

    def forward(self, q, k, v, eq, ek, ev):
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2)
        )
        return o[:, :, : N - 1], o[:, :, N - 1 :]


class ThreeSets(torch.nn.Module):
    """Three sequences joined: the op joins exactly two."""

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
    """Grouped-query attention (one key/value head): the op needs as many key/value heads as query heads."""

    def forward(self, q, k, v, eq, ek, ev):
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2)[:, :1], torch.cat([v, ev], 2)[:, :1], enable_gqa=True
        )
        return o[:, :, :N]


# The reason: words both passes' remarks contain (most of them come from passes/rules.py, shared by both).
NOT_JOINT = {
    "causal": (partial(sdpa_module, is_causal=True), "is_causal=True"),
    "dropout": (partial(sdpa_module, dropout_p=0.1), "dropout_p=0.1"),
    "misaligned": (MisalignedSlice, "crosses the concat boundary"),
    "three-sets": (ThreeSets, "concat of 3 token sets"),
    "key-not-cat": (KeyNotConcat, "k is not a concat of token sets"),
    "gqa": (Gqa, "enable_gqa=True"),
}


def _random_mask(*shape, seed):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) > 0.3


# Masks that are not key padding, for `MaskInput`: left to SDPA, with the reason.
MASKS_NOT_PADDING = {
    "query-mask": (lambda: _random_mask(B, 1, N + L, N + L, seed=1), "varies over queries"),
    "head-mask": (lambda: _random_mask(1, H, 1, N + L, seed=2), "varies over heads"),
    "keyless-mask": (lambda: torch.zeros(B, 1, 1, 1), "does not vary over keys"),
}
