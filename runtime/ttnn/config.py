"""Every ttnn configuration choice of the lowering, in one place, and how to override it.

Entry points:
- `sdpa_chunk_sizes(n, l, dh, *, b=1, nh=1, ring_size=1, grid=None) -> (q_chunk_size, k_chunk_size)`: the chunk
  sizes the lowering uses for an op call of that shape (the MLIR lowering prints them into the IR).
- `current()` / `overrides(**changes)` (a context manager) / `set_defaults(**changes)`: the settings below.
- `program_config(api, ...)` and `compute_kernel_config(api)`: the ttnn objects built from them.

Choices and why:
- Chunk sizes are multiples of 32 (tiles), q in {32..256}, k in {32..512}, picked by `choose_chunks`, a cost
  model of the joint SDPA program factory: per core it runs ceil(work items / cores) items, an item being one
  q chunk of one (batch, head) against all key chunks; each item costs its padded score elements plus a fixed
  overhead per (q chunk, k chunk) pair (`CHUNK_PAIR_OVERHEAD`, in score elements: the max/sum/rescale steps
  that run per chunk). N and L are padded separately to both chunk sizes, so large chunks waste work on short
  token sets; small chunks pay the per-pair overhead. The overhead constant is set so that the model picks
  what tt-metal's DiT models use on the same device problem: q 256 / k 512 for a Mochi layer (N 44520, L 118,
  dh 128, 24 heads, 8x8 grid) on one device. Pairs whose circular buffers would not fit in L1 (`l1_bytes`,
  summed from the program factory's CB list, against `L1_BUDGET_BYTES`) are excluded, as is q 512 / k 512,
  which tt-metal's own tests skip as out of memory.
- The device problem is not the op's: the head dim grows to hold the two normalizer channels (`packing.py`:
  128 -> 160 in bfloat16), and the joint slot holds sinks. So for Mochi the lowering's own choice differs
  from the q 256 / k 512 above: at dh 160 that pair no longer fits L1 by this estimate.
- exp_approx_mode False and HiFi2 / math_approx_mode False / fp32_dest_acc_en False / packer_l1_acc False:
  tt-metal's DiT models' SDPA settings ("False is more correct" for exp_approx_mode).
- dtype "bfloat16" (or "bfloat8_b" when asked): the device dtype of all six inputs.
- ring_size 1: one device (`joint_scaled_dot_product_attention`); 2+ shards the spatial tokens over a (1, ring)
  mesh (`ring_joint_scaled_dot_product_attention`), whose SDPA grid leaves the last core row to the all-gather.
- grid None: the device's compute_with_storage_grid_size (8x8 on Wormhole n150/n300, assumed where no device
  is at hand, e.g. when printing IR).
Nothing here was measured on hardware: the L1 estimate and the cost model are read off the sources.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import SettingsStack
from .packing import TILE, normalizer_channels, round_up

DEFAULT_GRID = (8, 8)
L1_BUDGET_BYTES = 1_431_568  # default worker L1 of a Wormhole core, as tt-metal model code sets it
CHUNK_PAIR_OVERHEAD = 4096
Q_CHUNKS = (32, 64, 128, 256)
K_CHUNKS = (32, 64, 128, 256, 512)
DTYPES = ("bfloat16", "bfloat8_b")
_TILE_BYTES = {"bfloat16": 2048, "bfloat8_b": 1088}
_MASK_TILE_BYTES = 576  # the kernels build masks in bfloat4_b


@dataclass(frozen=True)
class TtnnSettings:
    q_chunk_size: int | None = None  # None: choose_chunks decides
    k_chunk_size: int | None = None
    exp_approx_mode: bool = False
    math_fidelity: str = "HiFi2"
    math_approx_mode: bool = False
    fp32_dest_acc_en: bool = False
    packer_l1_acc: bool = False
    dtype: str = "bfloat16"
    ring_size: int = 1
    grid: tuple[int, int] | None = None

    def __post_init__(self):
        for name in ("q_chunk_size", "k_chunk_size"):
            check_chunk(name, getattr(self, name))
        if self.dtype not in DTYPES:
            raise ValueError(f"ttnn settings: dtype must be one of {DTYPES}; got {self.dtype!r}")
        if not isinstance(self.ring_size, int) or self.ring_size < 1:
            raise ValueError(f"ttnn settings: ring_size must be an int >= 1; got {self.ring_size!r}")


def check_chunk(name: str, value) -> None:
    """Chunk sizes must be positive multiples of 32 (tiles); None means 'choose'."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % TILE:
        raise ValueError(
            f"ttnn lowering: {name} must be a positive multiple of {TILE} (a whole number of tiles); got {value!r}"
        )


_settings = SettingsStack(TtnnSettings())
current = _settings.current  # the settings in force
set_defaults = _settings.set_defaults  # set_defaults(ring_size=2): from now on
overrides = _settings.overrides  # with overrides(ring_size=2, dtype="bfloat8_b"): inside the block only


# --- chunk sizes --------------------------------------------------------------------------------------------


def l1_bytes(q_chunk: int, k_chunk: int, width: int, dtype: str = "bfloat16", ring: bool = False) -> int:
    """Circular-buffer bytes per core of the joint SDPA program factory (ring: plus its lse/prev-out CBs)."""
    sq, sk, dt = q_chunk // TILE, k_chunk // TILE, width // TILE
    data, im = _TILE_BYTES[dtype], _TILE_BYTES["bfloat16"]
    inputs = (sq * dt * 2 + 2 * sk * dt * 2) * data  # q (double-buffered), k and v (double-buffered)
    scores = sq * sk * im + sq * sk * _MASK_TILE_BYTES
    outputs = 2 * sq * dt * im + sq * dt * data  # out_im, out_accumulate_im, out
    stats = 7 * sq * im + 2 * im  # max/sum ping-pong, reduced sum x2, exp_max_diff; identity scalars
    extra = (2 * sq + sq * dt) * im + im if ring else 0  # lse in/out, previous out, scale
    return inputs + scores + outputs + stats + extra


def _padded_rows(length: int, chunk: int) -> int:
    return round_up(length, chunk) if length else 0


def _cost(
    rows_n: int, rows_l: int, q: int, k: int, b: int, nh: int, cores: int, kv_rows: int | None
) -> float:
    q_rows = _padded_rows(rows_n, q) + _padded_rows(rows_l, q)
    k_cols = (kv_rows if kv_rows is not None else _padded_rows(rows_n, k)) + _padded_rows(rows_l, k)
    items = b * nh * (q_rows // q)
    waves = -(-items // cores)
    return waves * (q * k_cols + CHUNK_PAIR_OVERHEAD * (k_cols // k))


def choose_chunks(
    rows_n: int,
    rows_l: int,
    width: int,
    *,
    b: int = 1,
    nh: int = 1,
    cores: int = DEFAULT_GRID[0] * DEFAULT_GRID[1],
    dtype: str = "bfloat16",
    ring_size: int = 1,
) -> tuple[int, int]:
    """(q_chunk, k_chunk) minimizing `_cost` among pairs that fit L1, for a device problem of rows_n spatial
    rows (per device on a ring), rows_l joint rows and head dim `width`."""
    ring = ring_size > 1
    kv_rows = None
    best = None
    for q in Q_CHUNKS:
        for k in K_CHUNKS:
            if (q, k) == (512, 512) or l1_bytes(q, k, width, dtype, ring) > L1_BUDGET_BYTES:
                continue
            if ring:  # each device sees all ring_size shards, each padded to its k chunks
                kv_rows = ring_size * _padded_rows(rows_n, k)
            cost = (_cost(rows_n, rows_l, q, k, b, nh, cores, kv_rows), -q, -k)
            if best is None or cost < best[0]:
                best = (cost, (q, k))
    if best is None:
        raise ValueError(f"ttnn lowering: no chunk sizes fit L1 for a device head dim of {width}")
    return best[1]


def device_shape(
    n: int,
    l: int,  # noqa: E741
    dh: int,
    dtype: str = "bfloat16",
    ring_size: int = 1,
) -> tuple[int, int, int]:
    """(spatial rows per device, joint rows, head dim) of the device call for an op call with no padding."""
    width = normalizer_channels(dh, block_float=dtype == "bfloat8_b").width
    if ring_size > 1:
        return round_up(-(-n // ring_size), TILE), l + 1, width
    return n, l + 1, width


def sdpa_chunk_sizes(
    n: int,
    l: int,  # noqa: E741
    dh: int,
    *,
    b: int = 1,
    nh: int = 1,
    ring_size: int | None = None,
    grid: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """The (q_chunk_size, k_chunk_size) the lowering uses for an op call with these sizes (overrides win)."""
    settings = current()
    ring_size = settings.ring_size if ring_size is None else ring_size
    rows_n, rows_l, width = device_shape(n, l, dh, settings.dtype, ring_size)
    grid = grid or settings.grid or DEFAULT_GRID
    cores = grid[0] * (grid[1] - 1 if ring_size > 1 else grid[1])
    chosen = choose_chunks(
        rows_n, rows_l, width, b=b, nh=nh, cores=cores, dtype=settings.dtype, ring_size=ring_size
    )
    return (settings.q_chunk_size or chosen[0], settings.k_chunk_size or chosen[1])


# --- ttnn objects --------------------------------------------------------------------------------------------


def sdpa_grid(device_grid: tuple[int, int], ring: bool) -> tuple[int, int]:
    """The SDPA cores: the whole grid, or on a ring all rows but the last, which the all-gather gets."""
    x, y = device_grid
    return (x, y - 1) if ring else (x, y)


def program_config(api, grid: tuple[int, int], q_chunk: int, k_chunk: int):
    return api.SDPAProgramConfig(
        compute_with_storage_grid_size=api.CoreCoord(*grid),
        q_chunk_size=q_chunk,
        k_chunk_size=k_chunk,
        exp_approx_mode=current().exp_approx_mode,
    )


def compute_kernel_config(api):
    s = current()
    return api.WormholeComputeKernelConfig(
        math_fidelity=getattr(api.MathFidelity, s.math_fidelity),
        math_approx_mode=s.math_approx_mode,
        fp32_dest_acc_en=s.fp32_dest_acc_en,
        packer_l1_acc=s.packer_l1_acc,
    )


def device_dtype(api):
    return getattr(api, current().dtype)
