"""Row bookkeeping that model code does around attention with padded tokens, in fixed shapes.

Mochi computes attention per sample over only the valid text tokens (gathered with `nonzero`), then pads the
result back with zeros: the outputs of the valid text tokens come first, in order, and zeros follow.
`compact_valid_rows` produces exactly that from the outputs of all rows, with no data-dependent shape, so the
whole batch can run as one joint attention with key padding.
"""

from __future__ import annotations

import torch


def compact_valid_rows(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Rows of `x` [b, h, L, d] where `valid` [b, L] is true, moved to the front in order; the rest zero.

    For a prefix mask (padding at the end) this only zeroes the padded rows.
    """
    valid = valid.to(torch.bool)
    order = torch.argsort((~valid).to(torch.int8), dim=-1, stable=True)  # valid positions first, in order
    gathered = x.gather(2, order[:, None, :, None].expand(x.shape))
    count = valid.sum(-1, keepdim=True)
    keep = torch.arange(valid.shape[-1], device=valid.device)[None, :] < count
    return torch.where(keep[:, None, :, None], gathered, torch.zeros((), dtype=x.dtype, device=x.device))
