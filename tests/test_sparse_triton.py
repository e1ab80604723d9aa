"""The block-sparse Triton kernels (forward and backward) in Triton's interpreter on tiny cases, against the
float64 masked reference: partial and full blocks, several block shapes, per-head masks, padding on both token
sets, rows that see nothing, no text. On CUDA the same tests run the compiled kernels."""

import pytest
import torch
from helpers import joint_inputs, rel_err
from jointattn.runtime.sparse_layout import SpatialLayout, spatial_layout
from jointattn.runtime.sparse_triton_runtime import (
    SparseTritonRuntime,
    _transposed_lists,
    transposed_lists,
    without_whole_spatial_lengths,
)
from sparse_cases import block_mask_of, dense_of, masked_float64, random_element_mask

import jointattn

B, H, D = 2, 2, 16
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _run(bm, n, l, *, dtype=torch.float32, tol=2e-5, **lengths):  # noqa: E741
    inputs = [t.to(DEVICE) for t in joint_inputs(B, H, n, l, D, dtype=dtype, seed=n + l)]
    inputs = [t.requires_grad_() for t in inputs]
    lengths = {key: val.to(DEVICE) for key, val in lengths.items()}
    out = jointattn.joint_attention(*inputs, block_mask=bm, runtime="triton", **lengths)
    ref_inputs = [t.detach().cpu().double().requires_grad_() for t in inputs]
    cpu_lengths = {key: val.cpu() for key, val in lengths.items()}
    ref = masked_float64(*ref_inputs, dense_of(bm, B, H), **cpu_lengths)
    for got, want in zip(out, ref):
        assert torch.equal(torch.isfinite(got.cpu()), torch.isfinite(want))
        assert rel_err(got.cpu(), want) < tol
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(t.shape, dtype=torch.float64, generator=g) for t in ref]
    weights[2] = torch.where(torch.isfinite(ref[2]), weights[2], 0.0).float().double()  # lse is float32
    total = lambda outs: sum(
        (torch.where(torch.isfinite(o), o, 0.0) * w.to(o.device, o.dtype)).sum()
        for o, w in zip(outs, weights)
    )
    got = torch.autograd.grad(total(out), inputs)
    want = torch.autograd.grad(total(ref), ref_inputs)
    for x, y in zip(got, want):
        assert rel_err(x.cpu(), y) < tol * 5


@pytest.mark.parametrize("block_size, n", [((32, 16), 53), ((64, 32), 70), ((16, 48), 53)])
def test_kernels_match_the_masked_reference(block_size, n):
    dense = random_element_mask(1, H, n, *block_size, seed=sum(block_size))
    bm = block_mask_of(dense.to(DEVICE), block_size)
    assert int(bm.kv_num_blocks.sum()) > 0 and int(bm.full_kv_num_blocks.sum()) > 0
    _run(bm, n, 6, logical_n=torch.tensor([n, 30]), logical_l=torch.tensor([0, 5]))


def test_block_indices_past_the_last_key_block_name_no_key():
    """A mask shortened from a longer one (flex's `BlockMask._adjust` does this) lists key blocks past the last
    one: they must not become the last block (they did, in the reference and the dk/dv lists). Built directly,
    since `_adjust` rounds seq_lengths up to the block size in some torch versions (2.11)."""
    from torch.nn.attention.flex_attention import BlockMask

    qbn, kbn = 5, 6  # 70 tokens in blocks of 16 (5), and one listed block past them
    full_num = torch.ones(1, 1, qbn, dtype=torch.int32)
    full_idx = torch.full((1, 1, qbn, kbn), 5, dtype=torch.int32)  # key block 5: keys 80..95, none exists
    none = torch.zeros(1, 1, qbn, dtype=torch.int32)
    short = BlockMask.from_kv_blocks(
        none, torch.zeros(1, 1, qbn, kbn, dtype=torch.int32), full_num, full_idx, BLOCK_SIZE=16,
        mask_mod=lambda b, h, q, kv: kv // 16 == 5, seq_lengths=(70, 70),
    )  # fmt: skip
    assert int(short.full_kv_indices[0, 0, 0, 0]) == 5 and tuple(short.seq_lengths) == (70, 70)
    _run(short.to(DEVICE), 70, 3)
    x = joint_inputs(1, 1, 70, 3, D, seed=4)
    ref = jointattn.joint_attention(*x, block_mask=short, runtime="reference")
    want = masked_float64(*(t.double() for t in x), dense_of(short, 1, 1))
    assert rel_err(ref[0], want[0]) < 1e-6


def test_rows_that_see_nothing_and_no_text():
    dense = random_element_mask(B, 1, 40, 16, 16, seed=5)
    dense[:, :, :16] = False  # query block 0 sees no spatial key; with no text it sees nothing
    _run(block_mask_of(dense.to(DEVICE), (16, 16)), 40, 0)


@pytest.mark.parametrize("block_size, n", [((32, 16), 70), ((128, 64), 300)])
def test_half_precision(block_size, n):
    """float16 takes the bf16 tiles (128-row query tiles, 64/128-wide key tiles) where the mask's blocks allow."""
    dense = random_element_mask(1, 1, n, *block_size, seed=6)
    _run(block_mask_of(dense.to(DEVICE), block_size), n, 9, dtype=torch.float16, tol=2e-3)


def test_transposed_lists_name_every_listed_block_once():
    bm = block_mask_of(random_element_mask(1, H, 75, 32, 16, seed=2), (32, 16))
    layout = spatial_layout(bm, 75)
    count, qbs, slots = transposed_lists(layout, 75)
    dense_blocks = bm.to_dense().bool()  # [1, H, QBn, KBn]
    for h in range(H):
        for kb in range(dense_blocks.shape[-1]):
            listed = sorted(qbs[0, h, kb, : count[0, h, kb]].tolist())
            assert listed == torch.nonzero(dense_blocks[0, h, :, kb]).flatten().tolist()


def test_transposed_lists_are_built_once_per_layout_and_length():
    bm = block_mask_of(random_element_mask(1, H, 75, 32, 16, seed=3), (32, 16))
    layout = spatial_layout(bm, 75)
    first = transposed_lists(layout, 75)
    assert transposed_lists(layout, 75) is first  # the backward of every layer sharing the pattern
    other = transposed_lists(layout, 70)  # another N (the same blocks cover it) is built afresh
    assert other is not first and transposed_lists(layout, 70) is other
    # The op rebuilds its SpatialLayout from the same tensors each call: they are kept with the tensors.
    rebuilt = SpatialLayout(*layout.tensors, layout.q_block, layout.kv_block)
    assert transposed_lists(rebuilt, 70) is other
    # Another list tensor, or one written in place, builds them afresh (and right).
    swapped = SpatialLayout(
        layout.kv_num_blocks.clone(), *layout.tensors[1:], layout.q_block, layout.kv_block
    )
    assert transposed_lists(swapped, 70) is not other
    assert int(layout.kv_num_blocks.sum()) > 0
    layout.kv_num_blocks.zero_()  # no partial blocks listed any more
    written = transposed_lists(layout, 70)
    assert written is not other and int(written[0].sum()) < int(other[0].sum())
    assert all(torch.equal(a, b) for a, b in zip(written, _transposed_lists(layout, 70)))


def test_spatial_lengths_of_n_for_every_entry_are_dropped_and_others_kept():
    """Mochi's fused layers pass the lengths their key mask was checked to have (N for every video): those are
    no padding, and dropped, so the Hopper kernels (which take no padded spatial set) may run the call."""
    from jointattn.runtime.call import JointCall

    inputs = joint_inputs(2, 1, 40, 5, 8)
    whole = JointCall.of(*inputs, 1.0, torch.tensor([40, 40]), torch.tensor([3, 5]))
    dropped = without_whole_spatial_lengths(whole)
    assert dropped.logical_n is None and dropped.logical_l is whole.logical_l
    part = JointCall.of(*inputs, 1.0, torch.tensor([40, 39]), None)
    assert without_whole_spatial_lengths(part) is part
    # and the op computes the same with them as without (the kernels' padded path never sees them)
    bm = block_mask_of(random_element_mask(1, H, 53, 32, 16, seed=5).to(DEVICE), (32, 16))
    _run(bm, 53, 6, logical_n=torch.tensor([53, 53]), logical_l=torch.tensor([4, 6]))


def test_unsupported_block_sizes_are_refused_with_a_reason():
    bm = block_mask_of(torch.ones(1, 1, 40, 40, dtype=torch.bool, device=DEVICE), (24, 40))
    call_inputs = [t.to(DEVICE) for t in joint_inputs(B, H, 40, 3, D)]
    with pytest.raises(ValueError, match="multiples of 16"):
        jointattn.joint_attention(*call_inputs, block_mask=bm, runtime="triton")
    assert SparseTritonRuntime  # the runtime object is importable without a GPU


@pytest.mark.gpu
@pytest.mark.parametrize("dh", [64, 128])
@pytest.mark.parametrize("mask", ["estimate-128x64", "frame-128x16", "frame-64x32-causal", "random-128x256"])
def test_gpu_bf16_at_model_tiles(dh, mask):
    """The compiled kernels at the tiles bf16 gets (128-row query tiles, 64/128-wide key tiles, and 16-wide ones;
    256-key blocks: the forward's 2 stages at dh 128, the backward's 64-key tiles), odd N, padded spatial and text
    sets (the Triton kernels run both passes, Hopper or not), against the float64 reference runtime on the same
    mask; forward and backward."""
    from jointattn.sparse import estimate_block_mask, frame_window

    b, nh, n, l = 2, 3, 1337, 77  # noqa: E741
    inputs = [t.cuda() for t in joint_inputs(b, nh, n, l, dh, dtype=torch.bfloat16, seed=dh)]
    if mask.startswith("estimate"):
        bm = estimate_block_mask(inputs[0], inputs[1], keep=0.3, block_size=(128, 64))
    elif mask == "frame-128x16":
        bm = frame_window(150, 2, causal=False).block_mask(n, device="cuda", block_size=(128, 16))
    elif mask == "random-128x256":
        bm = block_mask_of(random_element_mask(1, nh, n, 128, 256, seed=dh).cuda(), (128, 256))
    else:
        bm = frame_window(100, 3).block_mask(n, device="cuda", block_size=(64, 32))
    layout = spatial_layout(bm, n, "cuda")
    lengths = dict(logical_n=torch.tensor([n, 1200]).cuda(), logical_l=torch.tensor([50, 77]).cuda())
    leaves = [t.detach().requires_grad_() for t in inputs]
    out = jointattn.joint_attention(*leaves, block_mask=layout, runtime="triton", **lengths)
    ref_leaves = [t.detach().double().requires_grad_() for t in inputs]
    ref = jointattn.joint_attention(*ref_leaves, block_mask=layout, runtime="reference", **lengths)
    for got, want in zip(out, ref):
        assert rel_err(got, want) < 2e-2
    g = [torch.randn_like(o) for o in ref[:2]]
    grads = torch.autograd.grad(out[:2], leaves, [x.to(torch.bfloat16) for x in g])
    ref_grads = torch.autograd.grad(ref[:2], ref_leaves, g)
    for got, want in zip(grads, ref_grads):
        assert rel_err(got, want) < 3e-2


@pytest.mark.parametrize("bad", ["v", "k"])
def test_nan_in_a_skipped_block_never_reaches_a_row_in_a_listed_one_it_does(bad):
    """What a query block reads is the key blocks its lists name (full or partial) and the text: a NaN in a key
    or value elsewhere never reaches it (the kernels never load that block, and the reference reads as they do);
    in a listed block it does, masked element or not, as in flex_attention. Kernels and reference agree on where
    NaN lands, forward and backward, and on every finite value."""
    n, l = 64, 5  # noqa: E741
    dense = torch.zeros(1, 1, n, n, dtype=torch.bool)
    dense[:, :, 0:16, 0:16] = True  # query block 0: key block 0, full
    dense[:, :, 16:32, 32:40] = True  # query block 1: key block 2, partial (keys 40..47 masked)
    dense[:, :, 32:48, 0:16] = True  # query block 2: key blocks 0 and 2, full
    dense[:, :, 32:48, 32:48] = True
    dense[:, :, 48:64, 16:32] = True  # query block 3: key block 1, full
    bm = block_mask_of(dense.to(DEVICE), (16, 16))
    inputs = [t.to(DEVICE) for t in joint_inputs(1, 1, n, l, D, seed=9)]
    poisoned = inputs[2 if bad == "v" else 1].clone()
    poisoned[0, 0, 44] = float("nan")  # key block 2, a key query block 1 masks
    inputs[2 if bad == "v" else 1] = poisoned
    results = {}
    for runtime in ("triton", "reference"):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        out, joint_out, lse = jointattn.joint_attention(*leaves, block_mask=bm, runtime=runtime)
        loss = (out.nan_to_num(0.0) * 1.5).sum() + joint_out.nan_to_num(0.0).sum()
        grads = torch.autograd.grad(loss, leaves)
        results[runtime] = [t.detach().cpu() for t in (out, joint_out, lse, *grads)]
    got, want = results["triton"], results["reference"]
    for name, a, w in zip(("out", "joint_out", "lse", "dq", "dk", "dv", "djq", "djk", "djv"), got, want):
        assert torch.equal(torch.isnan(a), torch.isnan(w)), name
        finite = ~torch.isnan(w)
        assert rel_err(a[finite], w[finite]) < 1e-5, name
    out = want[0][0, 0]
    # Query blocks 0 and 3 never read key 44.
    assert torch.isfinite(out[:16]).all() and torch.isfinite(out[48:]).all()
    if bad == "v":  # listed: masked (query block 1) or not (2), and the text rows
        assert torch.isnan(out[16:48]).all() and torch.isnan(want[1]).all()
    else:  # a NaN key is masked out of the scores where the mask hides it (query block 1)
        assert torch.isfinite(out[16:32]).all() and torch.isnan(out[32:48]).all()
