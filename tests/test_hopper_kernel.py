"""The Gluon Hopper forward kernel (`kernels/joint_attention_fwd_hopper.py`).

Gluon has no CPU interpreter, so the suite has two halves:
- Everywhere (CI included): the kernel compiled offline for sm_90a with the wheel's own ptxas. Asserts the
  properties its speed rests on, each of which an innocent-looking edit can lose: registers raised to the
  config's budget with no spills (dh 256: at most 16 bytes), shared memory within Hopper's 227 KB, and the softmax scheduled between the
  two wgmma waits (the overlap); and that every config's PTX is the one recorded in
  `hopper_fwd_fingerprints.json` (a refactor must not change the generated code unseen). Plus the launcher's envelope (what it refuses, and why) and `launch_forward`'s
  choice between the Hopper and the Triton kernel.
- On a CUDA device of compute capability 9.x (`gpu` marker): outputs against a float64 cat -> masked softmax
  -> slice reference, on fresh random inputs, lengths that are not multiples of the 128-row tiles, padding on
  both token sets (different per batch element), padded rows holding NaN/inf, int32/int64/int/out-of-range
  lengths, empty sets, rows with no valid key, strided layouts, and outputs that are slices of one buffer (lse:
  nothing written past its end).
  Tolerance: relative error 1e-2 in bf16 / 5e-3 in fp16 (both products take 16-bit operands), lse absolute
  2e-3. Outputs are poisoned with NaN first, so an unwritten element fails.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch
from helpers import unfused_float64, with_padding_poisoned
from jointattn.kernels.configs import SHARED_MEMORY_BYTES, LaunchConfig, hopper_forward_config
from jointattn.runtime import triton_runtime
from jointattn.runtime.call import JointCall
from jointattn.runtime.hopper_launch import hopper_unsupported
from jointattn.runtime.triton_runtime import launch_forward

HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9


def _offline_build(what) -> dict:
    """`hopper_build_report.py` in a fresh interpreter: this session sets TRITON_INTERPRET=1 (conftest), which
    turns Triton's own library helpers (the combine function of `gl.max`, ...) into interpreter objects that a
    real compile rejects."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = pathlib.Path(__file__).with_name("hopper_build_report.py")
    run = subprocess.run([sys.executable, str(script), str(what)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


def test_offline_build_keeps_its_fingerprints():
    """Every config (dh 64/128 x bf16/fp16; dh 128 with its integer arguments equal to 1, which Triton turns
    into constexprs) compiles for sm_90a to the PTX recorded in
    `hopper_fwd_fingerprints.json` (debug locations aside), so a refactor of the kernel that changes its code
    does not go unseen. An intended change: check speed and the schedule test below, then rewrite the file
    with `python tests/hopper_build_report.py fingerprints --write`."""
    expected = json.loads(pathlib.Path(__file__).with_name("hopper_fwd_fingerprints.json").read_text())
    found = _offline_build("fingerprints")
    assert found["triton"] == expected["triton"], (
        f"fingerprints recorded with Triton {expected['triton']}, this is {found['triton']}: regenerate them"
    )
    for config, want in expected["configs"].items():
        got = found["configs"][config]
        assert got["spill_free"] and got["shared"] <= SHARED_MEMORY_BYTES, (config, got)
        assert got == want, f"{config}: generated code changed: {got} != {want}"


# Bytes of spill stores each config's offline build may have: dh 256's O accumulator (64 x 256 floats, 128
# registers a thread) leaves ptxas 16 bytes short.
SPILL_STORES = {64: 0, 128: 0, 256: 16}


@pytest.mark.parametrize("dh", [64, 128, 256])
def test_offline_build_keeps_the_schedule(dh):
    config = hopper_forward_config(dh)
    build = _offline_build(dh)
    assert build["raised_regs"].get(str(config.consumer_regs)) == 2, f"consumers not raised: {build}"
    assert build["num_warps"] == 12  # producer warpgroup + two consumer warpgroups
    assert build["shared"] <= SHARED_MEMORY_BYTES
    stores = re.search(r"(\d+) bytes spill stores", build["ptxas"])
    assert int(stores.group(1)) <= SPILL_STORES[dh], build["ptxas"]
    # The overlap, in the machine code ptxas produced (it hoists waits when it can): in each consumer the
    # softmax's exp2s (one per score a thread holds: 64 x BLOCK_N / 128 threads, plus the rescale factors) sit
    # between the wait for S_j and the wait for P V.
    inside = build["exp2_between_waits"]
    assert len(inside) == 2 and min(inside) >= config.block_m * config.block_n // 128, inside


def test_envelope_refuses_with_reasons(monkeypatch):
    q = torch.zeros(1, 1, 8, 64)
    reason = hopper_unsupported((q,) * 8, 0.125)
    assert reason is not None and "CUDA" in reason
    monkeypatch.setenv("JOINTATTN_HOPPER_KERNEL", "0")
    assert hopper_unsupported((q,) * 8, 0.125) == "JOINTATTN_HOPPER_KERNEL=0"
    assert hopper_forward_config(64) and hopper_forward_config(128) and hopper_forward_config(256)
    assert hopper_forward_config(96) is None and hopper_forward_config(32) is None


@pytest.fixture
def hopper_everywhere(monkeypatch):
    """`launch_forward` with the dispatcher's Hopper envelope answering "supported", no measurements (the
    defaults decide) and the Hopper launcher replaced by a recorder (so it runs on any device): returns the list
    of calls it received."""
    from jointattn.runtime import dispatch

    calls = []
    monkeypatch.setitem(dispatch._UNSUPPORTED, "hopper", lambda problem: None)
    monkeypatch.setattr(dispatch, "_table", lambda: {})
    monkeypatch.setattr(triton_runtime, "launch_forward_hopper", lambda *args: calls.append(args))
    dispatch.reload_measurements()  # cached choices were made under the real limits
    yield calls
    dispatch.reload_measurements()


def _dispatch(dh, **knobs):
    device = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: the Triton kernel runs in the interpreter
    q, k, v, jq, jk, jv = (torch.randn(1, 2, s, dh, device=device) for s in (37, 37, 37, 7, 7, 7))
    out, joint_out, lse = torch.empty_like(q), torch.empty_like(jq), torch.empty(1, 2, 44, device=device)
    launch_forward(JointCall.of(q, k, v, jq, jk, jv, 0.125, 30, None), out, joint_out, lse, **knobs)


def test_dispatch_picks_hopper_only_where_it_is_the_default(hopper_everywhere):
    _dispatch(128)
    assert len(hopper_everywhere) == 1
    n, l, logical_n = *hopper_everywhere[0][4:6], hopper_everywhere[0][0].logical_n  # noqa: E741
    assert (n, l) == (37, 7) and logical_n.tolist() == [30]
    _dispatch(64)  # dh 64: the Triton kernel is the faster one (it runs here in the interpreter)
    _dispatch(128, hopper=False)
    _dispatch(128, config=LaunchConfig(16, 16, 4, 1))
    _dispatch(128, use_tma=False)
    assert len(hopper_everywhere) == 1
    _dispatch(64, hopper=True)  # asked for: runs at dh 64 too
    assert len(hopper_everywhere) == 2


def test_dispatch_insisting_on_hopper_with_a_triton_knob_raises(hopper_everywhere):
    with pytest.raises(ValueError, match="hopper=True takes no Triton knob"):
        _dispatch(128, hopper=True, config=LaunchConfig(16, 16, 4, 1))


# (b, nh, N, L, dh, logical_n, logical_l)
CASES = {
    "flux_like_tail": (1, 3, 300, 77, 128, None, None),
    "pad_both_per_batch": (3, 2, 333, 150, 128, [333, 129, 1], [150, 0, 77]),
    "boundary_on_block": (2, 2, 512, 256, 128, [256, 384], [128, 255]),
    "dh64_sd3_like": (2, 3, 259, 154, 64, [259, 200], [154, 100]),
    "n_empty": (2, 2, 0, 200, 128, None, [200, 3]),
    "l_empty": (1, 2, 200, 0, 64, [150], None),
    "no_valid_key": (2, 1, 130, 40, 128, [0, 130], [0, 40]),
    "dh64_no_valid_key": (2, 1, 130, 40, 64, [0, 130], [0, 40]),
    "short": (1, 1, 5, 3, 64, None, None),
    "int_length_out_of_range": (2, 2, 300, 90, 128, 250, [-3, 999]),  # an int, then clamped tensor values
    "long_padded": (1, 2, 2000, 300, 128, [1777], [101]),  # 18 key blocks
    "dh256_tail": (1, 3, 300, 77, 256, None, None),
    "dh256_pad_both": (3, 2, 333, 150, 256, [333, 129, 1], [150, 0, 77]),
    "dh256_no_valid_key": (2, 1, 130, 40, 256, [0, 130], [0, 40]),
}


def _inputs(case, dtype, layout, seed):
    b, nh, n, l, dh, logical_n, logical_l = CASES[case]  # noqa: E741
    gen = torch.Generator().manual_seed(seed)

    def make(s):
        if layout == "bshd":  # [b, S, nh, dh] memory, the model layout
            t = torch.randn(b, s, nh, dh, generator=gen).transpose(1, 2)
        elif layout == "wide_rows":  # rows 16-byte aligned but wider than dh: TMA strides, not a view of dh
            t = torch.randn(b, nh, s, dh + 8, generator=gen)[..., :dh]
        else:
            t = torch.randn(b, nh, s, dh, generator=gen)
        return t.to("cuda", dtype)

    def lengths(value):  # int64 for odd batch sizes, int32 otherwise (both reach the kernels)
        dtype = torch.int64 if b % 2 else torch.int32
        return torch.tensor(value, device="cuda", dtype=dtype) if isinstance(value, list) else value

    return tuple(make(s) for s in (n, n, n, l, l, l)), lengths(logical_n), lengths(logical_l)


def _check(name, got, ref, tol):
    assert not torch.isnan(got).any(), f"{name}: NaN (unwritten element or 0/0)"
    if ref.numel():
        err = ((got.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()
        assert err <= tol, f"{name}: relative error {err:.3e} > {tol}"


@pytest.mark.gpu
@pytest.mark.skipif(not HOPPER, reason="the Hopper kernel needs compute capability 9.x")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("layout", ["bshd", "bhsd", "wide_rows"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_float64(case, layout, dtype):
    (q, k, v, jq, jk, jv), logical_n, logical_l = _inputs(case, dtype, layout, seed=len(case))
    b, nh, n, dh = q.shape
    l = jq.shape[2]  # noqa: E741
    scale = dh**-0.5
    if layout == "bshd":  # both outputs slices of one [b, N+L, nh, dh] buffer, lse a slice of a wider one
        buffer = torch.full((b, n + l, nh, dh), float("nan"), dtype=dtype, device="cuda")
        out, joint_out = buffer[:, :n].transpose(1, 2), buffer[:, n:].transpose(1, 2)
        lse_buffer = torch.full((b, nh, n + l + 5), float("nan"), device="cuda")
        lse = lse_buffer[..., : n + l]
    else:
        out = torch.full((b, n, nh, dh), float("nan"), dtype=dtype, device="cuda").transpose(1, 2)
        joint_out = torch.full((b, nh, l, dh), float("nan"), dtype=dtype, device="cuda")
        lse = torch.full((b, nh, n + l), float("nan"), device="cuda")
    launch_forward(
        JointCall.of(q, k, v, jq, jk, jv, scale, logical_n, logical_l), out, joint_out, lse, hopper=True
    )
    if layout == "bshd":
        assert torch.isnan(lse_buffer[..., n + l :]).all(), "lse written past its N + L columns"
    ref_out, ref_joint, ref_lse = unfused_float64(q, k, v, jq, jk, jv, scale=scale, logical_n=logical_n,
                                                  logical_l=logical_l)  # fmt: skip
    tol = 1e-2 if dtype == torch.bfloat16 else 5e-3
    _check("out", out, ref_out, tol)
    _check("joint_out", joint_out, ref_joint, tol)
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse)), "lse: -inf exactly where a row sees no key"
    finite = torch.isfinite(ref_lse)
    if finite.any():
        assert (lse[finite].double() - ref_lse[finite]).abs().max().item() <= 2e-3


@pytest.mark.gpu
@pytest.mark.skipif(not HOPPER, reason="the Hopper kernel needs compute capability 9.x")
@pytest.mark.parametrize("hopper", [True, False], ids=["hopper_kernel", "triton_tma"])
@pytest.mark.parametrize("case", ["pad_both_per_batch", "boundary_on_block", "dh64_sd3_like", "long_padded",
                                  "int_length_out_of_range", "no_valid_key", "dh256_pad_both"])  # fmt: skip
def test_padded_rows_holding_nan_change_nothing(case, hopper):
    """Padded key/value rows hold NaN/inf (torch.empty padding). Both TMA kernels load a set's partial last
    block ending at its valid length, so no padded row reaches P V (where 0 * NaN would be NaN)."""
    (q, k, v, jq, jk, jv), logical_n, logical_l = _inputs(case, torch.bfloat16, "bshd", seed=3)
    scale = q.shape[-1] ** -0.5
    poisoned = (with_padding_poisoned(k, logical_n), with_padding_poisoned(v, logical_n),
                with_padding_poisoned(jk, logical_l), with_padding_poisoned(jv, logical_l))  # fmt: skip
    assert all(not torch.isfinite(t).all() for t in poisoned), "every case pads both token sets"
    out, joint_out = torch.empty_like(q), torch.empty_like(jq)
    lse = torch.empty(q.shape[0], q.shape[1], q.shape[2] + jq.shape[2], device="cuda")
    call = JointCall.of(
        q, poisoned[0], poisoned[1], jq, poisoned[2], poisoned[3], scale, logical_n, logical_l
    )
    launch_forward(call, out, joint_out, lse, hopper=hopper)
    ref_out, ref_joint, ref_lse = unfused_float64(q, k, v, jq, jk, jv, scale=scale, logical_n=logical_n,
                                                  logical_l=logical_l)  # fmt: skip
    _check("out", out, ref_out, 1e-2)
    _check("joint_out", joint_out, ref_joint, 1e-2)
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))


@pytest.mark.gpu
@pytest.mark.skipif(not HOPPER, reason="the Hopper kernel needs compute capability 9.x")
def test_outside_envelope_runs_triton_and_insisting_raises():
    (q, k, v, jq, jk, jv), _, _ = _inputs("short", torch.bfloat16, "bhsd", seed=1)
    out, joint_out = torch.empty_like(q), torch.empty_like(jq)
    lse = torch.empty(1, 1, 8, device="cuda")
    with pytest.raises(ValueError, match="positive scale"):
        launch_forward(JointCall.of(q, k, v, jq, jk, jv, -0.5), out, joint_out, lse, hopper=True)
    launch_forward(JointCall.of(q, k, v, jq, jk, jv, -0.5), out, joint_out, lse)  # the Triton kernel takes it
    ref_out, _, _ = unfused_float64(q, k, v, jq, jk, jv, scale=-0.5)
    _check("out", out, ref_out, 1e-2)
    with pytest.raises(ValueError, match="dh 64, 128, 256; got dh=32"):
        (q, k, v, jq, jk, jv) = (t[..., :32].contiguous() for t in (q, k, v, jq, jk, jv))
        launch_forward(
            JointCall.of(q, k, v, jq, jk, jv, 0.2), out[..., :32], joint_out[..., :32], lse, hopper=True
        )
