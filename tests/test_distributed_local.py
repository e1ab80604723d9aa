"""The single-process parts of jointattn.distributed: ring schedule, sharding, chooser, errors, and the
ranks' call descriptors and verdict (the log-sum-exp merge itself is tested in test_merge.py).

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


# ----------------------------------------------------------------------------------------------------------
# The ranks' call descriptors (agreement.py): what is packed, and the verdict every rank reaches from them.
# The exchange itself, on 2-4 processes, is in test_distributed.py.


def _summary(logical_n=None, logical_l=None, scale=None, strategy="ring", b=2, dh=8, world_size=2, **kw):
    from jointattn.distributed import agreement
    from jointattn.runtime.validation import JointShape

    q = torch.zeros(b, 4, 7, dh)
    joint = torch.zeros(b, 4, 5, dh)
    args = agreement.CallArgs((q, q, q, joint, joint, joint), logical_n, logical_l, scale, "reference")
    checked = agreement.Checked(JointShape(b, 4, 7, 5, dh), strategy, **kw)
    return agreement.summarize("ring_joint_attention", checked, args, world_size)


def test_descriptor_round_trip():
    from jointattn.distributed import agreement

    summaries = [
        _summary(torch.tensor([13, 6]), 3, 0.25),
        _summary(None, torch.tensor(list(range(5)) * 8), strategy="ulysses", auto=True, b=40),  # CRC part
    ]
    refusals = [
        agreement.Refusal("sequence_parallel_joint_attention", TypeError, "joint_attention: q must é"),
        agreement.refusal("ring_joint_attention", ValueError("x" * 1000 + "\nmore")),  # cut to the slots
    ]
    for record in summaries + refusals:
        row = agreement.encode(record)
        assert row.dtype == torch.int64 and row.shape == (agreement.SLOTS,)
        assert agreement.decode(row) == record
    assert refusals[1].message == "x" * agreement.MESSAGE_BYTES


def test_equivalent_arguments_agree():
    from jointattn.distributed import agreement

    # None = all P * N_local valid; an int = every entry's length; None scale = 1/sqrt(dh), as the op reads it.
    same = [
        _summary(None, None, None),
        _summary(14, 5, 8**-0.5),
        _summary(torch.tensor([14, 14]), torch.tensor([5, 5], dtype=torch.int32), 8**-0.5),
    ]
    assert agreement.verdict(same) == (None, agreement.RanksDisagreeError)


def test_verdict_names_each_field_with_every_rank_value():
    from jointattn.distributed import agreement

    base = _summary(None, torch.tensor([5, 2]))
    message, kind = agreement.verdict([base, _summary(None, torch.tensor([5, 3]), 0.5), base])
    assert kind is agreement.RanksDisagreeError and issubclass(kind, ValueError)
    assert message == (
        "ring_joint_attention: ranks disagree on scale: ranks 0, 2 have None (= 0.3535533905932738), "
        "rank 1 has 0.5; and on logical_l: ranks 0, 2 have [5, 2], rank 1 has [5, 3]"
    )


def test_verdict_reports_shapes_alone_when_they_differ():
    from jointattn.distributed import agreement

    # dh 16 also changes the default scale and would change per-batch lengths' meaning: shapes come first.
    message, _ = agreement.verdict([_summary(dh=8), _summary(dh=16, logical_l=2)])
    assert message == "ring_joint_attention: ranks disagree on dh (q.shape[3]): rank 0 has 8, rank 1 has 16"


def test_verdict_sees_a_difference_past_the_carried_lengths():
    from jointattn.distributed import agreement

    lengths = list(range(20))
    other = lengths[:18] + [0, 19]  # differs only past the first LENGTH_VALUES = 16 values
    message, _ = agreement.verdict(
        [_summary(torch.tensor(lengths), b=20), _summary(torch.tensor(other), b=20)]
    )
    assert message.startswith("ring_joint_attention: ranks disagree on logical_n: rank 0 has [0, 1, 2,")
    assert message.count("(20 values, crc32 ") == 2


def test_verdict_passes_on_a_refusal():
    from jointattn.distributed import agreement

    refused = agreement.Refusal("ring_joint_attention", TypeError, "joint_attention: scale must be a float")
    ok = _summary()
    assert agreement.verdict([refused, refused]) == (refused.message, TypeError)  # raised as it is
    message, kind = agreement.verdict([ok, refused, refused])
    assert kind is TypeError
    assert message == "ring_joint_attention: the call is invalid on ranks 1, 2: " + refused.message
    other = agreement.Refusal("ring_joint_attention", ValueError, "joint_attention: other")
    message, kind = agreement.verdict([other, refused])
    assert kind is ValueError  # the lowest refusing rank's kind
    assert (
        message
        == f"ring_joint_attention: the call is invalid on rank 0: {other.message}; on rank 1: {refused.message}"
    )


def test_verdict_names_a_rank_that_sent_no_descriptor():
    from jointattn.distributed import agreement

    records = [agreement.decode(agreement.encode(_summary())), agreement.decode(torch.zeros(agreement.SLOTS))]
    message, kind = agreement.verdict(records)
    assert kind is RuntimeError and "rank 1 sent no call description" in message and "check_ranks" in message


def test_check_ranks_option_and_environment(monkeypatch):
    from jointattn.distributed.agreement import ENV_VAR, ranks_check_enabled

    monkeypatch.delenv(ENV_VAR, raising=False)
    assert ranks_check_enabled(None) and ranks_check_enabled(True) and not ranks_check_enabled(False)
    monkeypatch.setenv(ENV_VAR, "0")
    assert not ranks_check_enabled(None) and ranks_check_enabled(True)
    monkeypatch.setenv(ENV_VAR, "yes")
    with pytest.raises(ValueError, match="JOINTATTN_CHECK_RANKS must be 0 or 1; got 'yes'"):
        ranks_check_enabled(None)
    with pytest.raises(TypeError, match="check_ranks must be True, False or None; got int"):
        ranks_check_enabled(1)
