"""The single-process parts of jointattn.distributed: ring schedule, sharding, chooser, errors
(the log-sum-exp merge itself is tested in test_merge.py).

The multi-process behaviour (both strategies against the op, forward and backward) is in test_distributed.py.
"""

from __future__ import annotations

import jointattn.distributed as jd
import pytest
import torch
import torch.distributed as dist


@pytest.mark.parametrize("world_size", range(1, 9))
def test_ring_schedule_counts_every_key_once(world_size):
    schedules = [jd.ring_schedule(rank, world_size) for rank in range(world_size)]
    for rank, steps in enumerate(schedules):
        assert [s.index for s in steps] == list(range(world_size))
        assert [s.source for s in steps] == [(rank - t) % world_size for t in range(world_size)]
        # This rank's spatial queries meet the joint keys exactly once, in a step that computes joint rows.
        with_joint_keys = [s for s in steps if s.joint_keys]
        assert len(with_joint_keys) == 1 and with_joint_keys[0].joint_rows != "none"
        # No rank repeats the joint queries' work past step 1.
        assert all(s.joint_rows == "none" for s in steps[2:])
    # The kept joint partials cover each shard once, and the joint keys once (rank 0).
    kept = [s for steps in schedules for s in steps if s.joint_rows == "keep"]
    assert sorted(s.source for s in kept) == list(range(world_size))
    assert [s.source for s in kept if s.joint_keys] == [0]


@pytest.mark.parametrize(
    "logical_n, n_local, expected",
    [
        (13, 4, [4, 4, 4, 1]),  # N = 13 padded to 16 on 4 ranks
        (5, 4, [4, 1, 0, 0]),  # whole shards of padding
        (0, 3, [0, 0, 0]),
        (None, 4, [None, None]),
    ],
    ids=["partial-last", "empty-shards", "none-valid", "all-valid"],
)
def test_block_valid_length_int(logical_n, n_local, expected):
    assert [jd.block_valid_length(logical_n, j, n_local) for j in range(len(expected))] == expected


def test_block_valid_length_per_batch_tensor_sums_to_logical_n():
    logical_n = torch.tensor([13, 6, 0], dtype=torch.int32)
    blocks = [jd.block_valid_length(logical_n, j, 4) for j in range(4)]
    assert all(b.dtype == torch.int32 for b in blocks)
    assert torch.stack(blocks).tolist() == [[4, 4, 0], [4, 2, 0], [4, 0, 0], [1, 0, 0]]
    assert torch.equal(torch.stack(blocks).sum(0), logical_n)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 5])
def test_shard_sequence_pads_and_splits(world_size):
    x = torch.randn(2, 3, 13, 4, generator=torch.Generator().manual_seed(world_size))
    shards = [jd.shard_sequence(x, r, world_size) for r in range(world_size)]
    n_pad = jd.padded_length(13, world_size)
    assert n_pad % world_size == 0 and 13 <= n_pad < 13 + world_size
    joined = torch.cat(shards, dim=2)
    assert joined.shape == (2, 3, n_pad, 4)
    assert torch.equal(joined[:, :, :13], x)
    assert torch.count_nonzero(joined[:, :, 13:]) == 0


def test_shard_sequence_is_a_view_when_divisible():
    x = torch.randn(1, 2, 12, 4)
    assert jd.shard_sequence(x, 2, 3).data_ptr() == x[:, :, 8:].data_ptr()


def test_sharding_errors_name_the_argument():
    with pytest.raises(ValueError, match="rank must lie in"):
        jd.shard_sequence(torch.zeros(1, 1, 4, 1), 3, 3)
    with pytest.raises(ValueError, match="world_size must be at least 1"):
        jd.padded_length(4, 0)


@pytest.mark.parametrize(
    "nh, n_local, l, world_size, expected",
    [
        (24, 5565, 256, 8, "ulysses"),  # Mochi on 8 GPUs
        (24, 2048, 512, 2, "ulysses"),  # Flux 1024^2 on 2 GPUs
        (24, 1000, 0, 2, "ring"),  # no joint tokens, P = 2: equal volumes, ties go to the overlapping ring
        (24, 1000, 0, 4, "ulysses"),
        (10, 100, 8, 4, "ring"),  # heads do not divide
        (24, 100, 8, 1, "ring"),  # one rank: no communication either way
    ],
    ids=["mochi-P8", "flux-P2", "no-joint-P2", "no-joint-P4", "heads-indivisible", "P1"],
)
def test_choose_strategy(nh, n_local, l, world_size, expected):  # noqa: E741
    choice = jd.choose_strategy(nh, n_local, l, world_size)
    assert choice.strategy == expected, choice.reason
    assert choice.ring_volume == (world_size - 1) * (2 * n_local + l)
    if nh % world_size:
        assert choice.ulysses_volume is None and "not divisible" in choice.reason
    else:
        assert choice.ulysses_volume == pytest.approx((world_size - 1) / world_size * (4 * n_local + l))


def test_communication_volume_rejects_unknown_strategy():
    with pytest.raises(ValueError, match="strategy must be 'ring' or 'ulysses'"):
        jd.communication_volume("tree", 4, 4, 2)


def test_calls_without_a_process_group_say_what_to_do():
    assert not dist.is_initialized(), "precondition: no default process group in the test process"
    q = torch.zeros(1, 2, 3, 4)
    for attend in (jd.ring_joint_attention, jd.ulysses_joint_attention, jd.sequence_parallel_joint_attention):
        with pytest.raises(RuntimeError, match="init_process_group"):
            attend(q, q, q, q, q, q)


def test_unknown_strategy_is_refused_first():
    q = torch.zeros(1, 2, 3, 4)
    with pytest.raises(ValueError, match=r"strategy must be one of \('auto', 'ring', 'ulysses'\)"):
        jd.sequence_parallel_joint_attention(q, q, q, q, q, q, strategy="tree")
