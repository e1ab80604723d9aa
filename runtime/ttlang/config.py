"""Every choice the TT-Lang runtime makes, in one place, and how to override it.

Entry points:
- `chunk_sizes(n, l, dh, *, b, nh, ring_size=None) -> (q_chunk, k_chunk)` in tiles: what the runtime and the MLIR
  lowering (`lower-joint-attention{target=ttlang}`, which prints them) use for an op call of that shape.
- `current()` / `overrides(**changes)` / `set_defaults(**changes)`: the settings below.
- `device_dtype(dtype)`: the device dtype of the inputs ("bfloat16" for 16-bit inputs, else "float32").

Settings: `q_chunk`, `k_chunk` (tiles; None: chosen), `grid` (cores, default Wormhole's 8x8 worker grid),
`ring_size` (1: one device; R >= 2: ring attention over R devices, spatial tokens sharded).

The choice: among q_chunk in 1..8 and k_chunk in 1..16 tiles, the pair that keeps the worst-case number of
dataflow buffers per core within 32 (whatever the valid lengths: tails are split into powers of two, see
`schedule.py`) and their L1 within a core's, minimizing a model of the busiest core's work: rounds of work
items (ceil(items / cores)), each item its tile products (q @ k^T and p @ v), its K and V tile reads
(`TILE_READ_COST` each: every query chunk reads every key again, which favours larger query chunks) and a fixed
cost per key piece (`PIECE_OVERHEAD`: the max/sum/rescale steps a piece pays whatever its size), all in tile
products.
Nothing here was measured on hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

from jointattn.kernels.ttlang.schedule import MAX_DATAFLOW_BUFFERS, tiles

from ..settings import SettingsStack

Q_CHUNKS = (1, 2, 4, 8)
K_CHUNKS = (1, 2, 4, 8, 16)
DEFAULT_GRID = (8, 8)
PIECE_OVERHEAD = 4
TILE_READ_COST = 1  # a K or V tile read from DRAM, in tile products (assumed, not measured)
L1_BYTES = 1336 * 1024  # worker L1 left to dataflow buffers (tt-lang-sim's default limit, Wormhole/Blackhole)
TILE_BYTES = {"bfloat16": 2048, "float32": 4096}


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


def _query_shapes(set_tiles: tuple[int, ...], q: int) -> int:
    return len({min(q, t) for t in set_tiles if t} | {t % q for t in set_tiles if t % q})


def worst_dataflow_buffers(n_tiles: int, l_tiles: int, q: int, k: int, ring: bool) -> int:
    """Per core, for any valid lengths: key shapes are k and powers of two below it (the boundary tile is 1)."""
    key_shapes = 1 + (k - 1).bit_length()
    return (8 if ring else 6) * _query_shapes((n_tiles, l_tiles), q) + 2 * key_shapes + 1


def l1_bytes(q: int, k: int, d_tiles: int, dtype: str, ring: bool) -> int:
    """Dataflow-buffer bytes per core, two blocks each, at the worst case of every shape present: query shapes q and
    two tails (< q each), key shapes k and the powers of two below it. q, k, v, acc, out (and the carried out) in
    `dtype`; m, l, lse (and the carried lse) and the mask tile in float32."""
    data, stats = TILE_BYTES[dtype], TILE_BYTES["float32"]
    query_rows = q + 2 * (q - 1)
    key_rows = k + sum(1 << i for i in range((k - 1).bit_length()))
    per_query = 4 if ring else 3
    data_tiles = query_rows * d_tiles * per_query + 2 * key_rows * d_tiles
    stat_tiles = query_rows * per_query + 1
    return 2 * (data_tiles * data + stat_tiles * stats)


def _cost(n_tiles, l_tiles, key_tiles, d_tiles, q, k, b, nh, cores) -> float:
    items = b * nh * (-(-n_tiles // q) + -(-l_tiles // q))
    rounds = -(-items // cores)
    pieces = sum(-(-t // k) + 1 for t in key_tiles)  # chunks, plus one for tails
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
    ring = ring_size > 1
    key_tiles = [n_tiles] * ring_size + [l_tiles]
    best = None
    for q in Q_CHUNKS:
        for k in K_CHUNKS:
            if worst_dataflow_buffers(n_tiles, l_tiles, q, k, ring) > MAX_DATAFLOW_BUFFERS:
                continue
            if l1_bytes(q, k, d_tiles, dtype, ring) > L1_BYTES:
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
