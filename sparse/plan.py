"""What `torch.compile(model, backend="jointattn", options={"sparsity": ...})` applies, and to which layers.

`Sparsity(mask, dense_layers=0, layers=None, block_size=(128, 64), dense_calls=0)`: `mask` is a pattern
(`frame_window`, `tile_window`; its BlockMask is built once at compile time for the layer's N) or
`estimate(keep=... | cdf=...)` (each layer's mask estimated from its q and k at every call). Layers are the fused
joint attentions of a graph, counted from 0 in graph order; the first `dense_layers` stay dense, or, with
`layers`, exactly those listed go sparse. `dense_calls`: each sparse layer runs dense for its first calls (one
call per denoising step: the video methods' "first steps dense"). The option also takes a bare pattern or
estimate (every layer sparse) or a dict of these fields.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .estimate import Estimate
from .patterns import Pattern


@dataclass(frozen=True)
class Sparsity:
    mask: object  # a Pattern or an Estimate
    dense_layers: int = 0
    layers: tuple | None = None
    block_size: tuple = (128, 64)
    # The spatial (image/video) token count of the layers to sparsify. Without it the op's spatial set is the
    # joint attention's longer token set, which is the text where the prompt is longer than the image.
    spatial_tokens: int | None = None
    dense_calls: int = 0

    def __post_init__(self):
        if not isinstance(self.mask, (Pattern, Estimate)):
            raise TypeError(
                "sparsity: mask must be a jointattn.sparse pattern (frame_window, tile_window) or "
                f"estimate(keep=... | cdf=...); got {type(self.mask).__name__}"
            )
        _check_int("dense_layers", self.dense_layers, 0)
        _check_int("dense_calls", self.dense_calls, 0)
        if self.spatial_tokens is not None:
            _check_int("spatial_tokens", self.spatial_tokens, 1)

    @classmethod
    def of(cls, spec) -> Sparsity:
        if isinstance(spec, Sparsity):
            return spec
        if isinstance(spec, dict):
            unknown = set(spec) - {f.name for f in fields(cls)}
            if unknown:
                raise ValueError(f"sparsity: unknown field(s) {sorted(unknown)}")
            given = dict(spec)
            if given.get("layers") is not None:
                given["layers"] = tuple(given["layers"])
            return cls(**given)
        return cls(spec)

    def why_dense(self, layer: int) -> str | None:
        """None if `layer` goes sparse, else why it stays dense."""
        if self.layers is not None:
            return None if layer in self.layers else f"not in layers={list(self.layers)}"
        return f"one of the first {self.dense_layers} layers" if layer < self.dense_layers else None


def _check_int(name: str, value, least: int) -> None:
    """`value` must be an int (not a bool) of at least `least`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"sparsity: {name} must be an int >= {least}; got {value!r}")
