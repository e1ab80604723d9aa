"""What a TT-Lang joint-attention launch moves and computes, counted from its plan, against ttnn's joint SDPA.

Entry points:
- `kernel_cost(plan) -> Cost`: DRAM tiles the kernel reads and writes, and the matrix tiles it multiplies (one
  unit = one 32x32 by 32x32 tile product; q @ k^T and p @ v each cost rows x keys x dh tiles). Read off the same
  plan the kernel runs (`jointattn.kernels.ttlang.schedule`), launch by launch. Batches with no valid key run no
  launch and cost nothing (their outputs are the values the output tensors are created with).
- `ttnn_joint_sdpa_cost(b, nh, n, l, dh, q_chunk, k_chunk) -> Cost`: the same counts for ttnn's
  `joint_scaled_dot_product_attention` on tile-padded inputs of N and L rows, as its program factory does the work:
  the query rows of each set padded up to a multiple of q_chunk and its key rows to a multiple of k_chunk; every
  query chunk of every (batch, head) reads its chunk and every key chunk (K and V) of both padded sets and writes
  its output chunk. The op has no valid
  lengths, so it reads every key, padded or not (its mask tiles are made on the core, not read).
- `compare(...)`: both, for the README's table (`python -m jointattn.runtime.ttlang.cost` prints it).
"""

from __future__ import annotations

from dataclasses import dataclass

from jointattn.kernels.ttlang.schedule import TILE, JointPlan, batch_groups, plan_joint_attention, tiles


@dataclass(frozen=True)
class Cost:
    tiles_read: int
    tiles_written: int
    matmul_tiles: int

    @property
    def tiles_moved(self) -> int:
        return self.tiles_read + self.tiles_written

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.tiles_read + other.tiles_read,
            self.tiles_written + other.tiles_written,
            self.matmul_tiles + other.matmul_tiles,
        )


def kernel_cost(plan: JointPlan) -> Cost:
    dt = plan.d_tiles
    read = written = matmul = 0
    for launch in plan.launches:
        qs, pieces = launch.q_tiles, launch.pieces()
        key_tiles = sum(p.count for p in pieces)
        per_item = qs * dt  # the query chunk
        if launch.carry:
            per_item += qs * dt + qs  # the out and lse chunks to continue from
        per_item += 2 * key_tiles * dt + sum(p.valid_rows < TILE for p in pieces)  # K, V and mask tiles
        read += launch.items * per_item
        written += launch.items * (qs * dt + qs)  # out and lse
        matmul += launch.items * 2 * qs * key_tiles * dt
    return Cost(read, written, matmul)


def call_cost(b, nh, n, l, dh, *, valid_n, valid_l, q_chunk, k_chunk, grid=(8, 8)) -> Cost:  # noqa: E741
    """The kernel's cost for a call with per-batch valid lengths: one plan per group of batches sharing them."""
    total = Cost(0, 0, 0)
    for batches, vn, vl in batch_groups(valid_n, valid_l):
        plan = plan_joint_attention(
            len(batches), nh, n, l, dh, valid_n=vn, valid_l=vl, q_chunk=q_chunk, k_chunk=k_chunk, grid=grid
        )
        total = total + kernel_cost(plan)
    return total


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def ttnn_joint_sdpa_cost(b: int, nh: int, n: int, l: int, dh: int, q_chunk: int, k_chunk: int) -> Cost:  # noqa: E741
    """q_chunk, k_chunk in tiles (ttnn's sizes divided by 32). Query rows of each set are padded to q chunks, key
    rows to k chunks (as `jointattn.runtime.ttnn.config` models the program factory)."""
    dt = tiles(dh)
    q_chunks = -(-tiles(n) // q_chunk) + -(-tiles(l) // q_chunk)
    key_tiles = _round_up(tiles(n), k_chunk) + _round_up(tiles(l), k_chunk)
    per_chunk_read = q_chunk * dt + 2 * key_tiles * dt
    return Cost(
        b * nh * q_chunks * per_chunk_read,
        b * nh * q_chunks * q_chunk * dt,
        b * nh * q_chunks * 2 * q_chunk * key_tiles * dt,
    )


@dataclass(frozen=True)
class Comparison:
    name: str
    ttlang: Cost
    ttnn: Cost


def compare(name, b, nh, n, l, dh, *, valid_n, valid_l, q_chunk, k_chunk, grid=(8, 8)) -> Comparison:  # noqa: E741
    kernel = call_cost(
        b, nh, n, l, dh, valid_n=valid_n, valid_l=valid_l, q_chunk=q_chunk, k_chunk=k_chunk, grid=grid
    )
    return Comparison(name, kernel, ttnn_joint_sdpa_cost(b, nh, n, l, dh, q_chunk, k_chunk))


# name, (b, nh, N, L, dh), valid_n, valid_l, (q_chunk, k_chunk) in tiles
TABLE_CASES = (
    ("odd sizes, both padded", (2, 2, 100, 19, 40), (100, 37), (19, 5), (2, 3)),
    ("N=3001, L=77, chunks 4/4", (1, 1, 3001, 77, 64), (2990,), (70,), (4, 4)),
    ("SD3.5, text 333 and 77 valid", (2, 38, 4096, 333, 64), (4096, 4096), (333, 77), (4, 8)),
    ("Flux, 77 of 512 text valid", (1, 24, 4096, 512, 128), (4096,), (77,), (4, 8)),
    ("Mochi, 100 of 256 text valid", (1, 24, 44520, 256, 128), (44520,), (100,), (8, 16)),
)


def table() -> str:
    lines = [
        "| case | q/k chunk (tiles) | tiles moved: TT-Lang / ttnn | matmul tiles: TT-Lang / ttnn |",
        "| --- | --- | ---: | ---: |",
    ]
    for name, (b, nh, n, l, dh), valid_n, valid_l, (qc, kc) in TABLE_CASES:  # noqa: E741
        c = compare(name, b, nh, n, l, dh, valid_n=valid_n, valid_l=valid_l, q_chunk=qc, k_chunk=kc)
        moved = f"{c.ttlang.tiles_moved:,} / {c.ttnn.tiles_moved:,} ({c.ttlang.tiles_moved / c.ttnn.tiles_moved:.2f})"
        mm = f"{c.ttlang.matmul_tiles:,} / {c.ttnn.matmul_tiles:,} ({c.ttlang.matmul_tiles / c.ttnn.matmul_tiles:.2f})"
        lines.append(f"| {name} (b {b}, nh {nh}, N {n}, L {l}, dh {dh}) | {qc}/{kc} | {moved} | {mm} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
