"""The TT-Lang joint-attention kernel on tt-lang-sim, through the op (`runtime="ttlang"`, `JOINTATTN_TTLANG=sim`).

Ground truth is the unfused graph in float64 (`helpers.unfused_float64`: cat -> masked SDPA -> slice, plus lse).
float32 inputs are held to tight bounds; bfloat16 inputs to tt-metal's own acceptance test of its joint SDPA
(PCC >= 0.994, RMSE < 0.013). The simulator computes in float32 whatever the declared dtype (its default
float32 promotion), so the bfloat16 cases check the kernel on bfloat16-rounded inputs, not the device's bfloat16
arithmetic.

The simulator runs in one worker process per test process (`runtime/ttlang/simulator.py`).
"""

import pytest
import torch
from helpers import joint_inputs, unfused_float64, with_padding_poisoned
from jointattn.kernels.ttlang.schedule import (
    JOINT,
    SPATIAL,
    check_l1,
    key_pieces,
    l1_bytes,
    plan_joint_attention,
    tiles,
)
from jointattn.runtime.dispatch import PATHS
from jointattn.runtime.ttlang import backend, config, lowering

import jointattn
from jointattn.testing.comparison import PCC_THRESHOLD, RMSE_THRESHOLD, pcc, rmse

pytestmark = pytest.mark.skipif(
    backend.simulator_missing() is not None,
    reason=f"tt-lang-sim unavailable: {backend.simulator_missing()}",
)


@pytest.fixture(autouse=True)
def _simulated(monkeypatch):
    monkeypatch.setenv(backend.ENV_VAR, backend.SIM)


def lengths(values):
    return None if values is None else torch.tensor(values)


def run_ttlang_case(
    b,
    nh,
    n,
    l,  # noqa: E741
    dh,
    logical_n,
    logical_l,
    *,
    dtype=torch.float32,
    chunks=(None, None),
    grid=(8, 8),
    seed=0,
):
    inputs = joint_inputs(b, nh, n, l, dh, seed=seed)
    ln, ll = lengths(logical_n), lengths(logical_l)
    want = unfused_float64(*inputs, logical_n=ln, logical_l=ll)
    with config.overrides(q_chunk=chunks[0], k_chunk=chunks[1], grid=grid):
        got = jointattn.joint_attention(
            *(t.to(dtype) for t in inputs), logical_n=ln, logical_l=ll, runtime="ttlang"
        )
    return got, want


def assert_close_fp32(got, want):
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        assert torch.equal(torch.isneginf(g), torch.isneginf(w))  # rows that see no key: lse -inf
        torch.testing.assert_close(g.double(), w, rtol=2e-5, atol=2e-6)


# (b, nh, N, L, dh, logical_n, logical_l, (q_chunk, k_chunk) tiles, grid)
CASES = [
    (1, 1, 1, 1, 32, None, None, (1, 1), (1, 1)),  # one token each
    (2, 2, 15, 19, 40, [15, 7], [19, 3], (1, 1), (2, 2)),  # tt-metal's odd lengths, padding on both sets
    (2, 3, 100, 19, 64, [100, 37], [19, 5], (3, 5), (2, 3)),  # chunks that divide nothing
    (1, 2, 300, 77, 64, [250], [70], (4, 3), (1, 1)),  # one core, tails of both sets
    (3, 1, 65, 33, 16, [64, 0, 33], [0, 1, 33], (2, 4), (4, 4)),  # a batch seeing one set only
    (2, 1, 40, 7, 24, [0, 40], [0, 7], (1, 2), (1, 3)),  # batch 0 sees no key: out 0, lse -inf
    (1, 1, 0, 19, 32, None, None, (2, 2), (1, 2)),  # no spatial tokens
    (2, 1, 100, 0, 32, [99, 1], None, (2, 2), (1, 2)),  # no joint tokens
    (1, 1, 130, 19, 128, [129], [18], (None, None), (8, 8)),  # chunk sizes the runtime chooses
]
IDS = ["1x1", "15x19", "100x19", "300x77-1core", "one-set", "no-key", "N0", "L0", "chosen"]


@pytest.mark.parametrize(
    ("b", "nh", "n", "l", "dh", "logical_n", "logical_l", "chunks", "grid"), CASES, ids=IDS
)
def test_float32_matches_float64(b, nh, n, l, dh, logical_n, logical_l, chunks, grid):  # noqa: E741
    got, want = run_ttlang_case(b, nh, n, l, dh, logical_n, logical_l, chunks=chunks, grid=grid, seed=n + l)
    assert_close_fp32(got, want)


def test_long_sequence_matches_float64():
    """N = 3001 (94 tiles, the last one partly valid), several chunks per set, 16 cores."""
    got, want = run_ttlang_case(1, 1, 3001, 77, 64, [2990], [70], chunks=(4, 5), grid=(4, 4), seed=3)
    assert_close_fp32(got, want)


@pytest.mark.parametrize(
    ("b", "nh", "n", "l", "dh", "logical_n", "logical_l", "chunks"),
    [(2, 2, 100, 19, 64, [100, 61], [19, 4], (2, 3)), (1, 2, 257, 33, 128, [250], [33], (4, 2))],
    ids=["100x19", "257x33"],
)
def test_bfloat16_meets_tt_metal_thresholds(b, nh, n, l, dh, logical_n, logical_l, chunks):  # noqa: E741
    got, want = run_ttlang_case(
        b, nh, n, l, dh, logical_n, logical_l, dtype=torch.bfloat16, chunks=chunks, seed=7
    )
    for g, w in zip(got[:2], want[:2]):
        assert g.dtype == torch.bfloat16
        assert pcc(w, g) >= PCC_THRESHOLD and rmse(w, g) < RMSE_THRESHOLD, (pcc(w, g), rmse(w, g))
    torch.testing.assert_close(got[2].double(), want[2], rtol=0, atol=0.05)  # lse from bfloat16 inputs


def test_nan_and_inf_in_padded_keys_never_reach_a_result():
    b, nh, n, l, dh = 2, 2, 70, 19, 32  # noqa: E741
    ln, ll = torch.tensor([45, 70]), torch.tensor([5, 0])
    q, k, v, jq, jk, jv = joint_inputs(b, nh, n, l, dh, seed=11)
    want = unfused_float64(q, k, v, jq, jk, jv, logical_n=ln, logical_l=ll)
    poisoned = [with_padding_poisoned(t, lens) for t, lens in ((k, ln), (v, ln), (jk, ll), (jv, ll))]
    with config.overrides(q_chunk=2, k_chunk=2):
        got = jointattn.joint_attention(
            q,
            poisoned[0],
            poisoned[1],
            jq,
            poisoned[2],
            poisoned[3],
            logical_n=ln,
            logical_l=ll,
            runtime="ttlang",
        )
    assert_close_fp32(got, want)


@pytest.mark.parametrize(
    ("ring", "b", "nh", "n", "l", "dh", "logical_n", "logical_l", "chunks"),
    [
        (2, 1, 2, 100, 19, 32, [90], [19], (2, 1)),
        (
            3,
            2,
            1,
            101,
            33,
            40,
            [101, 20],
            [7, 33],
            (1, 3),
        ),  # N not divisible by 3; batch 1's keys on device 0
        (4, 2, 1, 130, 5, 64, [130, 0], [5, 0], (2, 2)),  # batch 1 sees no key on any device
    ],
    ids=["ring2", "ring3", "ring4"],
)
def test_ring_matches_float64(ring, b, nh, n, l, dh, logical_n, logical_l, chunks):  # noqa: E741
    with config.overrides(ring_size=ring):
        got, want = run_ttlang_case(b, nh, n, l, dh, logical_n, logical_l, chunks=chunks, seed=ring)
    assert_close_fp32(got, want)


def test_ring_joint_out_agrees_on_every_device():
    q, k, v, jq, jk, jv = joint_inputs(1, 2, 90, 19, 32, seed=5)
    with config.overrides(ring_size=3, q_chunk=1, k_chunk=2):
        outs = lowering.ring_joint_outputs(
            q, k, v, jq, jk, jv, scale=0.2, logical_n=torch.tensor([80]), logical_l=None
        )
    want = unfused_float64(q, k, v, jq, jk, jv, scale=0.2, logical_n=torch.tensor([80]))[1]
    assert len(outs) == 3
    for out in outs:
        torch.testing.assert_close(out.double(), want, rtol=2e-5, atol=2e-6)


def test_backward_is_the_reference_backward():
    inputs = joint_inputs(1, 2, 40, 9, 32, seed=2, requires_grad=True)
    ln, ll = torch.tensor([33]), torch.tensor([6])
    grads = {}
    for runtime in ("ttlang", "reference"):
        out, joint_out, lse = jointattn.joint_attention(*inputs, logical_n=ln, logical_l=ll, runtime=runtime)
        grads[runtime] = torch.autograd.grad((out.sum() + 2 * joint_out.sum() + lse.sum()), inputs)
    for a, r in zip(grads["ttlang"], grads["reference"]):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5)


def test_the_simulator_leaves_this_process_dtypes_alone():
    """tt-lang-sim rebinds torch.bfloat16 to float32 where it is imported: only in its worker process."""
    run_ttlang_case(1, 1, 5, 3, 32, None, None)
    assert torch.bfloat16 is not torch.float32 and torch.ones(1, dtype=torch.bfloat16).element_size() == 2


# --- what needs no simulator: the plan, the runtime's refusals --------------------------------------------------


@pytest.mark.parametrize("valid", [0, 1, 31, 32, 33, 95, 96, 321])
@pytest.mark.parametrize("k_chunk", [1, 3, 4, 8])
def test_key_pieces_read_exactly_the_valid_tiles(valid, k_chunk):
    pieces = key_pieces(0, valid, k_chunk)
    covered = [t for p in pieces for t in range(p.start, p.start + p.count)]
    assert covered == list(range(-(-valid // 32)))  # every valid tile once, in order, none past the length
    assert all(p.count in (k_chunk, 1) for p in pieces)  # two key block shapes: a chunk and a tile
    boundary = [p for p in pieces if p.valid_rows < 32]
    assert [(p.count, p.valid_rows) for p in boundary] == ([(1, valid % 32)] if valid % 32 else [])


@pytest.mark.parametrize(
    ("n", "l", "q_chunk"), [(100, 19, 3), (41 * 32, 7 * 32, 5), (64, 64, 2), (0, 19, 2), (5, 0, 4)]
)
@pytest.mark.parametrize("grid", [(1, 1), (2, 3), (8, 8)])
def test_launches_cover_every_query_chunk_once_over_the_cores(n, l, q_chunk, grid):  # noqa: E741
    b, nh = 2, 3
    plan = plan_joint_attention(b, nh, n, l, 64, valid_n=37, valid_l=5, q_chunk=q_chunk, k_chunk=2, grid=grid)
    rows = {SPATIAL: [], JOINT: []}
    for launch in plan.launches:
        assert launch.q_tiles <= q_chunk and launch.cores == grid[0] * grid[1]
        assert launch.items_per_core * launch.cores >= launch.items
        for core in range(launch.cores):
            for token_set, _, row in launch.core_items(core):
                rows[token_set] += range(row, row + launch.q_tiles)
    for token_set, size in ((SPATIAL, n), (JOINT, l)):  # every query tile of every (batch, head) exactly once
        assert sorted(rows[token_set]) == list(range(b * nh * tiles(size)))
    # One launch per query chunk shape: the whole chunks, then each distinct tail.
    shapes = [launch.q_tiles for launch in plan.launches]
    assert len(shapes) == len(set(shapes))


def test_a_group_without_valid_keys_runs_nothing_and_the_ring_carries():
    assert (
        plan_joint_attention(
            1, 1, 64, 7, 32, valid_n=0, valid_l=0, q_chunk=1, k_chunk=1, grid=(1, 1)
        ).launches
        == ()
    )
    launch = plan_joint_attention(
        1, 1, 300, 70, 32, valid_n=250, valid_l=70, q_chunk=4, k_chunk=3, grid=(1, 1), carry=True
    ).launches[0]
    # spatial 250 rows: 7 whole tiles = 2 chunks of 3 + 1 tile, boundary of 26 rows; joint 70: 2 tiles + 6 rows
    assert (launch.full_n, launch.singles_n, launch.edge_n) == (2, 1, 26)
    assert (launch.full_l, launch.singles_l, launch.edge_l) == (0, 2, 6)
    assert launch.carry


def test_chunk_sizes_that_overflow_l1_are_refused():
    check_l1(4, 8, 64, "bfloat16")
    with pytest.raises(ValueError, match=r"q_chunk=8, k_chunk=16 need \d+ KiB of dataflow buffers per core"):
        check_l1(8, 16, 128, "float32")


# "total circular buffer allocation (N bytes)" that tt-lang 1.1.1 reported for the kernel (bfloat16; float32 is
# twice that), compiling with a tiny L1 budget (kernels/ttlang/compile_check.py's setup, 2026-12-02).
COMPILER_L1_BYTES = {
    (1, 1, 32): 81920,
    (2, 3, 64): 260096,
    (3, 5, 64): 411648,
    (4, 4, 64): 456704,
    (2, 16, 128): 1177600,
    (4, 8, 128): 989184,
    (8, 4, 128): 1202176,
    (1, 16, 64): 555008,
    (8, 1, 32): 440320,
}


@pytest.mark.parametrize(("q_chunk", "k_chunk", "dh"), sorted(COMPILER_L1_BYTES))
def test_l1_estimate_is_what_the_compiler_allocates(q_chunk, k_chunk, dh):
    bf16 = COMPILER_L1_BYTES[(q_chunk, k_chunk, dh)]
    assert l1_bytes(q_chunk, k_chunk, tiles(dh), "bfloat16") == bf16
    assert l1_bytes(q_chunk, k_chunk, tiles(dh), "float32") == 2 * bf16


def test_chosen_chunks_always_fit_a_core():
    for n, l, dh in [(1, 1, 32), (100, 19, 64), (4096, 333, 64), (44520, 256, 128), (3001, 77, 256)]:  # noqa: E741
        for dtype in ("bfloat16", "float32"):
            q_chunk, k_chunk = config.chunk_sizes(n, l, dh, b=1, nh=24, dtype=dtype)
            assert l1_bytes(q_chunk, k_chunk, -(-dh // 32), dtype) <= config.L1_BYTES


def test_without_the_variable_the_compiler_and_a_device_are_required(monkeypatch):
    monkeypatch.delenv(backend.ENV_VAR)
    inputs = joint_inputs(1, 1, 5, 3, 32)
    with pytest.raises(ValueError, match=r"runtime='ttlang' cannot run this call: .*JOINTATTN_TTLANG=sim"):
        jointattn.joint_attention(*inputs, runtime="ttlang")


def test_an_unknown_variable_value_is_an_error(monkeypatch):
    monkeypatch.setenv(backend.ENV_VAR, "emulate")
    with pytest.raises(ValueError, match="JOINTATTN_TTLANG must be unset or 'sim'"):
        jointattn.joint_attention(*joint_inputs(1, 1, 5, 3, 32), runtime="ttlang")


def test_auto_never_picks_ttlang():
    assert "ttlang" not in PATHS  # the paths "auto" chooses among


@pytest.mark.parametrize("change", [{"q_chunk": 0}, {"k_chunk": 1.5}, {"grid": (0, 8)}, {"ring_size": 0}])
def test_bad_settings_are_refused(change):
    with pytest.raises(ValueError, match="ttlang settings"):
        config.set_defaults(**change)


def test_backend_option_runs_the_fused_attention_on_ttlang(monkeypatch):
    """`options={"runtime": "ttlang"}`: the fused op of a compiled module runs the TT-Lang kernel."""
    import torch.nn.functional as F
    from jointattn.runtime import ttlang_runtime

    class Joint(torch.nn.Module):
        def forward(self, q, k, v, jq, jk, jv):
            o = F.scaled_dot_product_attention(
                torch.cat([q, jq], 2), torch.cat([k, jk], 2), torch.cat([v, jv], 2)
            )
            return o[:, :, : q.shape[2]], o[:, :, q.shape[2] :]

    calls = []
    real = ttlang_runtime.TtlangRuntime.forward
    monkeypatch.setattr(ttlang_runtime.TtlangRuntime, "forward", lambda *a: calls.append(1) or real(*a))
    inputs = joint_inputs(1, 2, 37, 5, 32, seed=4)
    compiled = torch.compile(Joint(), backend="jointattn", options={"runtime": "ttlang", "inner": "eager"})
    got = compiled(*inputs)
    assert calls == [1]
    want = unfused_float64(*inputs)
    for g, w in zip(got, want[:2]):
        torch.testing.assert_close(g.double(), w, rtol=2e-5, atol=2e-6)


def test_a_failure_in_the_simulator_comes_back_with_its_traceback():
    from jointattn.runtime.ttlang.simulator import simulate

    with pytest.raises(RuntimeError, match=r"(?s)failed in tt-lang-sim.*unknown request kind 'nope'"):
        simulate({"kind": "nope"})
    run_ttlang_case(1, 1, 5, 3, 32, None, None)  # the worker is still up for the next call


def test_chunk_overrides_that_overflow_a_core_are_refused_before_running():
    inputs = joint_inputs(1, 1, 127 * 32 + 5, 7 * 32, 32)
    with (
        config.overrides(q_chunk=5, k_chunk=64),
        pytest.raises(
            ValueError,
            match=r"runtime='ttlang' cannot run this call: .*q_chunk=5, k_chunk=64 need \d+ KiB of dataflow buffers",
        ),
    ):
        jointattn.joint_attention(*inputs, runtime="ttlang")
