"""Every choice the TT-Lang runtime makes, in one place, and how to override it.

Entry points:
- `chunk_sizes(n, l, dh, *, b, nh, ring_size=None) -> (q_chunk, k_chunk)` in tiles: what the runtime and the MLIR
  lowering (`lower-joint-attention{target=ttlang}`, which prints them) use for an op call of that shape.
- `current()` / `overrides(**changes)` / `set_defaults(**changes)`: the settings below.
- `device_dtype(dtype)`: the device dtype of the inputs ("bfloat16" for 16-bit inputs, else "float32").

Settings: `q_chunk`, `k_chunk` (tiles; None: chosen), `grid` (cores, default Wormhole's 8x8 worker grid),
`ring_size` (1: one device; R >= 2: ring attention over R devices, spatial tokens sharded).

The choice: among q_chunk in 1..8 and k_chunk in 1..16 tiles, the pair whose dataflow buffers fit a core's L1
(the kernel has 22 of them whatever the sizes, `schedule.l1_bytes`), minimizing a model of the busiest core's
work: rounds of work items (ceil(items / cores)), each item its tile products (q @ k^T and p @ v), its K and V
tile reads (`TILE_READ_COST` each: every query chunk reads every key again, which favours larger query chunks)
and a fixed cost per key piece (`PIECE_OVERHEAD`: the max/sum/rescale steps a piece pays whatever its size; the
whole tiles left over after the k_chunk chunks are pieces of one tile each), all in tile products.
Nothing here was measured on hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

from jointattn.kernels.ttlang.schedule import L1_BYTES, l1_bytes, tiles

from ..settings import SettingsStack

Q_CHUNKS = (1, 2, 4, 8)
K_CHUNKS = (1, 2, 4, 8, 16)
DEFAULT_GRID = (8, 8)
PIECE_OVERHEAD = 4
TILE_READ_COST = 1  # a K or V tile read from DRAM, in tile products (assumed, not measured)


@dataclass(frozen=True)
class TtlangSettings:
    q_chunk: int | None = None
    k_chunk: int | None = None
    grid: tuple[int, int] = DEFAULT_GRID
    ring_size: int = 1

    def __post_init__(self):
        for name in ("q_chunk", "k_chunk"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(
                    f"ttlang settings: {name} must be None or a positive number of tiles; got {value!r}"
                )
        grid = self.grid
        if (
            not isinstance(grid, tuple)
            or len(grid) != 2
            or any(isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in grid)
        ):
            raise ValueError(f"ttlang settings: grid must be a tuple of two positive ints; got {grid!r}")
        if isinstance(self.ring_size, bool) or not isinstance(self.ring_size, int) or self.ring_size < 1:
            raise ValueError(f"ttlang settings: ring_size must be an int >= 1; got {self.ring_size!r}")


_settings = SettingsStack(TtlangSettings())
current = _settings.current  # the settings in force
set_defaults = _settings.set_defaults  # set_defaults(ring_size=2): from now on
overrides = _settings.overrides  # with overrides(q_chunk=3, ring_size=2): inside the block only


def device_dtype(dtype) -> str:
    import torch

    return "bfloat16" if dtype in (torch.bfloat16, torch.float16) else "float32"


def _cost(n_tiles, l_tiles, key_tiles, d_tiles, q, k, b, nh, cores) -> float:
    items = b * nh * (-(-n_tiles // q) + -(-l_tiles // q))
    rounds = -(-items // cores)
    pieces = sum(t // k + t % k + 1 for t in key_tiles)  # chunks, single tiles, a boundary tile
    keys = sum(key_tiles)
    per_item = 2 * q * keys * d_tiles + TILE_READ_COST * 2 * keys * d_tiles + PIECE_OVERHEAD * pieces
    return rounds * per_item


def choose_chunks(
    n,
    l,  # noqa: E741
    dh,
    *,
    b=1,
    nh=1,
    ring_size=1,
    grid=DEFAULT_GRID,
    dtype="bfloat16",
) -> tuple[int, int]:
    """(q_chunk, k_chunk) in tiles for a device problem of n spatial rows (per device on a ring) and l joint rows."""
    n_tiles, l_tiles, d_tiles = tiles(n), tiles(l), tiles(dh)
    key_tiles = [n_tiles] * ring_size + [l_tiles]
    best = None
    for q in Q_CHUNKS:
        for k in K_CHUNKS:
            if l1_bytes(q, k, d_tiles, dtype) > L1_BYTES:
                continue
            cost = (_cost(n_tiles, l_tiles, key_tiles, d_tiles, q, k, b, nh, grid[0] * grid[1]), q, k)
            if best is None or cost < best[0]:
                best = (cost, (q, k))
    if best is None:
        raise ValueError(f"ttlang runtime: no chunk sizes fit a core for head dim {dh}")
    return best[1]


def chunk_sizes(n: int, l: int, dh: int, *, b: int = 1, nh: int = 1, dtype: str = "bfloat16", ring_size=None):  # noqa: E741
    """The (q_chunk, k_chunk) in tiles the runtime uses for an op call of these sizes (overrides win)."""
    settings = current()
    ring_size = settings.ring_size if ring_size is None else ring_size
    rows = -(-n // ring_size) if ring_size > 1 else n
    chosen = choose_chunks(rows, l, dh, b=b, nh=nh, ring_size=ring_size, grid=settings.grid, dtype=dtype)
    return (settings.q_chunk or chosen[0], settings.k_chunk or chosen[1])
