"""`jointattn.sparse` patterns: each against a direct construction of its dense mask, SWBA's own naive
reference reproduced for its pattern, the estimator against a direct per-block computation, and the op run
with each against the float64 masked reference at odd N with padding."""

import math

import pytest
import torch
from helpers import joint_inputs, rel_err
from jointattn.sparse import block_mask_from_mod, estimate_block_mask, frame_window, tile_window
from sparse_cases import dense_of, masked_float64
from torch.nn.attention.flex_attention import create_block_mask

import jointattn


def SBA(q, k, v, bs, ws, sm_scale):
    """SWBA's naive torch implementation, verbatim from its README (zankerx/Flash-Attention-Triton-kernel-
    Bloc-Sliding-Window): block size bs = tokens per frame, window ws; needs N % bs == 0."""
    B, NH, N, DH = q.size()
    NB = N // bs
    mask = torch.triu(torch.ones((NB, NB), device=q.device), diagonal=1) + torch.tril(
        torch.ones((NB, NB), device=q.device), diagonal=-ws
    )
    mask = torch.masked_fill(mask, mask == 1.0, float("-inf"))
    mask = mask.repeat_interleave(bs, 0)
    mask = mask.repeat_interleave(bs, 1)
    mask = mask.unsqueeze(0).unsqueeze(0)  # [1,1,N,N]
    attn = (q @ k.transpose(-2, -1)) * sm_scale  # [B, NH, N, N]
    attn = attn + mask.to(attn.dtype)
    attn = attn.softmax(dim=-1)
    out = attn @ v
    return out


@pytest.mark.parametrize("bs, ws, block_size", [(32, 3, (64, 16)), (48, 2, (32, 32)), (16, 4, (128, 64))])
def test_frame_window_reproduces_swba_reference(bs, ws, block_size):
    n = bs * 6
    q, k, v, jq, jk, jv = joint_inputs(1, 2, n, 0, 16, dtype=torch.float64, seed=ws)
    bm = frame_window(bs, ws).block_mask(n, block_size=block_size)
    out, _, _ = jointattn.joint_attention(q, k, v, jq, jk, jv, block_mask=bm)
    assert rel_err(out, SBA(q, k, v, bs, ws, 16**-0.5)) < 1e-12


def _direct_frame_window(n, frame_tokens, window, causal):
    frame = torch.arange(n) // frame_tokens
    d = frame[:, None] - frame[None, :]
    return ((d >= 0) & (d < window)) if causal else (d.abs() < window)


def _direct_tile_window(grid, window):
    coords = torch.stack(torch.meshgrid(*(torch.arange(g) for g in grid), indexing="ij"), -1).reshape(-1, 3)
    d = (coords[:, None, :] - coords[None, :, :]).abs()
    return (d <= torch.tensor([w // 2 for w in window])).all(-1)


CASES = {
    "frame-causal": (lambda: frame_window(13, 3), lambda n: _direct_frame_window(n, 13, 3, True), 83),
    "frame-symmetric": (
        lambda: frame_window(10, 2, causal=False),
        lambda n: _direct_frame_window(n, 10, 2, False),
        83,
    ),
    "tile": (
        lambda: tile_window((3, 5, 6), (3, 3, 5)),
        lambda n: _direct_tile_window((3, 5, 6), (3, 3, 5)),
        90,
    ),
    "tile-even": (
        lambda: tile_window((2, 4, 9), (1, 2, 4)),
        lambda n: _direct_tile_window((2, 4, 9), (1, 2, 4)),
        72,
    ),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("block_size", [(64, 16), (32, 48)])
def test_patterns_match_direct_dense_masks(case, block_size):
    make, direct, n = CASES[case]
    want = direct(n)
    pattern = make()
    assert torch.equal(pattern.dense(n), want)
    bm = pattern.block_mask(n, block_size=block_size)
    assert torch.equal(dense_of(bm, 1, 1)[0, 0], want)
    assert 0 < int(bm.kv_num_blocks.sum())  # partial blocks exist: the per-element answer is exercised
    b, h, l = 2, 2, 5  # noqa: E741
    inputs = joint_inputs(b, h, n, l, 8, dtype=torch.float64, seed=n)
    lengths = dict(logical_n=torch.tensor([n, n - 9]), logical_l=torch.tensor([2, 5]))
    got = jointattn.joint_attention(*inputs, block_mask=pattern, **lengths)  # the pattern itself is accepted
    ref = masked_float64(*inputs, want.expand(b, h, n, n), **lengths)
    for x, y, tol in zip(got, ref, (1e-12, 1e-12, 1e-6)):
        assert rel_err(x, y) < tol


def test_block_classification_matches_flex_create_block_mask():
    mask_mod = lambda b, h, q, kv: ((q * 7 + kv * 3) % 5 < 2) | ((q // 32) == (kv // 32))
    ours = block_mask_from_mod(mask_mod, 100, (32, 16))
    flex = create_block_mask(mask_mod, None, None, 100, 100, device="cpu", BLOCK_SIZE=(32, 16))
    assert torch.equal(ours.to_dense(), flex.to_dense())
    # Element by element the same; ours also calls a tail block full when every element inside N is allowed.
    assert torch.equal(dense_of(ours, 1, 1), dense_of(flex, 1, 1))
    assert int(ours.full_kv_num_blocks.sum()) >= int(flex.full_kv_num_blocks.sum()) > 0


def _direct_estimate(q, k, q_block, kv_block, share, by_mass):
    """Per (b, h, query block): pooled means by explicit slices, mass by explicit softmax, kept set."""
    b, h, n, dh = q.shape
    kept = torch.zeros(b, h, -(-n // q_block), -(-n // kv_block), dtype=torch.bool)
    for bi in range(b):
        for hi in range(h):
            kblocks = [k[bi, hi, s : s + kv_block] for s in range(0, n, kv_block)]
            for qi, s in enumerate(range(0, n, q_block)):
                qm = q[bi, hi, s : s + q_block].double().mean(0)
                logits = torch.stack(
                    [qm @ kb.double().mean(0) * dh**-0.5 + math.log(len(kb)) for kb in kblocks]
                )
                order = logits.argsort(descending=True)
                if by_mass:
                    mass = logits.softmax(0)[order].cumsum(0)
                    count = int((mass < share).sum()) + 1
                else:
                    count = max(1, math.ceil(share * len(kblocks)))
                kept[bi, hi, qi, order[:count]] = True
    return kept


@pytest.mark.parametrize("keep, cdf", [(0.3, None), (None, 0.8), (1.0, None)])
def test_estimate_block_mask_matches_direct_computation(keep, cdf):
    q, k, v, jq, jk, jv = joint_inputs(2, 2, 150, 6, 16, dtype=torch.float64, seed=3)
    q = q + 2 * k  # some structure, so the mass is not uniform
    bm = estimate_block_mask(q, k, keep=keep, cdf=cdf, block_size=(32, 16))
    want = _direct_estimate(q, k, 32, 16, keep if keep is not None else cdf, cdf is not None)
    assert torch.equal(bm.to_dense().bool(), want)
    if keep == 0.3:
        assert int(bm.full_kv_num_blocks.max()) == math.ceil(0.3 * 10)
    got = jointattn.joint_attention(q, k, v, jq, jk, jv, block_mask=bm, logical_l=torch.tensor([6, 1]))
    ref = masked_float64(q, k, v, jq, jk, jv, dense_of(bm, 2, 2), logical_l=torch.tensor([6, 1]))
    assert rel_err(got[0], ref[0]) < 1e-12 and rel_err(got[1], ref[1]) < 1e-12


def test_pattern_arguments_are_checked():
    with pytest.raises(ValueError, match="frame_tokens must be a positive int"):
        frame_window(0, 2)
    with pytest.raises(ValueError, match=r"N must equal T\*H\*W = 30"):
        tile_window((2, 3, 5), (1, 1, 1)).block_mask(31)
    with pytest.raises(ValueError, match="exactly one of keep="):
        estimate_block_mask(torch.randn(1, 1, 8, 4), torch.randn(1, 1, 8, 4))
    with pytest.raises(ValueError, match=r"keep must be in \(0, 1\]"):
        estimate_block_mask(torch.randn(1, 1, 8, 4), torch.randn(1, 1, 8, 4), keep=0.0)


@pytest.mark.parametrize("share", [dict(cdf=0.9), dict(keep=0.5)])
def test_the_estimate_ignores_what_lies_past_the_valid_length(share):
    """Keys and queries past logical_n do not exist: whatever is stored there (NaN from torch.empty, or a
    block of large values that would draw the estimated mass) leaves the mask as it is with zeros there."""
    from jointattn.sparse import estimate_block_mask

    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, 2, 100, 16, generator=g), torch.randn(2, 2, 100, 16, generator=g)
    lengths = torch.tensor([70, 100])
    zeros = [t.clone() for t in (q, k)]
    for t in zeros:
        t[0, :, 70:] = 0.0
    want = estimate_block_mask(*zeros, block_size=(32, 16), logical_n=lengths, **share)
    for filler in (float("nan"), 1e4):
        poisoned = [t.clone() for t in (q, k)]
        for t in poisoned:
            t[0, :, 70:] = filler
        got = estimate_block_mask(*poisoned, block_size=(32, 16), logical_n=lengths, **share)
        assert torch.equal(got.full_kv_num_blocks, want.full_kv_num_blocks)
        assert torch.equal(got.full_kv_indices, want.full_kv_indices)
    kept = want.full_kv_indices[0, :, :, : int(want.full_kv_num_blocks.min())]
    assert int(kept.max()) < 5, "a key block holding only padding (rows 80-99) is never preferred"


@pytest.mark.parametrize("n, block_size", [(150, (32, 16)), (300, (128, 64)), (97, (16, 48))])
def test_the_unpadded_estimate_takes_fewer_launches_and_keeps_the_same_blocks(n, block_size):
    """Without lengths the estimator pools and weighs in fewer launches (`_means`; the counts and, with `keep`,
    the kept number known on the host); with every length given in full it takes the padded path's arithmetic.
    Both keep the same blocks."""
    from jointattn.runtime.sparse_estimate import estimate_kv_blocks

    g = torch.Generator().manual_seed(n)
    q, k = torch.randn(2, 3, n, 16, generator=g), torch.randn(2, 3, n, 16, generator=g)
    q = q + k
    full = torch.tensor([n, n])
    for share in (dict(keep=0.3, cdf=None), dict(keep=None, cdf=0.8)):
        fast = estimate_kv_blocks(q, k, share["keep"], share["cdf"], *block_size)
        padded = estimate_kv_blocks(q, k, share["keep"], share["cdf"], *block_size, valid_n=full)
        assert torch.equal(fast[0], padded[0])
        assert int(fast[0].min()) > 0
        for a, b_, c in zip(fast[1].flatten(0, 2), padded[1].flatten(0, 2), fast[0].flatten()):
            assert a[:c].tolist() == b_[:c].tolist()  # the kept blocks, ascending
    with torch.profiler.profile() as prof:
        estimate_kv_blocks(q, k, 0.3, None, *block_size)
    calls = [e for e in prof.events() if e.name.startswith("aten::") and e.cpu_parent is None]
    assert len(calls) <= 32, [e.name for e in calls]  # top-level aten calls (kernels or views); 60 before
