"""Sparsity patterns for `jointattn.joint_attention(..., block_mask=...)`, as flex_attention BlockMasks over the
N spatial tokens (text is always attended by the op itself).

- `frame_window(frame_tokens, window, causal=True)`: a frame sees the `window` frames up to itself (SWBA's
  block sliding window), or, `causal=False`, every frame less than `window` frames away on either side;
- `tile_window(grid=(T, H, W), window=(t, h, w))`: a token sees the tokens of a centred 3-D window of the
  latent grid, flattened frame-major as video models flatten it;
- `estimate_block_mask(q, k, keep=... | cdf=...)`: a per-(batch, head) mask from mean-pooled query and key
  blocks, keeping the key blocks that carry a share of the estimated attention mass (or a fixed fraction).

`Sparsity(mask, dense_layers=..., layers=...)` (or a bare pattern, or `estimate(keep=...)`) is what the
compile backend's `options={"sparsity": ...}` takes (`plan.py`).

A pattern is an object: `pattern.block_mask(n, device=..., block_size=...)` builds its BlockMask for N tokens
(any N), and `joint_attention` also takes the pattern itself (`block_mask=frame_window(...)`).
"""

from .blocks import block_mask_from_mod
from .estimate import Estimate, estimate, estimate_block_mask
from .patterns import Pattern, frame_window, tile_window
from .plan import Sparsity

__all__ = [
    "Estimate",
    "Pattern",
    "Sparsity",
    "block_mask_from_mod",
    "estimate",
    "estimate_block_mask",
    "frame_window",
    "tile_window",
]
