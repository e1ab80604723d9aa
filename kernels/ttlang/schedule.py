"""The work of one TT-Lang joint-attention launch, decided on the host before the kernel is traced.

Entry point: `plan_joint_attention(sizes, q_chunk, k_chunk, grid, ...) -> JointPlan`. The kernel
(`joint_attention.py`), the cost count (`jointattn.runtime.ttlang.cost`) and the ring driver (`ring.py`) all read
the same plan, so what is counted is what runs.

Device tensors are 2-D and tiled: a token set of S rows becomes [b * nh * ceil(S / 32) * 32, ceil(dh / 32) * 32],
one (batch, head) after another, so a (batch, head) occupies a run of whole tiles (tile padding only, never chunk
padding). Sizes below are in tiles.

- A *work item* is one query chunk of one (batch, head, token set): `q_chunk` tiles, or fewer for the last chunk
  of a set (the tail is its own, smaller chunk: no padding to a chunk multiple). Items are split over the cores of
  `grid` in contiguous runs.
- An item attends to its batch's *key pieces*: the valid key tiles of the spatial set, then of the joint set.
  Tiles wholly past a valid length are never read. Whole valid tiles come in chunks of `k_chunk` tiles; the tiles
  left over are split into powers of two (at most log2(k_chunk) pieces, so the number of distinct chunk shapes,
  and of dataflow buffers, stays bounded whatever the valid lengths); the tile holding a valid length that is not
  a multiple of 32 comes last, alone, with the number of its valid rows, and the kernel masks its other columns.
- A batch with no valid key at all gets no pieces: its rows are written as 0 with lse -inf.

Ring steps (`ring.py`) use the same plan with `carry` set: the item starts from the (out, lse) an earlier step
left instead of from nothing, and a batch whose step has no valid key passes them through.
"""

from __future__ import annotations

from dataclasses import dataclass

TILE = 32
SPATIAL, JOINT = 0, 1
MAX_DATAFLOW_BUFFERS = 32  # per core, Wormhole and Blackhole (TT-Lang spec, appendix E)


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


@dataclass(frozen=True)
class WorkItem:
    """One query chunk: rows [row, row + count) of the 2-D tensor of its token set (tiles)."""

    token_set: int
    batch: int
    head: int
    row: int
    count: int
    pieces: tuple[KeyPiece, ...]
    carry: bool  # start from the (out, lse) already in the output tensors (ring steps after the first)


@dataclass(frozen=True)
class JointPlan:
    b: int
    nh: int
    n: int
    l: int  # noqa: E741
    dh: int
    q_chunk: int
    k_chunk: int
    grid: tuple[int, int]
    items: tuple[WorkItem, ...]

    @property
    def d_tiles(self) -> int:
        return tiles(self.dh)

    @property
    def cores(self) -> int:
        return self.grid[0] * self.grid[1]

    def set_tiles(self, token_set: int) -> int:
        return tiles(self.n if token_set == SPATIAL else self.l)

    def core_items(self, core: int) -> tuple[WorkItem, ...]:
        """The items core `core` runs, in order: a contiguous run of `items`."""
        per_core = -(-len(self.items) // self.cores)
        return self.items[core * per_core : (core + 1) * per_core]

    @property
    def query_shapes(self) -> tuple[int, ...]:
        return tuple(sorted({item.count for item in self.items}))

    @property
    def key_shapes(self) -> tuple[int, ...]:
        return tuple(sorted({p.count for item in self.items for p in item.pieces}))

    @property
    def carries(self) -> bool:
        return any(item.carry for item in self.items)

    @property
    def dataflow_buffers(self) -> int:
        """Per core: q, m, l, acc, out, lse per query shape (+ the carried out and lse when carrying); k and v per
        key shape; the mask tile."""
        per_query = 8 if self.carries else 6
        return per_query * len(self.query_shapes) + 2 * len(self.key_shapes) + 1


def key_pieces(token_set: int, valid: int, k_chunk: int) -> list[KeyPiece]:
    """The key tiles of one token set with `valid` valid rows, as the kernel reads them."""
    whole, rest = divmod(valid, TILE)
    pieces, start = [], 0
    for _ in range(whole // k_chunk):
        pieces.append(KeyPiece(token_set, start, k_chunk))
        start += k_chunk
    left = whole % k_chunk
    for bit in reversed(range(left.bit_length())):
        if left >> bit & 1:
            pieces.append(KeyPiece(token_set, start, 1 << bit))
            start += 1 << bit
    if rest:
        pieces.append(KeyPiece(token_set, start, 1, rest))
    return pieces


def plan_joint_attention(
    b: int,
    nh: int,
    n: int,
    l: int,  # noqa: E741
    dh: int,
    *,
    valid_n: tuple[int, ...],
    valid_l: tuple[int, ...],
    q_chunk: int,
    k_chunk: int,
    grid: tuple[int, int],
    joint_keys: tuple[bool, ...] | None = None,
    carry: tuple[bool, ...] | None = None,
) -> JointPlan:
    """The plan of one launch.

    Args:
        b, nh, n, l, dh: sizes of the op (n, l: rows of the token sets this launch computes queries for).
        valid_n, valid_l: per batch, valid key rows of the spatial and joint sets this launch reads.
        q_chunk, k_chunk: chunk sizes in tiles (any positive ints; nothing needs to divide anything).
        grid: the core grid (rows, cols).
        joint_keys: per batch, whether the joint keys take part (ring steps pass them once); default all.
        carry: per batch, whether items start from the outputs of an earlier launch (ring steps).
    """
    for name, value in (("q_chunk", q_chunk), ("k_chunk", k_chunk)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"ttlang plan: {name} must be a positive number of tiles; got {value!r}")
    if len(grid) != 2 or any(isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in grid):
        raise ValueError(f"ttlang plan: grid must be two positive ints (rows, cols); got {grid!r}")
    joint_keys = joint_keys if joint_keys is not None else (True,) * b
    carry = carry if carry is not None else (False,) * b
    items = []
    for bz in range(b):
        pieces = key_pieces(SPATIAL, valid_n[bz], k_chunk)
        if joint_keys[bz]:
            pieces += key_pieces(JOINT, valid_l[bz], k_chunk)
        for h in range(nh):
            for token_set, rows in ((SPATIAL, n), (JOINT, l)):
                total = tiles(rows)
                base = (bz * nh + h) * total
                for start in range(0, total, q_chunk):
                    count = min(q_chunk, total - start)
                    items.append(WorkItem(token_set, bz, h, base + start, count, tuple(pieces), carry[bz]))
    plan = JointPlan(b, nh, n, l, dh, q_chunk, k_chunk, (grid[0], grid[1]), tuple(items))
    if plan.dataflow_buffers > MAX_DATAFLOW_BUFFERS:
        raise ValueError(
            f"ttlang plan: q_chunk={q_chunk}, k_chunk={k_chunk} need {plan.dataflow_buffers} dataflow buffers per "
            f"core (query shapes {plan.query_shapes}, key shapes {plan.key_shapes}); a core has "
            f"{MAX_DATAFLOW_BUFFERS}. Pick chunk sizes with fewer distinct tails."
        )
    return plan


def shard_valid(valid_n, origin: int, shard_rows: int) -> tuple[int, ...]:
    """Valid spatial keys, per batch, of the ring shard that started on device `origin`."""
    return tuple(min(max(v - origin * shard_rows, 0), shard_rows) for v in valid_n)


def ring_plans(
    b: int,
    nh: int,
    shard_rows: int,
    l: int,  # noqa: E741
    dh: int,
    *,
    ring: int,
    valid_n: tuple[int, ...],
    valid_l: tuple[int, ...],
    q_chunk: int,
    k_chunk: int,
    grid: tuple[int, int],
) -> list[list[JointPlan]]:
    """plans[step][device] of ring attention (`ring.py`): at step s device d holds the K/V shard of device
    (d - s) mod ring; the joint keys take part at step 0; a batch carries the (out, lse) of earlier steps once one
    of them saw a valid key."""
    seen = [[False] * b for _ in range(ring)]
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
                    valid_l=tuple(valid_l),
                    q_chunk=q_chunk,
                    k_chunk=k_chunk,
                    grid=grid,
                    joint_keys=(step == 0,) * b,
                    carry=tuple(seen[d]),
                )  # fmt: skip
            )
            seen[d] = [seen[d][bz] or valid[bz] > 0 or (step == 0 and valid_l[bz] > 0) for bz in range(b)]
        plans.append(row)
    return plans
