"""The block-sparse Triton kernels (forward and backward) in Triton's interpreter on tiny cases, against the
float64 masked reference: partial and full blocks, several block shapes, per-head masks, padding on both token
sets, rows that see nothing, no text. On CUDA the same tests run the compiled kernels."""

import pytest
import torch
from helpers import joint_inputs, rel_err
from jointattn.runtime.sparse_layout import spatial_layout
from jointattn.runtime.sparse_triton_runtime import SparseTritonRuntime, transposed_lists
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
    bm = block_mask_of(dense, block_size).to(DEVICE)
    assert int(bm.kv_num_blocks.sum()) > 0 and int(bm.full_kv_num_blocks.sum()) > 0
    _run(bm, n, 6, logical_n=torch.tensor([n, 30]), logical_l=torch.tensor([0, 5]))


def test_rows_that_see_nothing_and_no_text():
    dense = random_element_mask(B, 1, 40, 16, 16, seed=5)
    dense[:, :, :16] = False  # query block 0 sees no spatial key; with no text it sees nothing
    _run(block_mask_of(dense, (16, 16)).to(DEVICE), 40, 0)


def test_half_precision():
    dense = random_element_mask(1, 1, 70, 32, 16, seed=6)
    _run(block_mask_of(dense, (32, 16)).to(DEVICE), 70, 9, dtype=torch.float16, tol=2e-3)


def test_transposed_lists_name_every_listed_block_once():
    bm = block_mask_of(random_element_mask(1, H, 75, 32, 16, seed=2), (32, 16))
    layout = spatial_layout(bm, 75)
    count, qbs, slots = transposed_lists(layout, 75)
    dense_blocks = bm.to_dense().bool()  # [1, H, QBn, KBn]
    for h in range(H):
        for kb in range(dense_blocks.shape[-1]):
            listed = sorted(qbs[0, h, kb, : count[0, h, kb]].tolist())
            assert listed == torch.nonzero(dense_blocks[0, h, :, kb]).flatten().tolist()


def test_unsupported_block_sizes_are_refused_with_a_reason():
    bm = block_mask_of(torch.ones(1, 1, 40, 40, dtype=torch.bool), (24, 40))
    call_inputs = joint_inputs(B, H, 40, 3, D)
    with pytest.raises(ValueError, match="multiples of 16"):
        jointattn.joint_attention(*call_inputs, block_mask=bm, runtime="triton")
    assert SparseTritonRuntime  # the runtime object is importable without a GPU
