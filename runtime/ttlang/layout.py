"""The op's tensors in the TT-Lang kernels' device layout, and back.

Entry points:
- `to_device_layout(x, valid=None, dtype)`: [b, nh, S, dh] -> [b * nh * S_tiles * 32, dh_tiles * 32] float32,
  rounded to bfloat16 first when the device dtype is bfloat16. Rows and columns added for tile padding are 0. With
  per-batch `valid` lengths (keys and values), the rows at or past a valid length are 0 too: they are copied from
  nowhere (`x` is only read where it is valid), so whatever padding holds, NaN included, never reaches the device.
- `mask_tiles(rows, cols)`: [32 * rows, 32 * max(32, cols)] tiles; tile (0, r) (r in 1..31) is 0 in its columns
  < r and -inf from column r on, the mask the kernel adds to the scores of a boundary key tile with r valid rows;
  every other tile is 0. The kernel also makes its dataflow buffers like this tensor, so it is as large as any
  block (`likeness_tiles`).
- `from_device_layout(t, b, nh, s, dh)` and `lse_from_device_layout(t, b, nh, s)`: the inverse (lse from column 0).
"""

from __future__ import annotations

import torch
from jointattn.kernels.ttlang.schedule import TILE, tiles


def to_device_layout(x: torch.Tensor, valid: list[int] | None = None, *, bfloat16: bool) -> torch.Tensor:
    b, nh, s, dh = x.shape
    padded = x.new_zeros((b, nh, tiles(s) * TILE, tiles(dh) * TILE), dtype=torch.float32)
    for bz in range(b):
        rows = s if valid is None else valid[bz]
        source = x[bz, :, :rows]
        padded[bz, :, :rows, :dh] = source.to(torch.bfloat16).float() if bfloat16 else source.float()
    return padded.reshape(-1, padded.shape[-1])


def mask_tiles(rows: int = 1, cols: int = TILE) -> torch.Tensor:
    column = torch.arange(TILE)
    tiles_ = [
        torch.where(column >= r, float("-inf"), 0.0).expand(TILE, TILE) if r else torch.zeros(TILE, TILE)
        for r in range(TILE)
    ]
    masks = torch.zeros(rows * TILE, max(TILE, cols) * TILE)
    masks[:TILE, : TILE * TILE] = torch.cat(tiles_, dim=1)
    return masks


def likeness_tiles(q_chunk: int, k_chunk: int, dh: int) -> tuple[int, int]:
    """(rows, cols) in tiles that `mask_tiles` needs to be as large as every block of a launch with these chunks:
    (q, d), (k, d), (q, k) and the (1, 1) mask."""
    return max(q_chunk, k_chunk), max(k_chunk, tiles(dh))


def from_device_layout(t: torch.Tensor, b: int, nh: int, s: int, dh: int) -> torch.Tensor:
    rows = tiles(s) * TILE
    return t[: b * nh * rows].reshape(b, nh, rows, t.shape[-1])[:, :, :s, :dh]


def lse_from_device_layout(t: torch.Tensor, b: int, nh: int, s: int) -> torch.Tensor:
    rows = tiles(s) * TILE
    return t[: b * nh * rows, 0].reshape(b, nh, rows)[:, :, :s]
