"""`merge_partials`: attention over disjoint key sets, merged by log-sum-exp, equals attention over their union."""

import torch
from helpers import joint_inputs, rel_err
from jointattn.runtime.merge import merge_partials
from jointattn.runtime.reference import reference_forward


def test_merging_two_key_sets_equals_attention_over_both():
    q, k, v, jq, jk, jv = joint_inputs(2, 3, 11, 6, 8, dtype=torch.float64, seed=1)
    none = torch.full((2, 17), float("-inf"), dtype=torch.float64)
    only_first = torch.cat([torch.zeros(2, 11, dtype=torch.float64), none[:, :6]], 1)
    only_second = torch.cat([none[:, :11], torch.zeros(2, 6, dtype=torch.float64)], 1)
    o1, j1, l1 = reference_forward(q, k, v, jq, jk, jv, 0.4, only_first)
    o2, j2, l2 = reference_forward(q, k, v, jq, jk, jv, 0.4, only_second)
    want_o, want_j, want_l = reference_forward(q, k, v, jq, jk, jv, 0.4)
    out, lse = merge_partials(torch.cat([o1, j1], 2), l1, torch.cat([o2, j2], 2), l2)
    assert rel_err(out, torch.cat([want_o, want_j], 2)) < 1e-13  # float64 stays float64-accurate
    assert rel_err(lse, want_l) < 1e-13


def test_rows_without_keys_on_both_sides_stay_zero_with_finite_gradients():
    inf = float("-inf")
    lse_a = torch.tensor([0.3, inf, inf, 1.5], requires_grad=True)
    lse_b = torch.tensor([inf, -0.2, inf, 2.0], requires_grad=True)
    out_a = torch.randn(4, 3, dtype=torch.float64)
    out_b = torch.randn(4, 3, dtype=torch.float64)
    out_a[2] = out_b[2] = 0  # the op's output for a row without keys
    out_a.requires_grad_(), out_b.requires_grad_()
    out, lse = merge_partials(out_a, lse_a, out_b, lse_b)
    assert lse[2] == inf and torch.all(out[2] == 0)
    torch.testing.assert_close(out[0], out_a[0])  # one side empty: the other side's result
    torch.testing.assert_close(out[1], out_b[1])
    (out.sum() + torch.where(torch.isfinite(lse), lse, 0).sum()).backward()
    for t in (lse_a, lse_b, out_a, out_b):
        assert torch.isfinite(t.grad).all()
