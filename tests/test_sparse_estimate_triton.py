"""The estimator's two Triton kernels (`kernels/estimate_blocks.py`, `JOINTATTN_ESTIMATOR=triton`) in Triton's
interpreter (on a machine with CUDA: compiled, on the device; checked on CPU either way): the blocks each query
block keeps are the top ones by the float64 pooled scores (ties within float32 noise either way), the count is
the torch path's (keep) or the fewest blocks reaching the mass (cdf), each row is a permutation with the kept
blocks first, ascending; padding on the keys, NaN, and through `estimate_block_mask`; which implementation runs
unset (`sparse_estimate.estimator_kernels`) and with which launch settings."""

import math

import pytest
import torch
from jointattn.runtime import sparse_estimate
from jointattn.runtime.sparse_estimate import estimate_kv_blocks, estimate_kv_blocks_triton, estimator_kernels
from jointattn.sparse import estimate_block_mask

# Where the kernels run: CUDA where there is a device (conftest sets TRITON_INTERPRET only where there is none),
# else Triton's interpreter on CPU tensors. The checks themselves run on CPU in float64.
KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _kernels(q, k, keep, cdf, q_block, kv_block, scale, valid=None):
    """`estimate_kv_blocks_triton` on KERNEL_DEVICE for CPU q, k (and lengths); (count, indices) on CPU."""
    to = lambda t: None if t is None else t.to(KERNEL_DEVICE)  # noqa: E731
    got = estimate_kv_blocks_triton(to(q), to(k), keep, cdf, q_block, kv_block, scale, to(valid))
    return tuple(t.cpu() for t in got)


TIE = 1e-4  # float32 rounding of pooled scores of size ~10, relative to float64


def _exact_scores(q, k, q_block, kv_block, scale, valid):
    """[b, nh, QBn, KBn] float64 pooled scores, each key block weighted by its valid token count (log space)."""
    b, nh, n, dh = q.shape
    limit = torch.full((b,), n) if valid is None else valid.clamp(0, n)
    rows = torch.arange(n)
    keep_row = (rows[None, :] < limit[:, None])[:, None, :, None]  # [b, 1, n, 1]

    def pooled(x, block):
        nb = -(-n // block)
        x = torch.where(keep_row, x.double(), 0.0)
        pad = nb * block - n
        sums = torch.nn.functional.pad(x, (0, 0, 0, pad)).reshape(b, nh, nb, block, dh).sum(3)
        starts = torch.arange(nb) * block
        counts = (limit[:, None] - starts[None, :]).clamp(0, block).double()  # [b, nb]
        return sums / counts.clamp(min=1)[:, None, :, None], counts

    qm, _ = pooled(q, q_block)
    km, counts = pooled(k, kv_block)
    return qm @ km.transpose(-1, -2) * scale + counts.log()[:, None, None, :]


def _check(q, k, keep, cdf, q_block, kv_block, valid=None, got=None):
    """Checks the kernels' (count, indices) on CPU float q, k; `got`: those computed elsewhere (on a GPU)."""
    dh = q.shape[3]
    scale = dh**-0.5
    count, indices = got or _kernels(q, k, keep, cdf, q_block, kv_block, scale, valid)
    want_count, _ = estimate_kv_blocks(q, k, keep, cdf, q_block, kv_block, scale, valid)  # the torch path
    exact = _exact_scores(q, k, q_block, kv_block, scale, valid)
    kbn = exact.shape[-1]
    for (bz, h, r), c in zip(torch.cartesian_prod(*map(torch.arange, count.shape)).tolist(), count.flatten()):
        row = indices[bz, h, r]
        c = int(c)
        assert sorted(row.tolist()) == list(range(kbn)), "not a permutation"
        kept, rest = row[:c], row[c:]
        assert kept.tolist() == sorted(kept.tolist()) and rest.tolist() == sorted(rest.tolist())
        s = exact[bz, h, r]
        s = torch.where(torch.isnan(s), float("-inf"), s)
        if rest.numel():  # every kept block scores at least as high as every other, up to float32 noise
            low, high = s[kept].min(), s[rest].max()
            assert low >= high or low == high or (low - high).abs() < TIE * max(1.0, high.abs()), (bz, h, r)
        if keep is not None:
            assert c == int(want_count[bz, h, r]) == min(kbn, max(1, math.ceil(keep * kbn)))
        else:  # the fewest blocks whose softmax mass reaches cdf (one more or less only at a near-tie)
            mass = torch.softmax(s.sort(descending=True).values, 0).cumsum(0)
            exact_count = min(kbn, int((mass < cdf).sum()) + 1)
            assert abs(c - exact_count) <= (1 if (mass - cdf).abs().min() < TIE else 0), (c, exact_count)


@pytest.mark.parametrize(
    "b, nh, n, dh, q_block, kv_block",
    [
        (2, 3, 300, 32, 64, 32),
        (1, 2, 257, 64, 128, 64),
        (1, 1, 70, 16, 128, 16),
        (2, 2, 1000, 40, 128, 128),
        (1, 2, 200, 32, 24, 40),
    ],  # blocks that are not multiples of the kernel's 16-row steps
)
@pytest.mark.parametrize("share", ["keep=0.3", "keep=1.0", "cdf=0.8", "cdf=1.0"])
def test_kept_blocks_are_the_top_ones(b, nh, n, dh, q_block, kv_block, share):
    gen = torch.Generator().manual_seed(n + dh)
    q, k = (torch.randn(b, nh, n, dh, generator=gen) for _ in range(2))
    q = q + 0.5 * k  # some structure (random q, k alone give flat scores)
    name, value = share.split("=")
    keep, cdf = (float(value), None) if name == "keep" else (None, float(value))
    _check(q, k, keep, cdf, q_block, kv_block)


def _threshold_by(monkeypatch, search: bool):
    """The scratch rows' threshold by bisection (`search`, their default) or by sorting the rows."""
    import dataclasses

    from jointattn.kernels import estimate_blocks

    tiles = estimate_blocks.grid_and_tiles
    monkeypatch.setattr(
        estimate_blocks, "grid_and_tiles", lambda *a: dataclasses.replace(tiles(*a), search=search)
    )


# (search, share, key block): every share by bisection at 130 and 260 key blocks (rows of 256 and 512); the sort,
# which Triton's interpreter runs slowly (~13 s a case), at two.
SCRATCH_CASES = [
    (True, share, kv) for share in ("keep=0.3", "keep=1.0", "cdf=0.8", "cdf=1.0") for kv in (8, 4)
]
SCRATCH_CASES += [(False, "keep=0.3", 8), (False, "cdf=0.8", 8)]


@pytest.mark.parametrize("search, share, kv_block", SCRATCH_CASES)
def test_past_128_key_blocks_the_scores_go_through_the_scratch_rows(monkeypatch, search, share, kv_block):
    """More key blocks than one product covers: the scores go through the scratch rows, 32 query blocks a
    program, selected 8 or 4 rows at a time, each row's threshold by bisection (or, as before, a sort)."""
    _threshold_by(monkeypatch, search)
    gen = torch.Generator().manual_seed(12)
    q, k = (torch.randn(1, 2, 1040, 16, generator=gen) for _ in range(2))
    name, value = share.split("=")
    keep, cdf = (float(value), None) if name == "keep" else (None, float(value))
    _check(q + 0.5 * k, k, keep, cdf, 128, kv_block)


@pytest.mark.parametrize("share", ["keep=0.3", "cdf=0.5"])
def test_bisection_breaks_exact_ties_by_lowest_index(monkeypatch, share):
    """Key blocks repeated exactly (equal pooled scores): the count is still the asked one (keep) or the mass's,
    and the kept blocks among the tied ones are the lowest-indexed."""
    _threshold_by(monkeypatch, True)
    gen = torch.Generator().manual_seed(13)
    q, k = (torch.randn(1, 1, 1040, 16, generator=gen) for _ in range(2))
    k = k[:, :, :80].repeat(1, 1, 13, 1)  # 130 blocks of 8 keys, 10 distinct, each 13 times
    name, value = share.split("=")
    keep, cdf = (float(value), None) if name == "keep" else (None, float(value))
    count, indices = _kernels(q + 0.5 * k, k, keep, cdf, 128, 8, 16**-0.5)
    _check(q + 0.5 * k, k, keep, cdf, 128, 8, got=(count, indices))
    distinct = 10
    for r in range(count.shape[2]):
        kept = indices[0, 0, r, : count[0, 0, r]].tolist()
        by_value = {}
        for block in kept:
            by_value.setdefault(block % distinct, []).append(block)
        for value_blocks in by_value.values():  # per tied value, the lowest-indexed copies
            copies = [c for c in range(130) if c % distinct == value_blocks[0] % distinct]
            assert value_blocks == copies[: len(value_blocks)], (r, value_blocks)


@pytest.mark.parametrize("search, share", [(True, "keep=0.5"), (True, "cdf=0.9"), (False, "cdf=0.9")])
def test_scratch_rows_with_padded_keys_and_nan(monkeypatch, search, share):
    """The scratch rows' selection with keys past each element's valid length (blocks of padding only score
    -inf), a NaN in a valid block (never preferred), and an element without any valid key (one block kept)."""
    _threshold_by(monkeypatch, search)
    gen = torch.Generator().manual_seed(14)
    q, k = (torch.randn(3, 1, 1040, 16, generator=gen) for _ in range(2))
    q[:, :, 700:] = float("nan")
    k[:, :, 700:] = float("nan")
    k[0, 0, 21] = float("nan")  # key block 2 of element 0
    name, value = share.split("=")
    keep, cdf = (float(value), None) if name == "keep" else (None, float(value))
    valid = torch.tensor([700, 333, 0])
    count, indices = _kernels(q, k, keep, cdf, 128, 8, 16**-0.5, valid)
    _check(q, k, keep, cdf, 128, 8, valid=valid, got=(count, indices))
    for r in range(count.shape[2]):
        assert 2 not in indices[0, 0, r, : count[0, 0, r]].tolist()
    if cdf is not None:
        assert (count[2] == 1).all()  # no valid key: one block, as the torch path's softmax of all -inf


@pytest.mark.parametrize("share", ["keep=0.5", "cdf=0.9"])
def test_padded_keys_weigh_nothing(share):
    """Keys and queries past each batch element's valid length are left out; a block of padding only scores
    -inf (kept only when the count asks for more blocks than hold a valid key)."""
    gen = torch.Generator().manual_seed(5)
    q, k = (torch.randn(3, 2, 300, 32, generator=gen) for _ in range(2))
    q[:, :, 200:] = float("nan")  # padding may hold anything
    k[:, :, 200:] = float("nan")
    name, value = share.split("=")
    keep, cdf = (float(value), None) if name == "keep" else (None, float(value))
    _check(q, k, keep, cdf, 64, 16, valid=torch.tensor([200, 130, 0]))


def test_a_nan_block_is_never_preferred():
    gen = torch.Generator().manual_seed(6)
    q, k = (torch.randn(1, 1, 256, 32, generator=gen) for _ in range(2))
    k[0, 0, 40] = float("nan")  # key block 1 (keys 32..63)
    count, indices = _kernels(q, k, 0.5, None, 64, 32, 32**-0.5)
    for r in range(count.shape[2]):
        assert 1 not in indices[0, 0, r, : count[0, 0, r]].tolist()


def test_estimate_block_mask_through_the_switch(monkeypatch):
    gen = torch.Generator().manual_seed(7)
    q, k = (torch.randn(2, 2, 500, 32, generator=gen).to(KERNEL_DEVICE) for _ in range(2))
    q = q + 0.5 * k
    monkeypatch.setenv("JOINTATTN_ESTIMATOR", "torch")
    want = estimate_block_mask(q, k, keep=0.25, block_size=(128, 32))
    monkeypatch.setenv("JOINTATTN_ESTIMATOR", "triton")
    assert estimator_kernels(q) == "triton"
    got = estimate_block_mask(q, k, keep=0.25, block_size=(128, 32))
    assert torch.equal(got.full_kv_num_blocks, want.full_kv_num_blocks)
    assert torch.equal(got.to_dense(), want.to_dense())  # no near-ties in this draw


@pytest.mark.gpu
@pytest.mark.parametrize("dh, tile", [(128, (128, 64)), (64, (128, 16)), (64, (64, 128))])
@pytest.mark.parametrize("share", ["keep=0.3", "cdf=0.9"])
@pytest.mark.parametrize("padded", [False, True])
def test_on_the_gpu_bf16(dh, tile, share, padded):
    """The compiled kernels on CUDA, bf16 inputs as the models give them (pooled in float32 as in the
    interpreter), checked on CPU against float64 scores of the same bf16 values."""
    gen = torch.Generator(device="cuda").manual_seed(dh + tile[1])
    n = 4099
    q, k = (torch.randn(2, 3, n, dh, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(2))
    q = q + 0.5 * k
    valid = torch.tensor([n, 3000], device="cuda") if padded else None
    name, value = share.split("=")
    keep, cdf = (float(value), None) if name == "keep" else (None, float(value))
    got = estimate_kv_blocks_triton(q, k, keep, cdf, *tile, dh**-0.5, valid)
    torch.cuda.synchronize()
    cpu = lambda t: None if t is None else t.cpu()  # noqa: E731
    _check(q.float().cpu(), k.float().cpu(), keep, cdf, *tile, valid=cpu(valid), got=tuple(map(cpu, got)))


def test_the_switch_refuses_other_values_and_keeps_torch_off_the_kernels(monkeypatch):
    q = torch.zeros(1, 1, 8, 8)
    monkeypatch.setenv("JOINTATTN_ESTIMATOR", "cuda")
    with pytest.raises(
        ValueError, match=r"JOINTATTN_ESTIMATOR must be 'torch' or 'triton' \(or unset\); got 'cuda'"
    ):
        estimator_kernels(q)
    monkeypatch.delenv("JOINTATTN_ESTIMATOR")
    assert estimator_kernels(q) == "torch"  # unset: CPU tensors take the torch path
    monkeypatch.setenv("JOINTATTN_ESTIMATOR", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert estimator_kernels(q) == "torch"  # CPU tensors without the interpreter: the torch path
    assert sparse_estimate.ESTIMATOR_ENV == "JOINTATTN_ESTIMATOR"


def test_unset_the_kernels_run_up_to_4096_key_blocks_on_cuda(monkeypatch):
    """JOINTATTN_ESTIMATOR unset: CUDA tensors with at most 4096 key blocks take the kernels (SD3.5's 1024^2
    layer: 64 blocks of 64 keys; Mochi's: 696 and, of 16 keys, 2783), where they measured faster than the torch
    path; more blocks (unmeasured) and CPU tensors the torch path."""
    from types import SimpleNamespace

    monkeypatch.delenv("JOINTATTN_ESTIMATOR", raising=False)
    sd35 = SimpleNamespace(is_cuda=True, shape=(2, 38, 4096, 64))
    mochi = SimpleNamespace(is_cuda=True, shape=(1, 24, 44520, 128))
    assert estimator_kernels(sd35, 64) == "triton" and estimator_kernels(sd35, 1) == "triton"
    assert estimator_kernels(mochi, 64) == "triton" and estimator_kernels(mochi, 16) == "triton"
    assert estimator_kernels(mochi, 8) == "torch"  # 5565 blocks
    assert estimator_kernels(sd35) == "torch"  # no key block size: the torch path
    assert sparse_estimate.KERNELS_MAX_KEY_BLOCKS == 4096


def test_launch_settings_one_product_or_scratch_rows():
    """Every key block in one product (up to 128 at dh <= 64, 64 above): 16 query blocks a program, all selected
    at once by a sort; past that the scratch rows, 32 query blocks and ~2048 values selected at a time by
    bisection. Pooling loads stop at 16384 values."""
    from jointattn.kernels.estimate_blocks import grid_and_tiles

    sd35 = grid_and_tiles(32, 64, 76, 64)
    assert (sd35.kbn_pad, sd35.chunk, sd35.qt, sd35.select_rows, sd35.select_warps) == (64, 64, 16, 16, 4)
    assert sd35.select_grid == (2, 76) and sd35.pool_grid == (96, 76) and sd35.rows == 128
    mochi = grid_and_tiles(348, 696, 24, 128)
    assert (mochi.kbn_pad, mochi.chunk, mochi.qt, mochi.select_rows, mochi.select_warps) == (
        1024,
        64,
        32,
        2,
        8,
    )
    assert mochi.select_grid == (11, 24) and mochi.rows == 128 and mochi.pool_warps == 2
    assert (
        mochi.search and not sd35.search
    )  # the scratch rows' threshold by bisection, one product's by a sort
    assert grid_and_tiles(4, 128, 1, 64).qt == 16 and grid_and_tiles(4, 129, 1, 64).qt == 32
    assert grid_and_tiles(4, 65, 1, 128).qt == 32 and grid_and_tiles(4, 8, 1, 256).rows == 64
