"""`joint_attention(..., block_mask=bm)` (`jointattn::block_sparse_joint_attention`) on the reference runtime:
forward, lse and gradients against the float64 masked ground truth (cat -> attention over what the mask allows
plus every valid text key -> slice), for random BlockMasks with partial blocks, empty rows, no blocks at all and
a single block, at odd N and L, with per-batch padding on both token sets."""

import pytest
import torch
from helpers import joint_inputs, rel_err
from jointattn.runtime.sparse_layout import spatial_layout
from sparse_cases import block_mask_of, dense_of, masked_float64, random_element_mask
from torch.nn.attention.flex_attention import BlockMask

import jointattn

B, H, N, L, D = 2, 3, 75, 7, 8  # N, L: no block multiples


def _check(block_mask, *, logical_n=None, logical_l=None, seed=0, n=N, l=L, grads=True):  # noqa: E741
    inputs = joint_inputs(B, H, n, l, D, dtype=torch.float64, seed=seed, requires_grad=grads)
    out = jointattn.joint_attention(*inputs, block_mask=block_mask, logical_n=logical_n, logical_l=logical_l)
    ref_inputs = [t.detach().clone().requires_grad_(grads) for t in inputs]
    ref = masked_float64(*ref_inputs, dense_of(block_mask, B, H), logical_n=logical_n, logical_l=logical_l)
    for got, want, tol in zip(out, ref, (1e-12, 1e-12, 1e-6)):  # lse is float32 by contract
        assert torch.equal(torch.isfinite(got), torch.isfinite(want))
        assert rel_err(got, want) < tol
    if not grads:
        return out
    g = torch.Generator().manual_seed(seed + 1)
    weights = [torch.randn(t.shape, dtype=torch.float64, generator=g) for t in ref]
    # No cotangent on an lse of -inf; lse is float32, so its cotangent is rounded to float32 on the way in.
    weights[2] = torch.where(torch.isfinite(ref[2]), weights[2], 0.0).float().double()
    total = lambda outs: sum(
        (torch.where(torch.isfinite(o), o, 0.0) * w).sum() for o, w in zip(outs, weights)
    )
    got = torch.autograd.grad(total(out), inputs)
    want = torch.autograd.grad(total(ref), ref_inputs)
    for x, y in zip(got, want):
        assert rel_err(x, y) < 1e-11
    return out


@pytest.mark.parametrize("block_size", [(64, 16), (16, 32), (32, 16), (128, 128), (24, 40)])
@pytest.mark.parametrize("per_head", [False, True])
def test_random_block_masks_match_the_masked_reference(block_size, per_head):
    seed = block_size[0] + block_size[1] + per_head
    dense = random_element_mask(B if per_head else 1, H if per_head else 1, N, *block_size, seed)
    bm = block_mask_of(dense, block_size)
    assert (bm.kv_num_blocks.sum() > 0) or block_size == (128, 128)
    _check(bm, seed=seed)


def test_padding_on_both_token_sets():
    dense = random_element_mask(1, H, N, 32, 16, seed=3)
    _check(block_mask_of(dense, (32, 16)), logical_n=torch.tensor([75, 40]), logical_l=torch.tensor([3, 7]))


def test_rows_without_keys_get_zero_and_minus_inf_like_the_dense_op():
    """No text and an all-empty mask: every spatial row sees nothing. The dense op gives 0 / -inf there."""
    empty = torch.zeros(1, 1, N, N, dtype=torch.bool)
    bm = block_mask_of(empty, (64, 16))
    assert int(bm.kv_num_blocks.sum()) == 0 and int(bm.full_kv_num_blocks.sum()) == 0
    out, joint_out, lse = _check(bm, logical_l=0)
    assert torch.all(out == 0) and torch.all(torch.isneginf(lse[:, :, :N]))
    dense_ref = jointattn.joint_attention(*joint_inputs(B, H, 0, L, D, dtype=torch.float64), logical_l=0)
    assert torch.all(torch.isneginf(dense_ref[2]))  # the dense op's convention for rows without keys


def test_empty_query_blocks_and_a_single_block():
    dense = random_element_mask(1, 1, N, 32, 16, seed=7)
    dense[:, :, :32] = False  # query block 0: text keys only
    _check(block_mask_of(dense, (32, 16)), logical_l=torch.tensor([0, 4]))
    one = torch.zeros(1, 1, N, N, dtype=torch.bool)
    one[:, :, 64:, 64:] = True  # the one corner block, a partial one (N = 75)
    bm = block_mask_of(one, (64, 16))
    assert int((bm.kv_num_blocks + bm.full_kv_num_blocks).sum()) == 1
    _check(bm)


def test_blocks_listed_without_a_mask_mod_are_attended_whole():
    """`BlockMask.from_kv_blocks` without mask_mod: flex treats listed blocks as all-True (noop mask_mod)."""
    num = torch.tensor([[[2, 0, 1]]], dtype=torch.int32)
    idx = torch.tensor([[[[0, 3, 0, 0, 0], [0] * 5, [4, 0, 0, 0, 0]]]], dtype=torch.int32)
    bm = BlockMask.from_kv_blocks(num, idx, BLOCK_SIZE=(32, 16), seq_lengths=(N, N))
    _check(bm, seed=4)


def test_odd_sizes_and_no_text():
    dense = random_element_mask(1, 1, 37, 16, 16, seed=9)
    _check(block_mask_of(dense, (16, 16)), n=37, l=0)
    _check(block_mask_of(random_element_mask(1, 1, 37, 16, 16, seed=10), (16, 16)), n=37, l=1)


def test_the_layout_is_built_once_per_block_mask():
    bm = block_mask_of(random_element_mask(1, 1, N, 32, 16, seed=1), (32, 16))
    assert spatial_layout(bm, N) is spatial_layout(bm, N)


def test_opcheck_and_double_backward():
    bm = block_mask_of(random_element_mask(1, H, N, 32, 16, seed=11), (32, 16))
    layout = spatial_layout(bm, N)
    inputs = joint_inputs(B, H, N, L, D, dtype=torch.float64, seed=2, requires_grad=True)
    args = (
        *inputs,
        *layout.tensors,
        layout.q_block,
        layout.kv_block,
        None,
        None,
        torch.tensor([4, 7]),
        "auto",
    )
    torch.library.opcheck(torch.ops.jointattn.block_sparse_joint_attention.default, args)
    out = jointattn.joint_attention(*inputs, block_mask=bm)
    (gq,) = torch.autograd.grad(out[0].square().sum(), inputs[0], create_graph=True)
    assert torch.autograd.gradcheck(
        lambda q: jointattn.joint_attention(q, *inputs[1:], block_mask=layout)[0],
        (inputs[0].detach()[:, :, :, :].clone().requires_grad_(),),
        eps=1e-6, atol=1e-6, fast_mode=True,
    )  # fmt: skip
    assert gq.requires_grad


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(block_mask="x"), "block_mask must be a flex_attention BlockMask"),
        (
            dict(block_mask=block_mask_of(torch.ones(1, 1, 40, 40, dtype=torch.bool), (16, 16))),
            "Q_LEN = KV_LEN = N",
        ),
        (dict(runtime="sdpa"), "with a block_mask, runtime must be one of"),
    ],
)
def test_bad_block_mask_arguments(kwargs, words):
    kwargs.setdefault("block_mask", block_mask_of(torch.ones(1, 1, N, N, dtype=torch.bool), (16, 16)))
    with pytest.raises((ValueError, TypeError), match=words):
        jointattn.joint_attention(*joint_inputs(B, H, N, L, D), **kwargs)
