"""The work of the TT-Lang joint-attention launches, decided on the host: every number a kernel uses is a constant
of its launch.

Entry points: `plan_joint_attention(b, nh, n, l, dh, valid_n=, valid_l=, q_chunk, k_chunk, grid, ...) -> JointPlan`
for batches that share their valid lengths, `batch_groups(valid_n, valid_l)` to form such batches (one group per
distinct (valid_n, valid_l) pair, as the ttnn lowering groups its calls), and `ring_plans(...)`. The kernel
(`joint_attention.py`), the cost count (`jointattn.runtime.ttlang.cost`) and the ring driver (`ring.py`) all read
the same plans, so what is counted is what runs.

Why constants: the TT-Lang compiler translates a kernel's syntax tree, not its Python run. Its loops are `range()`
over integers, its `if`s compare integers, and a kernel captures only ints, floats, tensors and dataflow buffers
(kernels/ttlang/COMPILER.md). So a launch is described by integers only (`Launch`): its batches share their
valid lengths, which makes every trip count a constant, and its query chunks share one shape, which gives every
block one named dataflow buffer.

Device tensors are 2-D and tiled: a token set of S rows becomes [b * nh * ceil(S / 32) * 32, ceil(dh / 32) * 32],
one (batch, head) after another, so a (batch, head) occupies a run of whole tiles (tile padding only, never chunk
padding). Sizes below are in tiles.

- A *work item* is one query chunk of one (batch, head, token set). A set's chunks are `q_chunk` tiles, but for
  its last one, which is smaller when the set's tiles are not a multiple of `q_chunk` (the tail: no padding to a
  chunk multiple). One launch runs the whole chunks of both sets, one more each distinct tail size; items are
  split over the cores of `grid` in contiguous runs.
- Every item attends to the batches' valid key tiles, in *pieces*: chunks of `k_chunk` tiles (spatial, then
  joint), then the whole tiles left over one at a time, each set's boundary tile last. Tiles wholly past a valid
  length are never read. The boundary tile (a valid length that is not a multiple of 32) comes with the number of
  its valid rows, and the kernel adds a mask tile (0 / -inf) to its scores.
- Batches with no valid key get no launch: their outputs keep the values they were created with, 0 and lse -inf.

Ring steps (`ring.py`) use the same plans with `carry` set: the items start from the (out, lse) an earlier step
left instead of from nothing, and a step with no valid key runs nothing, which passes them through.
"""

from __future__ import annotations

from dataclasses import dataclass

TILE = 32
SPATIAL, JOINT = 0, 1
MAX_DATAFLOW_BUFFERS = 32  # per core, Wormhole and Blackhole (TT-Lang spec, appendix E)
DATAFLOW_BUFFERS = 22  # the kernel's, whatever the launch (joint_attention.py)
L1_BYTES = 1336 * 1024  # worker L1 left to dataflow buffers (tt-lang-sim's default limit, Wormhole/Blackhole)
TILE_BYTES = {"bfloat16": 2048, "float32": 4096}


def tiles(rows: int) -> int:
    return -(-rows // TILE)


@dataclass(frozen=True)
class KeyPiece:
    """`count` key tiles of a token set from tile `start` (within its (batch, head)); `valid_rows` < 32 marks the
    boundary tile, whose columns from `valid_rows` on are masked."""

    token_set: int
    start: int
    count: int
    valid_rows: int = TILE


def key_pieces(token_set: int, valid: int, k_chunk: int) -> list[KeyPiece]:
    """The key tiles of one token set with `valid` valid rows, as the kernel reads them: chunks of `k_chunk`
    tiles, the whole tiles left over one at a time, the boundary tile last."""
    whole, rest = divmod(valid, TILE)
    full = whole // k_chunk
    pieces = [KeyPiece(token_set, j * k_chunk, k_chunk) for j in range(full)]
    pieces += [KeyPiece(token_set, t, 1) for t in range(full * k_chunk, whole)]
    if rest:
        pieces.append(KeyPiece(token_set, whole, 1, rest))
    return pieces


@dataclass(frozen=True)
class Launch:
    """One kernel launch, as the integers its kernels are built from (the compiler's captured constants).

    Query side: `q_tiles` is the chunk of every item; per (batch, head) the launch runs `chunks_n` spatial chunks
    starting at tile `first_n` and `chunks_l` joint chunks starting at `first_l`. Key side (the same for every
    item): per set, `full_*` chunks of `k_chunk` tiles, then `singles_*` whole tiles, then, when `edge_*` > 0, the
    boundary tile with `edge_*` valid rows. `n_tiles` / `l_tiles` are the rows of a (batch, head) in the spatial /
    joint tensors.
    """

    b: int
    nh: int
    d_tiles: int
    n_tiles: int
    l_tiles: int
    q_tiles: int
    chunks_n: int
    first_n: int
    chunks_l: int
    first_l: int
    k_chunk: int
    full_n: int
    singles_n: int
    edge_n: int
    full_l: int
    singles_l: int
    edge_l: int
    carry: bool
    grid: tuple[int, int]

    @property
    def items(self) -> int:
        return self.b * self.nh * (self.chunks_n + self.chunks_l)

    @property
    def cores(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def items_per_core(self) -> int:
        return -(-self.items // self.cores)

    @property
    def tiles_n(self) -> int:
        """Spatial one-tile pieces: the whole tiles left over and the boundary tile."""
        return self.singles_n + (self.edge_n > 0)

    @property
    def tiles_l(self) -> int:
        return self.singles_l + (self.edge_l > 0)

    def pieces(self) -> tuple[KeyPiece, ...]:
        """The key pieces every item reads, in the order the kernels exchange them."""
        kc = self.k_chunk
        full = [KeyPiece(SPATIAL, j * kc, kc) for j in range(self.full_n)]
        full += [KeyPiece(JOINT, j * kc, kc) for j in range(self.full_l)]
        singles = []
        for token_set, chunks, count, edge in (
            (SPATIAL, self.full_n, self.singles_n, self.edge_n),
            (JOINT, self.full_l, self.singles_l, self.edge_l),
        ):
            singles += [KeyPiece(token_set, chunks * kc + t, 1) for t in range(count)]
            if edge:
                singles.append(KeyPiece(token_set, chunks * kc + count, 1, edge))
        return tuple(full + singles)

    def item(self, index: int) -> tuple[int, int, int]:
        """(token set, (batch, head) index, first query tile row) of item `index`: the kernels' own arithmetic."""
        head, chunk = divmod(index, self.chunks_n + self.chunks_l)
        if chunk < self.chunks_n:
            return SPATIAL, head, head * self.n_tiles + self.first_n + chunk * self.q_tiles
        return JOINT, head, head * self.l_tiles + self.first_l + (chunk - self.chunks_n) * self.q_tiles

    def core_items(self, core: int) -> list[tuple[int, int, int]]:
        """The items core `core` runs, in order: a contiguous run."""
        first = core * self.items_per_core
        return [self.item(i) for i in range(first, min(first + self.items_per_core, self.items))]


def l1_bytes(q_tiles: int, k_chunk: int, d_tiles: int, dtype: str) -> int:
    """Dataflow-buffer bytes per core, all in `dtype`, as `joint_attention.py` makes them plus the buffers the
    compiler adds. Two blocks each (the producer fills one while the consumer holds the other): q, the carried
    out, acc and out (q x d); K and V as chunks (k x d) and as single tiles (1 x d); a single-tile score block
    (q x 1, masked in place); the carried lse, m, l and lse (q x 1); the mask tile; and, allocated by the
    compiler for `transpose`, K transposed as a chunk (d x k) and as a tile (d x 1). One block each, made and
    used by the compute kernel in turn: the chunk scores and probabilities (q x k), p @ v (q x d), the
    single-tile probabilities, alpha, the next max and a row statistic (q x 1), the reduce scaler. This is the
    total tt-lang 1.1.1 reports for the kernel ("total circular buffer allocation"; tests/test_ttlang_kernel.py)."""
    double = 4 * q_tiles * d_tiles + 2 * k_chunk * d_tiles + 2 * d_tiles + 5 * q_tiles + 1
    transposed = k_chunk * d_tiles + d_tiles
    single = 2 * q_tiles * k_chunk + q_tiles * d_tiles + 4 * q_tiles + 1
    return (2 * (double + transposed) + single) * TILE_BYTES[dtype]


def check_l1(q_chunk: int, k_chunk: int, dh: int, dtype: str) -> None:
    """Refuses chunk sizes whose dataflow buffers do not fit a core's L1 (before anything runs)."""
    need = l1_bytes(q_chunk, k_chunk, tiles(dh), dtype)
    if need > L1_BYTES:
        raise ValueError(
            f"ttlang plan: q_chunk={q_chunk}, k_chunk={k_chunk} need {need // 1024} KiB of dataflow buffers per "
            f"core (head dim {dh}, {dtype}); a core has {L1_BYTES // 1024} KiB. Pick smaller chunk sizes."
        )


@dataclass(frozen=True)
class JointPlan:
    """The launches of one request: `b` batches that share their valid key rows `valid_n`, `valid_l`."""

    b: int
    nh: int
    n: int
    l: int  # noqa: E741
    dh: int
    q_chunk: int
    k_chunk: int
    grid: tuple[int, int]
    valid_n: int
    valid_l: int
    joint_keys: bool
    carry: bool
    launches: tuple[Launch, ...]

    @property
    def d_tiles(self) -> int:
        return tiles(self.dh)

    def set_tiles(self, token_set: int) -> int:
        return tiles(self.n if token_set == SPATIAL else self.l)

    def pieces(self) -> list[KeyPiece]:
        pieces = key_pieces(SPATIAL, self.valid_n, self.k_chunk)
        return pieces + (key_pieces(JOINT, self.valid_l, self.k_chunk) if self.joint_keys else [])


def _query_launches(n_tiles: int, l_tiles: int, q_chunk: int) -> list[tuple[int, int, int, int, int]]:
    """(q_tiles, chunks_n, first_n, chunks_l, first_l) of each launch: whole chunks, then each distinct tail."""
    full_n, tail_n = divmod(n_tiles, q_chunk)
    full_l, tail_l = divmod(l_tiles, q_chunk)
    shapes = []
    if full_n or full_l:
        shapes.append((q_chunk, full_n, 0, full_l, 0))
    if tail_n and tail_n == tail_l:
        shapes.append((tail_n, 1, full_n * q_chunk, 1, full_l * q_chunk))
    else:
        if tail_n:
            shapes.append((tail_n, 1, full_n * q_chunk, 0, 0))
        if tail_l:
            shapes.append((tail_l, 0, 0, 1, full_l * q_chunk))
    return shapes


def _positive_ints(**values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"ttlang plan: {name} must be a positive number of tiles; got {value!r}")


def plan_joint_attention(
    b: int,
    nh: int,
    n: int,
    l: int,  # noqa: E741
    dh: int,
    *,
    valid_n: int,
    valid_l: int,
    q_chunk: int,
    k_chunk: int,
    grid: tuple[int, int],
    joint_keys: bool = True,
    carry: bool = False,
) -> JointPlan:
    """The launches for `b` batches that share their valid lengths (the runtime checks L1 first: `check_l1`).

    Args:
        b, nh, n, l, dh: sizes (n, l: rows of the token sets this request computes queries for; keys have the
            same rows).
        valid_n, valid_l: valid key rows of the spatial and joint sets, the same for every batch here.
        q_chunk, k_chunk: chunk sizes in tiles (any positive ints; nothing needs to divide anything).
        grid: the core grid (rows, cols).
        joint_keys: whether the joint keys take part (ring steps pass them once).
        carry: whether items start from the outputs of an earlier launch (ring steps).
    """
    _positive_ints(q_chunk=q_chunk, k_chunk=k_chunk)
    if len(grid) != 2 or any(isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in grid):
        raise ValueError(f"ttlang plan: grid must be two positive ints (rows, cols); got {grid!r}")
    n_tiles, l_tiles = tiles(n), tiles(l)
    valid_l = valid_l if joint_keys else 0
    whole_n, edge_n = divmod(valid_n, TILE)
    whole_l, edge_l = divmod(valid_l, TILE)
    keys = dict(
        k_chunk=k_chunk,
        full_n=whole_n // k_chunk,
        singles_n=whole_n % k_chunk,
        edge_n=edge_n,
        full_l=whole_l // k_chunk,
        singles_l=whole_l % k_chunk,
        edge_l=edge_l,
    )
    launches = ()
    # Without a key to attend to, nothing runs: the outputs stay as created (0 and lse -inf) or as carried.
    if valid_n or valid_l:
        launches = tuple(
            Launch(
                b,
                nh,
                tiles(dh),
                n_tiles,
                l_tiles,
                qs,
                cn,
                fn,
                cl,
                fl,
                **keys,
                carry=carry,
                grid=(grid[0], grid[1]),
            )
            for qs, cn, fn, cl, fl in _query_launches(n_tiles, l_tiles, q_chunk)
        )
    return JointPlan(
        b, nh, n, l, dh, q_chunk, k_chunk, (grid[0], grid[1]), valid_n, valid_l, joint_keys, carry, launches
    )


def batch_groups(valid_n, valid_l) -> list[tuple[tuple[int, ...], int, int]]:
    """(batches, valid_n, valid_l) per distinct pair of valid lengths, in order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for bz, pair in enumerate(zip(valid_n, valid_l, strict=True)):
        groups.setdefault(pair, []).append(bz)
    return [(tuple(batches), vn, vl) for (vn, vl), batches in groups.items()]


def shard_valid(valid_n: int, origin: int, shard_rows: int) -> int:
    """Valid spatial keys of the ring shard that started on device `origin`."""
    return min(max(valid_n - origin * shard_rows, 0), shard_rows)


def ring_plans(
    b: int,
    nh: int,
    shard_rows: int,
    l: int,  # noqa: E741
    dh: int,
    *,
    ring: int,
    valid_n: int,
    valid_l: int,
    q_chunk: int,
    k_chunk: int,
    grid: tuple[int, int],
) -> list[list[JointPlan]]:
    """plans[step][device] of ring attention (`ring.py`) for batches sharing their valid lengths: at step s device
    d holds the K/V shard of device (d - s) mod ring; the joint keys take part at step 0; a step carries the
    (out, lse) of earlier steps once one of them saw a valid key."""
    seen = [False] * ring
    plans = []
    for step in range(ring):
        row = []
        for d in range(ring):
            valid = shard_valid(valid_n, (d - step) % ring, shard_rows)
            row.append(
                plan_joint_attention(
                    b,
                    nh,
                    shard_rows,
                    l,
                    dh,
                    valid_n=valid,
                    valid_l=valid_l,
                    q_chunk=q_chunk,
                    k_chunk=k_chunk,
                    grid=grid,
                    joint_keys=step == 0,
                    carry=seen[d],
                )  # fmt: skip
            )
            seen[d] = seen[d] or valid > 0 or (step == 0 and valid_l > 0)
        plans.append(row)
    return plans
