"""The run-time-checked mask path: `key_padding_lengths` + `masked_joint_attention` (+ its backward).

For any key mask that varies only over batch and keys (bool or additive), the pair must compute what SDPA
computes with that mask; prefix padding masks must take the length-based op, anything else the exact path.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import joint_inputs, rel_err

import jointattn  # noqa: F401  (registers the ops)

B, H, N, L, D = 2, 2, 9, 5, 8


def _masks(kind):
    valid = torch.ones(B, N + L, dtype=torch.bool)
    valid[0, 6:N] = False  # image padding on sample 0
    valid[1, N + 2 :] = False  # text padding on sample 1
    if kind == "hole":
        valid[0, N + 1] = False  # not a prefix
    if kind == "additive-soft":  # a real bias, not padding: must run exactly, never as lengths
        return torch.randn(B, 1, 1, N + L)
    mask = valid[:, None, None, :]
    if kind.startswith("additive"):
        return torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    return mask


def _run(mask, inputs):
    key_mask, joint_key_mask = mask[..., :N], mask[..., N:]
    check = torch.ops.jointattn.key_padding_lengths(key_mask, joint_key_mask, B, N, L)
    out = torch.ops.jointattn.masked_joint_attention(*inputs, key_mask, joint_key_mask, *check, None, "auto")
    return out, check


@pytest.mark.parametrize("kind", ["bool", "additive", "hole", "additive-soft"])
def test_matches_sdpa_with_the_mask_forward_and_backward(kind):
    mask = _masks(kind)
    inputs = joint_inputs(B, H, N, L, D, dtype=torch.float64, seed=5, requires_grad=True)
    (out, joint_out, _), check = _run(mask, inputs)
    assert bool(check[2]) == (kind in ("bool", "additive")) and check[2].device.type == "cpu"
    ref_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    cat = lambda a, b: torch.cat([a, b], 2)
    # A float mask in the query's dtype: torch 2.13's CPU SDPA gets a float32 mask on float64 queries wrong.
    ref_mask = mask if mask.dtype == torch.bool else mask.double()
    ref = F.scaled_dot_product_attention(
        cat(*ref_inputs[0::3]), cat(*ref_inputs[1::3]), cat(*ref_inputs[2::3]), attn_mask=ref_mask
    )
    assert rel_err(out, ref[:, :, :N]) < 1e-10 and rel_err(joint_out, ref[:, :, N:]) < 1e-10
    weights = torch.randn(ref.shape, dtype=torch.float64)
    grads = torch.autograd.grad((torch.cat([out, joint_out], 2) * weights).sum(), inputs)
    ref_grads = torch.autograd.grad((ref * weights).sum(), ref_inputs)
    for got, want in zip(grads, ref_grads):
        assert rel_err(got, want) < 1e-10


@pytest.mark.parametrize("kind", ["bool", "hole"])
def test_opcheck(kind):
    mask = _masks(kind)
    inputs = joint_inputs(B, H, N, L, D, requires_grad=True)
    check = torch.ops.jointattn.key_padding_lengths(mask[..., :N], mask[..., N:], B, N, L)
    torch.library.opcheck(
        torch.ops.jointattn.key_padding_lengths.default, (mask[..., :N], mask[..., N:], B, N, L)
    )
    torch.library.opcheck(
        torch.ops.jointattn.masked_joint_attention.default,
        (*inputs, mask[..., :N], mask[..., N:], *check, None, "auto"),
    )


def test_bad_mask_shape_is_named():
    with pytest.raises(ValueError, match=r"key_mask must broadcast to \[b=2, 1, 1, 9\]"):
        torch.ops.jointattn.key_padding_lengths(
            torch.ones(B, 1, N + 1, N, dtype=torch.bool), torch.ones(B, L, dtype=torch.bool), B, N, L
        )
