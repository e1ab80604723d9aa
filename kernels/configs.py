"""Launch configurations of the joint-attention kernels: the documented defaults and the autotune space.

Entry points: `forward_launch_config(dh, dtype, n, l)` (the forward config used whenever autotuning is off,
in interpret mode, and printed into IR by the MLIR lowering), `backward_launch_config(dh, dtype)`, and
`forward_candidates(dh, dtype)`, the autotune space filtered by `keep()`.

Internals: one table per kernel keyed by (head block, element size). The forward defaults are the winners of
the H100 sweeps in `benchmarks/results/sweep-*.json` (see `benchmarks/NOTES-triton.md`); why each value:
- dh 128: BLOCK_M 128, BLOCK_N 128, 8 warps, 3 stages (H100, Flux shape: 0.478-0.485 ms against 0.49-0.52 for
  the next configs). Two warpgroups of 64 query rows each issue their own wgmma, so one warpgroup's softmax
  overlaps the other's matrix products; 244 registers, no spills, 192 KB shared memory (Q + 3 K/V stages).
- dh 64: BLOCK_M 128, BLOCK_N 64, 8 warps, 3 stages (SD3.5 shape: 0.855 ms; 124 registers, 48 KB shared, so two
  programs share an SM). BLOCK_N 128 at dh 64 was 25% slower.
- num_stages 3 everywhere: with 2 stages every config lost 15-35% (the TMA loads are issued one block ahead
  only, too late to hide the load latency); 4 stages gained nothing.
- TMA tensor descriptors beat strided pointer loads by 10-20% in every config (`launch_forward` uses them when
  the layout allows).
- dh <= 32 reuse dh 64's winner, dh 256 and float32 are sized to fit shared memory and registers without
  spills (checked with `benchmarks/compile_report.py`); they are correct, not tuned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LaunchConfig:
    """Tile sizes and scheduling of one kernel launch (Triton's BLOCK_M/BLOCK_N, num_warps, num_stages)."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


# Hopper shared memory per block (bytes), the budget `keep()` prunes against.
SHARED_MEMORY_BYTES = 227 * 1024


def head_block(dh: int) -> int:
    """The padded head dimension a tile is built with: a power of two, at least 16 (the MMA's K step)."""
    return max(16, 1 << (max(1, dh) - 1).bit_length())


# (head block, element bytes) -> forward default. Element bytes 2 = fp16/bf16, 4 = fp32 (ieee dots).
_FORWARD_DEFAULTS: dict[tuple[int, int], LaunchConfig] = {
    (16, 2): LaunchConfig(128, 64, 8, 3),  # not swept: dh 64's winner
    (32, 2): LaunchConfig(128, 64, 8, 3),  # not swept: dh 64's winner
    (64, 2): LaunchConfig(128, 64, 8, 3),  # H100 sweep, SD3.5 shape
    (128, 2): LaunchConfig(128, 128, 8, 3),  # H100 sweep, Flux shape
    (256, 2): LaunchConfig(64, 64, 4, 2),  # correctness only: 254 registers, no spills, 128 KB shared
    (16, 4): LaunchConfig(64, 64, 4, 2),
    (32, 4): LaunchConfig(64, 64, 4, 2),
    (64, 4): LaunchConfig(64, 32, 4, 2),
    (128, 4): LaunchConfig(64, 32, 4, 2),
    (256, 4): LaunchConfig(32, 32, 4, 1),
}

# (head block, element bytes) -> backward default, used for both the dk/dv and the dq kernel:
# block_m is the query tile, block_n the key tile.
_BACKWARD_DEFAULTS: dict[tuple[int, int], LaunchConfig] = {
    (16, 2): LaunchConfig(64, 128, 8, 2),
    (32, 2): LaunchConfig(64, 128, 8, 2),
    (64, 2): LaunchConfig(64, 128, 8, 2),
    (128, 2): LaunchConfig(64, 128, 8, 2),
    (256, 2): LaunchConfig(32, 64, 8, 1),
    (16, 4): LaunchConfig(32, 64, 4, 1),
    (32, 4): LaunchConfig(32, 64, 4, 1),
    (64, 4): LaunchConfig(32, 64, 4, 1),
    (128, 4): LaunchConfig(32, 32, 4, 1),
    (256, 4): LaunchConfig(16, 32, 4, 1),
}


def _element_bytes(dtype: torch.dtype) -> int:
    return 4 if dtype == torch.float32 else 2


def _fit_to_sequence(config: LaunchConfig, n: int, l: int) -> LaunchConfig:  # noqa: E741
    """Shrinks tiles that are far larger than both token sets (short sequences waste a 128-row tile)."""
    longest = max(n, l, 1)
    block_m = max(16, min(config.block_m, head_block(longest)))
    block_n = max(16, min(config.block_n, head_block(longest)))
    if (block_m, block_n) == (config.block_m, config.block_n):
        return config
    warps = 4 if block_m * block_n < 128 * 128 else config.num_warps
    return LaunchConfig(block_m, block_n, warps, config.num_stages)


def forward_launch_config(dh: int, dtype: torch.dtype, n: int, l: int) -> LaunchConfig:  # noqa: E741
    """The documented forward config for head size `dh`, element type `dtype` and token counts n, l."""
    if dh > 256:
        raise ValueError(f"joint_attention triton kernels support dh <= 256; got dh={dh}")
    return _fit_to_sequence(_FORWARD_DEFAULTS[(head_block(dh), _element_bytes(dtype))], n, l)


def backward_launch_config(dh: int, dtype: torch.dtype, n: int = 1 << 30, l: int = 1 << 30) -> LaunchConfig:  # noqa: E741
    """The documented backward config (query tile block_m, key tile block_n) for `dh` and `dtype`."""
    if dh > 256:
        raise ValueError(f"joint_attention triton kernels support dh <= 256; got dh={dh}")
    return _fit_to_sequence(_BACKWARD_DEFAULTS[(head_block(dh), _element_bytes(dtype))], n, l)


def forward_shared_memory(config: LaunchConfig, dh: int, dtype: torch.dtype) -> int:
    """Bytes of shared memory a forward config needs: Q once, K and V once per pipeline stage."""
    d = head_block(dh) * _element_bytes(dtype)
    return config.block_m * d + 2 * config.block_n * d * max(1, config.num_stages)


def keep(config: LaunchConfig, dh: int, dtype: torch.dtype) -> bool:
    """Autotune pruning: drops configs that cannot fit or are known slow on Hopper.

    - shared memory over the per-block budget;
    - 8 warps with BLOCK_M < 128: each of the two warpgroups needs 64 query rows (the wgmma M);
    - BLOCK_N = 32 with BLOCK_M = 128 and 4 warps: the key loop's per-iteration bookkeeping dominates;
    - fp32 accumulator and score tiles of more than 192 registers per thread together (they spill).
    """
    if forward_shared_memory(config, dh, dtype) > SHARED_MEMORY_BYTES:
        return False
    if config.num_warps == 8 and config.block_m < 128:
        return False
    if config.block_n == 32 and config.block_m == 128 and config.num_warps == 4:
        return False
    threads = 32 * config.num_warps
    accumulator_regs = (config.block_m * head_block(dh) + config.block_m * config.block_n) // threads
    if accumulator_regs > 128 + 64:
        return False
    return True


def forward_candidates(dh: int, dtype: torch.dtype) -> list[LaunchConfig]:
    """The forward autotune space for (dh, dtype): block sizes, warps and stages that `keep()` allows."""
    space = [
        LaunchConfig(bm, bn, w, s) for bm in (64, 128) for bn in (32, 64, 128) for w in (4, 8) for s in (2, 3)
    ]
    return [c for c in space if keep(c, dh, dtype)]


@dataclass(frozen=True)
class HopperConfig:
    """Tiles of the Gluon Hopper forward (`joint_attention_fwd_hopper.py`): BLOCK_M query rows per consumer
    warpgroup (a CTA takes two), BLOCK_N keys per block, NUM_STAGES K/V buffers, consumer registers; `default`:
    whether `launch_forward` picks it unasked (it measured faster than the Triton kernel at that dh)."""

    block_m: int
    block_n: int
    num_stages: int
    consumer_regs: int
    default: bool


# dh -> Hopper forward config (H100 measurements in benchmarks/NOTES-triton.md, "Hopper kernel"):
# - 240 registers is the most two consumer warpgroups and a 24-register producer can take (a value that is
#   not a multiple of 8 silently drops setmaxnreg).
# - dh 128: 2 stages (Flux 0.423 ms, Mochi 37.2 ms) beat 3 (0.430, 37.4) and the Triton kernel (0.485, 42.8).
# - dh 64: correct, but slower than the Triton kernel on SD3.5: 0.91 ms against 0.87 (128-row warpgroup tiles
#   with 64-key blocks: 1.05-1.07 ms; 4 stages: no gain; three consumer warpgroups, FA-3's dh-64 setup:
#   0.864-0.925 ms, reverted). Runs only when asked for.
# - dh 256: 64-key blocks (a 128-key K/V block at dh 256 leaves room for one stage: 508 bytes of spills offline),
#   2 stages: 197 KB of shared memory, 16 bytes of spill stores offline (`tests/hopper_build_report.py 256`).
#   Not the default: the dispatcher's table decides it against cuDNN's dh-256 kernel where it has measured it.
_HOPPER_CONFIGS: dict[int, HopperConfig] = {
    64: HopperConfig(64, 128, 2, 240, default=False),
    128: HopperConfig(64, 128, 2, 240, default=True),
    256: HopperConfig(64, 64, 2, 240, default=False),
}


def hopper_forward_config(dh: int) -> HopperConfig | None:
    """The Hopper forward config for head size `dh`, or None where that kernel has none (it then does not run)."""
    return _HOPPER_CONFIGS.get(dh)


# The Gluon sparse forward (`sparse_joint_attention_fwd_hopper.py`) runs the dense forward's config at the head
# sizes its GPU tests cover; dh 256 (the dense forward's since the eighteenth session) has not been built for it.
_SPARSE_FORWARD_HEAD_DIMS = (64, 128)


def hopper_sparse_forward_config(dh: int) -> HopperConfig | None:
    """The Gluon sparse forward's config for head size `dh` (the dense forward's), or None where it has none."""
    return _HOPPER_CONFIGS.get(dh) if dh in _SPARSE_FORWARD_HEAD_DIMS else None


def hopper_head_dims(backward: bool = False, sparse: bool = False) -> tuple[int, ...]:
    """The head sizes the Gluon Hopper kernels of a pass have configs for (for error messages)."""
    if sparse:
        return tuple(sorted(_HOPPER_SPARSE_BACKWARD_CONFIGS)) if backward else _SPARSE_FORWARD_HEAD_DIMS
    return tuple(sorted(_HOPPER_BACKWARD_CONFIGS if backward else _HOPPER_CONFIGS))


@dataclass(frozen=True)
class HopperBackwardConfig:
    """Tiles of the Gluon Hopper backward (`joint_attention_bwd_hopper.py`): BLOCK_M query rows per block of the
    query loop, KEYS_PER_WG keys per consumer warpgroup (a CTA takes two, 2 * KEYS_PER_WG keys), NUM_STAGES
    Q/dO buffers, consumer registers (a multiple of 8, as the forward's)."""

    block_m: int
    keys_per_wg: int
    num_stages: int
    consumer_regs: int
    split_dq: bool  # each consumer computes half of dQ's columns over all the CTA's keys (FA3's split)
    # Both consumers hold the same keys_per_wg keys and take alternate query steps (the sparse backward's CTAs
    # for key blocks of 64), instead of splitting 2 * keys_per_wg keys and sharing every step.
    alternate_steps: bool = False

    @property
    def block_n(self) -> int:
        """Keys per CTA."""
        return self.keys_per_wg if self.alternate_steps else 2 * self.keys_per_wg

    def dq_cols(self, dh: int) -> int:
        """dQ columns per consumer at head size `dh`: the box of the kernel's dQ reduce-adds."""
        return dh // 2 if self.split_dq else dh


# dh -> Hopper backward config, sized offline (`tests/hopper_backward_build_report.py`: shared memory in budget)
# and then measured:
# - dh 128: 64-query blocks, 2 x 64 keys, 2 stages, dQ unsplit: 213 KB shared (the split of dQ's columns
#   between the consumers, FA3's, takes 181 KB and leaves the query loop free of spill stores, but ran slower).
#   3 stages would exceed 227 KB.
# - dh 64: same tiles, 3 stages, dQ unsplit (a 32-column half of K would cut its 128-byte swizzle rows); 132 KB.
# Measured on the H200 (`benchmarks/results/hopper_backward-h200.json`, bf16, one run): at Flux's shape the unsplit
# dQ ran 1.59 ms against 1.76 split (1.51 vs 1.54 with 77 of 512 text valid), so dh 128 takes it (213 KB); at
# SD3.5's dh-64 shape 3 stages ran 2.67 ms against 2.79 with 2.
_HOPPER_BACKWARD_CONFIGS: dict[int, HopperBackwardConfig] = {
    64: HopperBackwardConfig(64, 64, 3, 240, split_dq=False),
    128: HopperBackwardConfig(64, 64, 2, 240, split_dq=False),
}


def hopper_backward_config(dh: int) -> HopperBackwardConfig | None:
    """The Hopper backward config for head size `dh`, or None where that kernel has none."""
    return _HOPPER_BACKWARD_CONFIGS.get(dh)


# dh -> the Gluon sparse backward's config (`sparse_joint_attention_bwd_hopper.py`) for key blocks of 64: the
# dense backward's tiles, but CTAs of 64 keys (a mask's 64-key block has one list of query blocks) whose two
# consumers take alternate query steps, each stage feeding one consumer: 3 stages at dh 128 (208 KB of shared
# memory; 4 would need 240) give each consumer about one step of lookahead, 4 at dh 64 (128 KB) two. Key blocks
# that hold whole 128-key CTAs take the dense backward's config and schedule (each Q/dO tile serves 128 keys).
_HOPPER_SPARSE_BACKWARD_CONFIGS: dict[int, HopperBackwardConfig] = {
    64: HopperBackwardConfig(64, 64, 4, 240, split_dq=False, alternate_steps=True),
    128: HopperBackwardConfig(64, 64, 3, 240, split_dq=False, alternate_steps=True),
}


def hopper_sparse_backward_config(dh: int, kv_block: int = 64) -> HopperBackwardConfig | None:
    """The Gluon sparse backward's config for head size `dh` under key blocks of `kv_block`, or None where that
    kernel has none: the dense backward's (CTAs of 128 keys) where the blocks hold whole CTAs of it."""
    dense = _HOPPER_BACKWARD_CONFIGS.get(dh)
    if dense is not None and not dense.split_dq and kv_block % dense.block_n == 0:
        return dense
    return _HOPPER_SPARSE_BACKWARD_CONFIGS.get(dh)
