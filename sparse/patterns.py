"""Static sparsity patterns over the spatial tokens: the frame window (SWBA's, causal or symmetric) and the 3-D
tile window. Each is a `Pattern`, which builds its BlockMask for any N at the block size asked."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .blocks import block_mask_from_mod

DEFAULT_BLOCK_SIZE = (128, 64)


@dataclass(frozen=True)
class Pattern:
    """A named mask over n spatial tokens: `mask_mod_for(n)` says which (query, key) pairs attend."""

    name: str
    mask_mod_for: object = field(repr=False)  # n -> mask_mod(b, h, q_idx, kv_idx)
    check_n: object = field(default=None, repr=False)  # n -> None, or raises

    def block_mask(self, n: int, device=None, block_size=DEFAULT_BLOCK_SIZE):
        """The flex_attention BlockMask of this pattern for n spatial tokens."""
        if self.check_n is not None:
            self.check_n(n)
        return block_mask_from_mod(self.mask_mod_for(n), n, block_size, device)

    def dense(self, n: int, device=None) -> torch.Tensor:
        """[n, n] bool: the pattern element by element (for checks and small sizes)."""
        if self.check_n is not None:
            self.check_n(n)
        idx = torch.arange(n, device=device)
        zero = torch.zeros((), dtype=torch.long, device=device)
        return torch.as_tensor(self.mask_mod_for(n)(zero, zero, idx[:, None], idx[None, :])).expand(n, n)


def _positive_int(name: str, value, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int; got {value!r}")
    return value


def frame_window(frame_tokens: int, window: int, causal: bool = True) -> Pattern:
    """Frames of `frame_tokens` consecutive tokens (the last one may be shorter: any N). A query's frame i
    attends key frames j with 0 <= i - j < window (causal: SWBA's pattern, the frame itself and window - 1
    before it), or |i - j| < window (causal=False, for bidirectional video models)."""
    frame_tokens = _positive_int("frame_tokens", frame_tokens, "frame_window")
    window = _positive_int("window", window, "frame_window")

    def mask_mod_for(n):
        def mask_mod(b, h, q_idx, kv_idx):
            d = q_idx // frame_tokens - kv_idx // frame_tokens
            return ((d >= 0) & (d < window)) if causal else (d.abs() < window)

        return mask_mod

    kind = "causal" if causal else "symmetric"
    return Pattern(f"frame_window(frame_tokens={frame_tokens}, window={window}, {kind})", mask_mod_for)


def tile_window(grid, window) -> Pattern:
    """Tokens laid out frame-major over a (T, H, W) latent grid (token = (t * H + h) * W + w; N = T * H * W).
    A query attends the keys within window[i] // 2 positions of it along each axis (a centred window of that
    size, for odd sizes)."""
    grid = tuple(_positive_int("grid", g, "tile_window") for g in grid)
    window = tuple(_positive_int("window", w, "tile_window") for w in window)
    if len(grid) != 3 or len(window) != 3:
        raise ValueError(f"tile_window: grid and window must be (T, H, W) triples; got {grid}, {window}")
    t_, h_, w_ = grid
    reach = tuple(w // 2 for w in window)

    def check_n(n):
        if n != t_ * h_ * w_:
            raise ValueError(f"tile_window: N must equal T*H*W = {t_ * h_ * w_} for grid {grid}; got N={n}")

    def mask_mod_for(n):
        def mask_mod(b, h, q_idx, kv_idx):
            ok = None
            for axis_size, inner, r in ((t_, h_ * w_, reach[0]), (h_, w_, reach[1]), (w_, 1, reach[2])):
                d = (q_idx // inner) % axis_size - (kv_idx // inner) % axis_size
                near = d.abs() <= r
                ok = near if ok is None else ok & near
            return ok

        return mask_mod

    return Pattern(f"tile_window(grid={grid}, window={window})", mask_mod_for, check_n)
