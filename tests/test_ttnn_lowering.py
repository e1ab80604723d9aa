"""The ttnn lowering end to end on the CPU emulation (JOINTATTN_TTNN=emulate), against the float64 reference.

Covers: `joint_sdpa` and `ring_joint_sdpa` (2 to 4 devices) on lengths that are not multiples of any tile or
chunk, padding on both token sets (per-batch valid lengths, rows with no valid key), bfloat8_b, at tt-metal's
thresholds (PCC >= 0.994, RMSE < 0.013) and, for bfloat16, at bounds set by bfloat16 rounding of the outputs
(the emulation accumulates in float32); the exactness of the lse/padded-row packing itself in float64; errors
raised before any device call; `joint_attention(..., runtime="ttnn")` forward and backward; the config choices.
"""

import math

import pytest
import torch
from jointattn.runtime.reference import key_bias_from_lengths, reference_forward
from jointattn.runtime.registry import JointCall
from jointattn.runtime.ttnn import config, lowering
from jointattn.runtime.ttnn.module import ENV_VAR, TtnnUnavailable, load_ttnn
from jointattn.runtime.ttnn.packing import normalizer_channels, plan_ring, plan_single
from jointattn.runtime.ttnn_runtime import TtnnRuntime

import jointattn
from jointattn.testing import ttnn_emulation
from jointattn.testing.comparison import PCC_THRESHOLD, RMSE_THRESHOLD, fa_rand, pcc, rmse
from jointattn.testing.ttnn_recording import recording


@pytest.fixture(autouse=True)
def emulate(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "emulate")
    yield
    lowering.close_devices()


def _inputs(b, nh, n, l, dh, seed, dtype=torch.float32):  # noqa: E741
    g = torch.Generator().manual_seed(seed)
    return [fa_rand(b, nh, s, dh, generator=g).to(dtype) for s in (n, n, n, l, l, l)]


def _lengths(value, b):
    """None stays None (all valid); an int or a per-batch list becomes an int tensor [b]."""
    if value is None:
        return None
    return torch.tensor(value if isinstance(value, list) else [value] * b, dtype=torch.int32)


def _reference(inputs, scale, logical_n, logical_l, round_bf16=False):
    b, _, n, _ = inputs[0].shape
    l = inputs[3].shape[2]  # noqa: E741
    tensors = [x.to(torch.bfloat16).double() if round_bf16 else x.double() for x in inputs]
    bias = key_bias_from_lengths(_lengths(logical_n, b), _lengths(logical_l, b), b, n, l, "cpu")
    return reference_forward(*tensors, scale, bias)


def _check(got, inputs, scale, logical_n, logical_l, tight: bool):
    """tt-metal's PCC/RMSE against the float64 reference; `tight`: bf16-rounding bounds on bf16-rounded inputs."""
    out, joint_out, lse = got
    want = _reference(inputs, scale, logical_n, logical_l)
    for g, w in ((out, want[0]), (joint_out, want[1])):
        assert pcc(w, g) >= PCC_THRESHOLD
        assert rmse(w, g) < RMSE_THRESHOLD
    absent = torch.isinf(want[2])
    assert torch.equal(torch.isinf(lse), absent) and bool((lse[absent] < 0).all())
    # Against unrounded inputs the lse carries the inputs' rounding: relative to the score sizes (2^-8 bf16).
    torch.testing.assert_close(lse[~absent].double(), want[2][~absent], atol=0.05, rtol=0.02)
    if tight:
        exact = _reference(inputs, scale, logical_n, logical_l, round_bf16=True)
        # Each output is a bf16 value divided by a bf16 value: a few 2^-9 relative, on |out| <= max |v|.
        for g, w in ((out, exact[0]), (joint_out, exact[1])):
            torch.testing.assert_close(g.double(), w, atol=0.02, rtol=0.016)
        torch.testing.assert_close(lse[~absent].double(), exact[2][~absent], atol=0.008, rtol=0)


CASES = [
    # (b, nh, N, L, dh, logical_n, logical_l)
    pytest.param(1, 2, 15, 19, 64, None, None, id="15x19"),  # tt-metal's odd lengths
    pytest.param(1, 1, 3000, 100, 64, None, None, id="3000x100"),  # tt-metal: no multiple of any chunk
    pytest.param(2, 2, 40, 33, 32, 29, 7, id="pad-both-int"),  # padding on both sets, one length per call
    pytest.param(3, 1, 40, 33, 48, [40, 17, 0], [33, 0, 5], id="pad-per-batch"),  # three calls; empty sets
    pytest.param(2, 1, 24, 9, 64, [0, 5], [0, 9], id="no-valid-key"),  # batch 0 sees nothing: 0 and -inf
]


@pytest.mark.parametrize("b, nh, n, l, dh, logical_n, logical_l", CASES)  # noqa: E741
def test_joint_sdpa_matches_reference(b, nh, n, l, dh, logical_n, logical_l):  # noqa: E741
    inputs = _inputs(b, nh, n, l, dh, seed=n * 7 + l)
    scale = dh**-0.5
    got = lowering.joint_sdpa(
        *inputs, scale=scale, logical_n=_lengths(logical_n, b), logical_l=_lengths(logical_l, b)
    )
    assert (
        got[0].shape == (b, nh, n, dh) and got[1].shape == (b, nh, l, dh) and got[2].shape == (b, nh, n + l)
    )
    _check(got, inputs, scale, logical_n, logical_l, tight=True)


@pytest.mark.slow
def test_joint_sdpa_long_mochi_like_sequence():
    """tt-metal's (20481, 118): a spatial length one past a multiple of every chunk size. The float64 reference is
    computed for a sample of rows (every joint row, the spatial tail and 512 random spatial rows) to stay fast."""
    n, l, valid_l, scale = 20481, 118, 100, 32**-0.5  # noqa: E741
    inputs = _inputs(1, 1, n, l, 32, seed=3)
    out, joint_out, lse = lowering.joint_sdpa(*inputs, scale=scale, logical_l=valid_l)
    q, k, v, jq, jk, jv = (x.double() for x in inputs)
    rows = torch.cat(
        [torch.randperm(n - 64, generator=torch.Generator().manual_seed(0))[:512], torch.arange(n - 64, n)]
    )
    queries = torch.cat([q[:, :, rows], jq], 2)
    scores = queries @ torch.cat([k, jk[:, :, :valid_l]], 2).transpose(-1, -2) * scale
    want_out = torch.softmax(scores, -1) @ torch.cat([v, jv[:, :, :valid_l]], 2)
    got_out = torch.cat([out[:, :, rows], joint_out], 2)
    assert pcc(want_out, got_out) >= PCC_THRESHOLD and rmse(want_out, got_out) < RMSE_THRESHOLD
    got_lse = torch.cat([lse[:, :, rows], lse[:, :, n:]], 2)
    torch.testing.assert_close(got_lse.double(), torch.logsumexp(scores, -1), atol=0.05, rtol=0.02)


@pytest.mark.parametrize("ring", [2, 3, 4], ids=["ring2", "ring3", "ring4"])
@pytest.mark.parametrize(
    "b, nh, n, l, dh, logical_n, logical_l",  # noqa: E741
    [
        pytest.param(1, 2, 15, 19, 64, None, None, id="15x19"),
        pytest.param(2, 1, 130, 33, 32, [100, 130], [33, 4], id="pad-per-batch"),
        pytest.param(2, 1, 50, 9, 32, [0, 50], [9, 0], id="empty-sets"),
    ],
)
def test_ring_joint_sdpa_matches_reference(ring, b, nh, n, l, dh, logical_n, logical_l):  # noqa: E741
    inputs = _inputs(b, nh, n, l, dh, seed=ring + n)
    scale = dh**-0.5
    got = lowering.ring_joint_sdpa(
        *inputs,
        scale=scale,
        logical_n=_lengths(logical_n, b),
        logical_l=_lengths(logical_l, b),
        ring_size=ring,
    )
    _check(got, inputs, scale, logical_n, logical_l, tight=True)


@pytest.mark.parametrize("ring", [1, 2], ids=["device", "ring2"])
def test_bfloat8_b_meets_tt_metal_thresholds(ring):
    inputs = _inputs(2, 2, 70, 21, 64, seed=8)
    with config.overrides(dtype="bfloat8_b"), recording() as calls:
        if ring == 1:
            got = lowering.joint_sdpa(*inputs, scale=0.125, logical_n=60)
        else:
            got = lowering.ring_joint_sdpa(*inputs, scale=0.125, logical_n=60, ring_size=ring)
    uploads = [c for c in calls if c.name == "from_torch"]
    assert uploads and all(c.kwargs["dtype"] == load_ttnn().bfloat8_b for c in uploads)
    _check(got, inputs, 0.125, 60, None, tight=False)


def test_op_inputs_keep_their_dtype_in_the_outputs():
    inputs = _inputs(1, 1, 33, 5, 32, seed=2, dtype=torch.float16)
    out, joint_out, lse = lowering.joint_sdpa(*inputs, scale=0.2)
    assert out.dtype == joint_out.dtype == torch.float16 and lse.dtype == torch.float32


# --- the packing on its own, exactly (float64, no ttnn) ----------------------------------------------------------


def _exact_slot_attention(plan, ring: bool):
    """What an exact joint SDPA computes on the plan's slots (valid keys only), in float64."""
    q = torch.cat([plan.spatial[0], plan.joint[0]], 2).double()
    k = torch.cat([plan.spatial[1], plan.joint[1]], 2).double()
    v = torch.cat([plan.spatial[2], plan.joint[2]], 2).double()
    n_slot = plan.spatial[0].shape[2]
    exists = torch.ones(k.shape[2], dtype=torch.bool)
    if ring:
        exists[plan.logical_n : n_slot] = False
        exists[n_slot + plan.logical_l :] = False
    scores = (q @ k.transpose(-1, -2)).masked_fill(~exists, -math.inf) * 0.3
    out = torch.softmax(scores, -1) @ v
    return out[:, :, :n_slot], out[:, :, n_slot:]


@pytest.mark.parametrize("ring", [False, True], ids=["single", "ring"])
@pytest.mark.parametrize("block_float", [False, True], ids=["bf16-channels", "bfp8-channels"])
@pytest.mark.parametrize("n_valid, l_valid", [(11, 6), (0, 6), (11, 0), (13, 9), (0, 0)])
def test_packing_recovers_out_lse_and_padded_rows_exactly(ring, block_float, n_valid, l_valid):
    torch.manual_seed(n_valid * 10 + l_valid)
    q, k, v = (torch.randn(2, 3, 13, 40).to(torch.bfloat16) for _ in range(3))
    jq, jk, jv = (torch.randn(2, 3, 9, 40).to(torch.bfloat16) for _ in range(3))
    if n_valid + l_valid == 0:
        with pytest.raises(ValueError, match="needs at least one valid key"):
            plan_single(q, k, v, jq, jk, jv, 0, 0, normalizer_channels(40), 0.3)
        return
    ch = normalizer_channels(40, block_float)
    assert (
        ch.width % 32 == 0
        and ch.a >= 40
        and ch.b < ch.width
        and (not block_float or ch.b // 16 != ch.a // 16)
    )
    plan = (
        plan_ring(q, k, v, jq, jk, jv, n_valid, l_valid, ch, 0.3, 3)
        if ring
        else plan_single(q, k, v, jq, jk, jv, n_valid, l_valid, ch, 0.3)
    )
    out, joint_out, lse = plan.decode(_exact_slot_attention(plan, ring), 13, 9)
    bias = key_bias_from_lengths(torch.tensor([n_valid] * 2), torch.tensor([l_valid] * 2), 2, 13, 9, "cpu")
    want = reference_forward(*(x.double() for x in (q, k, v, jq, jk, jv)), 0.3, bias)
    torch.testing.assert_close(out.double(), want[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(joint_out.double(), want[1], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(lse.double(), want[2], atol=1e-6, rtol=1e-6)


# --- errors before any device call -----------------------------------------------------------------------------


def _good():
    return _inputs(1, 2, 20, 7, 32, seed=0)


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(joint_strategy="front"), ValueError, "joint_strategy must be 'rear'"),
        (dict(dtype=True), TypeError, "joint_v must have dtype torch.float32 like q"),
        (dict(gqa=True), ValueError, r"k must have shape \[b=1, nh=2, N=20, dh=32\]"),
        (dict(head_dim=True), ValueError, r"joint_k must have shape \[b=1, nh=2, L=7, dh=32\]"),
        (dict(q_chunk_size=48), ValueError, "q_chunk_size must be a positive multiple of 32"),
        (dict(k_chunk_size=0), ValueError, "k_chunk_size must be a positive multiple of 32"),
        (dict(scale=-0.1), ValueError, "scale must be a finite float > 0"),
        (dict(logical_n=21), ValueError, r"logical_n must be None, an int in \[0, N=20\]"),
        (dict(meta=True), ValueError, "must be CPU tensors"),
        (dict(ring_size=1), ValueError, "ring_size must be an int >= 2"),
    ],
)
def test_bad_calls_fail_before_any_ttnn_call(change, error, message):
    inputs = _good()
    kwargs = dict(scale=0.2)
    fn = lowering.joint_sdpa
    for key, value in change.items():
        if key == "dtype":
            inputs[5] = inputs[5].double()
        elif key == "gqa":
            inputs[1] = inputs[1][:, :1]
        elif key == "head_dim":
            inputs[4] = torch.randn(1, 2, 7, 16)
        elif key == "meta":
            inputs = [x.to("meta") for x in inputs]
        elif key == "ring_size":
            fn = lowering.ring_joint_sdpa
            kwargs[key] = value
        else:
            kwargs[key] = value
    with recording() as calls, pytest.raises(error, match=message):
        fn(*inputs, **kwargs)
    assert calls == []


def test_without_the_variable_ttnn_must_import(monkeypatch):
    monkeypatch.delenv(ENV_VAR)
    try:
        import ttnn  # noqa: F401
    except ImportError:
        with pytest.raises(
            TtnnUnavailable, match=r"ttnn not importable on CPython \d+\.\d+.*JOINTATTN_TTNN=emulate"
        ):
            lowering.joint_sdpa(*_good(), scale=0.2)
        call = _call(_good())
        assert "ttnn not importable" in TtnnRuntime().unsupported(call)
    else:
        assert load_ttnn().__name__ == "ttnn"  # the real module, never the emulation


def test_an_unknown_variable_value_is_an_error(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "yes")
    with pytest.raises(
        ValueError,
        match=r"JOINTATTN_TTNN must be unset or 'emulate' \(the CPU emulation of ttnn\); got 'yes'",
    ):
        load_ttnn()


def test_the_lowering_calls_the_module_itself_and_a_recorder_only_inside_its_block():
    assert load_ttnn() is ttnn_emulation  # no proxy in the product's path
    lowering.joint_sdpa(*_good(), scale=0.2)  # opens the device outside any block
    with recording() as outer:
        with recording() as inner:
            assert load_ttnn() is not ttnn_emulation
            lowering.joint_sdpa(*_good(), scale=0.2)
        assert load_ttnn() is not ttnn_emulation  # the outer block still records
    assert load_ttnn() is ttnn_emulation
    names = [c.name for c in outer]
    assert outer == inner and "transformer.joint_scaled_dot_product_attention" in names
    # The device was opened before the block; its methods are still seen (called through their class).
    assert "MeshDevice.compute_with_storage_grid_size" in names and "open_device" not in names


# --- the runtime inside joint_attention ---------------------------------------------------------------------------


def _call(inputs, scale=0.2, logical_n=None, logical_l=None):
    return JointCall(*inputs, scale, logical_n, logical_l)


@pytest.mark.parametrize("ring", [1, 2], ids=["device", "ring2"])
def test_joint_attention_runtime_ttnn_forward_and_backward(ring):
    inputs = [x.requires_grad_() for x in _inputs(2, 2, 37, 11, 32, seed=5)]
    lengths = dict(logical_n=torch.tensor([37, 30]), logical_l=6)
    with config.overrides(ring_size=ring), recording() as calls:
        got = jointattn.joint_attention(*inputs, runtime="ttnn", **lengths)
    op = (
        "transformer.ring_joint_scaled_dot_product_attention"
        if ring > 1
        else "transformer.joint_scaled_dot_product_attention"
    )
    assert sum(c.name == op for c in calls) == 2  # two distinct (N, L) pairs in the batch
    want = jointattn.joint_attention(*inputs, runtime="reference", **lengths)
    _check([x.detach() for x in got], [x.detach() for x in inputs], 32**-0.5, [37, 30], 6, tight=True)
    grads = torch.autograd.grad(
        sum(x.float().sum() for x in got[:2]) + got[2][torch.isfinite(got[2])].sum(), inputs
    )
    want_grads = torch.autograd.grad(
        sum(x.float().sum() for x in want[:2]) + want[2][torch.isfinite(want[2])].sum(), inputs
    )
    # The backward is the exact reference on the host, from the same inputs: equal up to float32 order.
    for g, w in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


def test_runtime_refuses_what_ttnn_cannot_run():
    runtime = TtnnRuntime()
    assert runtime.unsupported(_call(_good())) is None
    meta = [x.to("meta") for x in _good()]
    assert "takes CPU tensors" in runtime.unsupported(_call(meta))
    assert "scale" in runtime.unsupported(_call(_good(), scale=-1.0))
    with config.overrides(ring_size=9):
        assert "8 Tenstorrent device(s)" in runtime.unsupported(_call(_good()))


# --- config -------------------------------------------------------------------------------------------------------


def test_chunk_choice_reproduces_tt_metal_mochi_config_and_stays_in_l1():
    # The cost model on the problem tt-metal's Mochi runs (dh 128, 24 heads, 8x8 grid) picks its q256/k512.
    assert config.choose_chunks(44520, 118, 128, nh=24) == (256, 512)
    # The lowering's own problem has two more value channels (dh 160): q256/k512 would overflow L1.
    assert config.l1_bytes(256, 512, 160) > config.L1_BUDGET_BYTES >= config.l1_bytes(256, 512, 128)
    assert config.l1_bytes(512, 512, 128) > config.L1_BUDGET_BYTES  # tt-metal's own "OOM config"
    q, k = config.sdpa_chunk_sizes(44520, 118, 128, nh=24)
    assert config.l1_bytes(q, k, 160) <= config.L1_BUDGET_BYTES
    for n, l in [(15, 19), (3000, 100), (20481, 118), (4096, 333)]:  # noqa: E741
        q, k = config.sdpa_chunk_sizes(n, l, 64)
        assert q % 32 == 0 and k % 32 == 0 and q <= 256 and k <= 512
    assert config.sdpa_chunk_sizes(15, 19, 64) == (32, 32)  # short sets: small chunks waste no padding


def test_chunk_overrides_reach_the_program_config():
    with recording() as calls:
        lowering.joint_sdpa(*_good(), scale=0.2, q_chunk_size=64, k_chunk_size=96)
    (pc,) = [c for c in calls if c.name == "SDPAProgramConfig"]
    assert (pc.kwargs["q_chunk_size"], pc.kwargs["k_chunk_size"]) == (64, 96)
    with config.overrides(q_chunk_size=128), recording() as calls:
        lowering.joint_sdpa(*_good(), scale=0.2)
        assert config.sdpa_chunk_sizes(20, 7, 32)[0] == 128
    (pc,) = [c for c in calls if c.name == "SDPAProgramConfig"]
    assert pc.kwargs["q_chunk_size"] == 128
    with pytest.raises(ValueError, match="dtype must be one of"):
        config.overrides(dtype="float32").__enter__()
