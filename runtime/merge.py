"""Merging attention over disjoint key sets by log-sum-exp.

Attention of the same queries over key sets A and B, computed separately as (o_a, lse_a) and (o_b, lse_b),
equals attention over A ∪ B:  lse = logaddexp(lse_a, lse_b),  o = o_a·exp(lse_a − lse) + o_b·exp(lse_b − lse).
Ring attention (jointattn.distributed) and the ttnn ring emulation both rely on this. Key sets with no valid
key have lse = -inf and weigh nothing; a row with no valid key on either side stays (0, -inf) and passes
zero gradient (not NaN) back. Differentiable, so training through a merged result works.
"""

from __future__ import annotations

import torch

from .reference import accumulation_dtype


def merge_partials(out_a, lse_a, out_b, lse_b):
    """Returns (out, lse) of attention over both key sets.

    out_*: [..., S, dh] (any float dtype); lse_*: [..., S]. Computed in float32 (float64 for float64 inputs);
    out comes back in out_a's dtype, lse in lse_a's.
    """
    both_empty = torch.isneginf(lse_a) & torch.isneginf(lse_b)
    zero = torch.zeros_like(lse_a)
    # logaddexp(-inf, -inf) has a NaN gradient: feed it zeros on those rows and keep -inf as the value.
    lse = torch.where(
        both_empty,
        lse_a,
        torch.logaddexp(torch.where(both_empty, zero, lse_a), torch.where(both_empty, zero, lse_b)),
    )
    safe = torch.where(both_empty, zero, lse)
    w_a = torch.where(both_empty, zero, torch.exp(lse_a - safe))
    w_b = torch.where(both_empty, zero, torch.exp(lse_b - safe))
    acc = accumulation_dtype(torch.promote_types(out_a.dtype, out_b.dtype))
    out = out_a.to(acc) * w_a[..., None].to(acc) + out_b.to(acc) * w_b[..., None].to(acc)
    return out.to(out_a.dtype), lse
