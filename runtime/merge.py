"""Merging attention over disjoint key sets by log-sum-exp.

Attention of the same queries over key sets A and B, computed separately as (o_a, lse_a) and (o_b, lse_b),
equals attention over A ∪ B:  lse = logaddexp(lse_a, lse_b),  o = o_a·exp(lse_a − lse) + o_b·exp(lse_b − lse).
Ring attention (jointattn.distributed) and the ttnn ring emulation both rely on this. Key sets with no valid
key have lse = -inf and weigh nothing. Differentiable, so training through a merged result works.
"""

from __future__ import annotations

import torch


def merge_partials(out_a, lse_a, out_b, lse_b):
    """Returns (out, lse) of attention over both key sets.

    out_*: [..., S, dh] (any float dtype); lse_*: [..., S] float32. The result's out has out_a's dtype.
    """
    lse = torch.logaddexp(lse_a, lse_b)
    finite = torch.isfinite(lse)
    safe = torch.where(finite, lse, torch.zeros_like(lse))
    w_a = torch.where(finite, torch.exp(lse_a - safe), torch.zeros_like(lse))
    w_b = torch.where(finite, torch.exp(lse_b - safe), torch.zeros_like(lse))
    out = out_a.float() * w_a[..., None] + out_b.float() * w_b[..., None]
    return out.to(out_a.dtype), lse
