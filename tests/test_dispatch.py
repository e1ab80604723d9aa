"""The dispatcher (`runtime/dispatch.py`): each kernel's limits, the defaults, the choice from a table of
measurements on described GPUs (no GPU needed), the JOINTATTN_DISPATCH override, and every path of the "auto"
runtime against float64 on CPU."""

import pytest
import torch
from helpers import joint_inputs, rel_err, unfused_float64
from jointattn.runtime import dispatch
from jointattn.runtime.dispatch import Problem, choose, measured_times, planned_problem, unsupported

import jointattn


def _problem(**changes) -> Problem:
    base = planned_problem(torch.bfloat16, 1, 24, 4096, 512, 128)
    return Problem(**{**base.__dict__, **changes})


@pytest.fixture(autouse=True)
def fresh_choices():
    """Choices are cached per problem; tests that change the table or the limits start and end afresh."""
    dispatch.reload_measurements()
    yield
    dispatch.reload_measurements()


@pytest.fixture
def no_measurements(monkeypatch):
    monkeypatch.setattr(dispatch, "_table", lambda: {})


@pytest.fixture
def table(monkeypatch):
    rows = []
    monkeypatch.setattr(dispatch, "_table", lambda: {"rows": rows})
    return rows


def _row(pass_="forward", b_nh=24, n=4096, l=512, dh=128, padded=False, **ms):  # noqa: E741
    return dict(
        arch="sm_90", dtype="bfloat16", dh=dh, b_nh=b_nh, n=n, l=l, padded=padded, ms=ms, **{"pass": pass_}
    )


@pytest.mark.parametrize(
    "path,changes,reason",
    [
        ("hopper", dict(arch="sm_80"), "compute capability 9.x"),
        ("hopper", dict(arch="sm_100"), "compute capability 9.x"),
        ("hopper", dict(dh=96), "forward configs for dh 64, 128, 256"),
        ("hopper", dict(dtype=torch.float32), "float16 or bfloat16"),
        ("hopper", dict(positive_scale=False), "positive scale"),
        ("hopper", dict(tma_ok=False), "TMA-addressable"),
        ("hopper", dict(backward=True, dh=96), "backward configs for dh 64, 128;"),
        ("hopper", dict(backward=True, dh=256), "backward configs for dh 64, 128;"),
        ("hopper", dict(backward=True, tma_ok=False), "TMA-addressable"),
        ("triton", dict(dh=320), "dh <= 256"),
        ("triton", dict(dtype=torch.float64), "float16, bfloat16 or float32"),
        ("triton", dict(arch="sm_75"), "8.0+"),
        ("triton", dict(device="cpu", arch=None), "interpreter"),
        ("sdpa", dict(padded=True, capturing=True), "CUDA graph capture"),
        ("sdpa", dict(backward=True, grad_lse=True), "gradient through lse"),
        ("sdpa", dict(dh=100), "multiple of 8"),
        ("sdpa", dict(dtype=torch.float32), "no SDPA kernel"),
    ],
)
def test_each_kernels_limits_are_stated_once(path, changes, reason):
    assert unsupported(path, _problem()) is None
    got = unsupported(path, _problem(**changes))
    assert got is not None and reason in got


def test_the_hopper_backward_runs_padding_and_a_gradient_through_lse():
    assert unsupported("hopper", _problem(backward=True, padded=True, grad_lse=True)) is None
    assert unsupported("hopper", _problem(backward=True, dh=64)) is None


def test_the_reference_runs_everything():
    assert (
        unsupported("reference", _problem(dtype=torch.float64, device="cpu", arch=None, padded=True)) is None
    )


def test_defaults_without_measurements(no_measurements):
    assert choose(_problem()).path == "hopper"  # dh 128: its config is marked default
    assert choose(_problem(dh=64)).path == "triton"  # dh 64: the Triton kernel measured faster
    assert choose(_problem(backward=True)).path == "sdpa"
    assert choose(_problem(backward=True, padded=True)).path == "sdpa"  # over the valid keys, cut on the host
    assert choose(_problem(backward=True, padded=True, capturing=True)).path == "triton"
    assert choose(_problem(backward=True, grad_lse=True)).path == "triton"
    assert choose(_problem(dtype=torch.float64)).path == "reference"
    assert choose(_problem(), allowed=("triton", "reference")).path == "triton"


def test_the_fastest_measured_supported_path_at_the_nearest_point(table):
    table += [
        _row(b_nh=48, n=1024, l=333, hopper=0.20, triton=0.15, sdpa=0.09),  # small: PyTorch's SDPA wins
        _row(b_nh=24, n=4096, l=512, hopper=0.41, triton=0.47, sdpa=0.48),  # large: the Hopper kernel wins
        _row(b_nh=24, n=4096, l=512, padded=True, hopper=0.40, triton=0.45, sdpa=0.39),  # unpad -> SDPA
    ]
    small = choose(_problem(b=2, nh=24, n=1000, l=300))
    assert small.path == "sdpa" and "b*nh=48, N=1024, L=333" in small.reason
    assert choose(_problem(n=5000)).path == "hopper"
    assert choose(_problem(padded=True)).path == "sdpa"
    assert choose(_problem(padded=True, capturing=True)).path == "hopper"  # no host read in a capture
    assert choose(_problem(dh=64)).path == "triton"  # nothing measured at dh 64: the defaults
    assert choose(_problem(arch="sm_80", n=5000)).path == "triton"  # another GPU: the defaults


def test_a_padded_point_without_an_sdpa_time_scales_one_from_unpadded_points(table):
    # Tables written before the sdpa path took padded calls never timed it there.
    table += [
        _row(pass_="backward", b_nh=24, n=16384, l=512, triton=36.0, sdpa=18.0),
        _row(pass_="backward", b_nh=24, n=44520, l=256, padded=True, hopper=148.0, triton=252.0, sdpa=None),
    ]
    mochi = choose(_problem(backward=True, padded=True, b=1, nh=24, n=44520, l=256))
    assert mochi.path == "sdpa" and "sdpa estimated: triton's time x 0.50" in mochi.reason
    times = measured_times(_problem(backward=True, padded=True, b=1, nh=24, n=44520, l=256))
    assert times["sdpa"] == pytest.approx(126.0)
    # Unpadded problems never borrow: the sdpa time there is measured or absent.
    table += [_row(pass_="backward", b_nh=24, n=44520, l=256, hopper=140.0, sdpa=None)]
    assert choose(_problem(backward=True, b=1, nh=24, n=44520, l=256)).path == "hopper"


def test_a_measured_backward_is_chosen_per_pass(table):
    table += [_row(pass_="backward", triton=2.5, sdpa=1.4)]
    assert choose(_problem(backward=True)).path == "sdpa"
    assert choose(_problem(backward=True, grad_lse=True)).path == "triton"


def test_a_measured_hopper_backward_is_chosen_where_it_is_fastest(table):
    table += [_row(pass_="backward", hopper=1.2, triton=2.5, sdpa=1.4)]
    assert choose(_problem(backward=True)).path == "hopper"
    assert choose(_problem(backward=True), allowed=("hopper", "triton")).path == "hopper"
    assert choose(_problem(backward=True, dh=96)).path != "hopper"  # outside its envelope whatever was timed


@pytest.mark.parametrize(
    "backward_ms, forced, path",
    [
        (dict(triton=0.30, sdpa=0.28), None, "sdpa"),  # both passes pick sdpa
        (dict(triton=0.30, sdpa=0.40), None, "sdpa"),  # slower by less than the op's autograd layers cost
        (dict(triton=0.30, sdpa=0.60), None, "op"),  # slower by more
        (dict(triton=0.30, sdpa=0.40), "backward=triton", "op"),  # a forced path is never second-guessed
    ],
)
def test_training_without_a_step_measurement_needs_sdpa_for_both_passes(
    table, monkeypatch, backward_ms, forced, path
):
    """No "fwd+bwd" row: the unfused graph runs a step only where the forward picks sdpa and the backward picks it
    or is measured within what the op's autograd layers cost (`EAGER_OP_AUTOGRAD_MS`), which the per-pass table
    cannot see. (A step of Flux's size: smaller ones are host time, `test_host_bound_eager_steps_...`.)"""
    table += [_row(triton=0.2, sdpa=0.1)]
    table += [_row(pass_="backward", **backward_ms)]
    if forced:
        monkeypatch.setenv(dispatch.DISPATCH_ENV, forced)
    choice = dispatch.choose_training(_problem())
    assert choice.path == path
    assert choice.measured == (path == "sdpa")


def test_host_bound_eager_steps_run_the_unfused_graph_whatever_the_table_says(table, monkeypatch):
    """An eager step of at most `HOST_BOUND_STEP_FLOPS` runs the unfused graph even where the per-pass rows favour
    a kernel of ours (on the H200 every such step the table sent to the op took 2-5x PyTorch's); a compiled graph
    (no op layers to pay) and a forced pass still go by the table."""
    small = dict(b_nh=8, n=256, l=77, dh=64)
    table += [_row(**small, triton=0.2, sdpa=0.1), _row(pass_="backward", **small, triton=0.30, sdpa=0.60)]
    problem = _problem(nh=8, n=256, l=77, dh=64)
    assert dispatch.step_flops(problem) == 3.5 * 4 * 8 * 333**2 * 64
    choice = dispatch.choose_training(problem)
    assert choice.path == "sdpa" and "is host time" in choice.reason
    assert dispatch.choose_training(problem, op_layers_ms=0.0).path == "op"  # compiled: by the table
    monkeypatch.setenv(dispatch.DISPATCH_ENV, "backward=triton")
    assert dispatch.choose_training(problem).path == "op"
    monkeypatch.delenv(dispatch.DISPATCH_ENV)
    big = _problem(nh=8, n=4096, l=512, dh=128)  # 3.04e11: just above, by the table (no rows there: the op)
    assert dispatch.step_flops(big) > dispatch.HOST_BOUND_STEP_FLOPS
    assert "is host time" not in dispatch.choose_training(big).reason


def test_training_weighs_the_unfused_step_against_the_ops_passes(table):
    """The op's per-pass winners (Hopper forward and backward) against the unfused graph over the step: the op's
    two sdpa passes less the joins it does not repeat (0.48 ms measured at the "fwd+bwd" row), which scale with
    the bytes joined, while each pass's time scales with attention work away from its nearest point."""
    table += [
        _row(hopper=0.40, sdpa=0.65),
        _row(pass_="backward", hopper=1.60, sdpa=1.75),
        _row(pass_="fwd+bwd", sdpa=1.92),  # 0.65 + 1.75 - 0.48
        _row(b_nh=48, hopper=0.80, sdpa=1.36),
        _row(pass_="backward", b_nh=48, hopper=3.2, sdpa=3.4),
    ]
    flux = dispatch.choose_training(_problem())
    assert flux.path == "sdpa" and flux.measured
    assert "estimated 1.920 ms as the unfused graph" in flux.reason and "less 0.480 of joins" in flux.reason
    assert "vs 2.150 through the op (hopper 0.400 + hopper 1.600" in flux.reason
    # b*nh 48 has no step row: joins of twice the bytes, 1.36 + 3.4 - 0.96 = 3.80 against 0.8 + 3.2 + 0.15.
    wide = dispatch.choose_training(_problem(b=2))
    assert wide.path == "sdpa" and "less 0.960 of joins" in wide.reason
    table[-1] = _row(pass_="backward", b_nh=48, hopper=2.6, sdpa=3.4)  # a backward of ours well ahead
    dispatch.reload_measurements()
    wide = dispatch.choose_training(_problem(b=2))
    assert wide.path == "op" and "hopper 0.800 + hopper 2.600" in wide.reason
    # Four times the sequence, no point measured there: both passes scale by work (16x), the joins by bytes
    # (4x), so our passes' lead outgrows the joins.
    long = dispatch.choose_training(_problem(n=4 * 4096, l=4 * 512))
    assert long.path == "op" and "hopper 6.400 + hopper 25.600" in long.reason
    # Where sdpa cannot run (a padded call inside a CUDA graph capture), the op runs.
    assert dispatch.choose_training(_problem(padded=True, capturing=True)).path == "op"
    # fp16 runs the same kernels: without rows of its own it reads bf16's, the step's included.
    assert "less 0.480 of joins" in dispatch.choose_training(_problem(dtype=torch.float16)).reason


def test_training_joins_are_never_negative(table):
    """At host-bound points the table's per-pass sdpa times can sum to less than the timed unfused step (they
    are timed without the autograd engine): that difference is not joins, and counts as none."""
    table += [
        _row(hopper=0.30, sdpa=0.14),
        _row(pass_="backward", hopper=0.55, sdpa=0.70),
        _row(pass_="fwd+bwd", sdpa=1.01),  # 0.14 + 0.70 - 1.01 < 0
    ]
    choice = dispatch.choose_training(_problem())
    assert "less 0.000 of joins" in choice.reason and "estimated 0.840 ms" in choice.reason
    assert choice.path == "sdpa"  # 0.84 against 0.3 + 0.55 + 0.15; unclamped, 1.01 would have lost


def test_training_keeps_a_forced_pass(table, monkeypatch):
    """A pass forced to another path than sdpa keeps the op; one forced to sdpa is weighed as if chosen."""
    table += [
        _row(hopper=0.40, sdpa=0.45),
        _row(pass_="backward", hopper=1.60, sdpa=1.70),
        _row(pass_="fwd+bwd", sdpa=1.90),  # 0.25 of joins
    ]
    assert dispatch.choose_training(_problem()).path == "sdpa"  # 1.90 against 0.4 + 1.6 + 0.15
    monkeypatch.setenv(dispatch.DISPATCH_ENV, "forward=hopper")
    forced = dispatch.choose_training(_problem())
    assert forced.path == "op" and "forces the forward to hopper" in forced.reason
    monkeypatch.setenv(dispatch.DISPATCH_ENV, "forward=sdpa")
    weighed = dispatch.choose_training(_problem())  # 1.90 against 0.45 + 1.6 + 0.15
    assert weighed.path == "sdpa" and "estimated 1.900 ms" in weighed.reason
    monkeypatch.setenv(dispatch.DISPATCH_ENV, "sdpa")
    assert dispatch.choose_training(_problem()).path == "sdpa"


def test_the_override_forces_a_path_or_says_why_not(monkeypatch, no_measurements):
    monkeypatch.setenv("JOINTATTN_DISPATCH", "triton")
    assert choose(_problem()).path == "triton" and "JOINTATTN_DISPATCH" in choose(_problem()).reason
    monkeypatch.setenv("JOINTATTN_DISPATCH", "forward=sdpa,backward=reference")
    assert choose(_problem()).path == "sdpa"
    assert choose(_problem(backward=True)).path == "reference"
    monkeypatch.setenv("JOINTATTN_DISPATCH", "backward=triton")
    assert choose(_problem()).path == "hopper"  # the forward is not forced
    monkeypatch.setenv("JOINTATTN_DISPATCH", "sdpa")
    with pytest.raises(ValueError, match="forces 'sdpa', which cannot run this call: padding inside a CUDA"):
        choose(_problem(padded=True, capturing=True))
    monkeypatch.setenv("JOINTATTN_DISPATCH", "cudnn")
    with pytest.raises(ValueError, match="JOINTATTN_DISPATCH must name one of"):
        choose(_problem())
    monkeypatch.setenv("JOINTATTN_DISPATCH", "fwd=triton")
    with pytest.raises(ValueError, match="passes are 'forward' and 'backward'"):
        choose(_problem())


ON_GPU = torch.cuda.is_available()
CPU_PATHS = ["reference", "sdpa"] + ([] if ON_GPU else ["triton"])  # the interpreter runs only without CUDA


@pytest.mark.parametrize("path", CPU_PATHS)
def test_every_path_of_auto_matches_float64(path, monkeypatch):
    """Forward and backward on each path the CPU can run (Triton in its interpreter), forced per pass."""
    monkeypatch.setenv("JOINTATTN_DISPATCH", path)
    inputs = joint_inputs(2, 3, 37, 11, 16, requires_grad=True, seed=3)
    out, joint_out, lse = jointattn.joint_attention(*inputs)
    ref = unfused_float64(*inputs)
    assert rel_err(out, ref[0]) < 1e-5 and rel_err(joint_out, ref[1]) < 1e-5 and rel_err(lse, ref[2]) < 1e-6
    grads = torch.autograd.grad(out.sum() + (joint_out**2).sum(), inputs)
    doubles = [t.detach().double().requires_grad_() for t in inputs]
    o, jo, _ = unfused_float64(*doubles)
    want = torch.autograd.grad(o.sum() + (jo**2).sum(), doubles)
    for g, w in zip(grads, want):
        assert rel_err(g, w) < 1e-5


def test_a_backward_may_follow_another_paths_forward(monkeypatch):
    """Every forward leaves the same natural-log lse: the SDPA backward after the Triton forward is exact."""
    monkeypatch.setenv("JOINTATTN_DISPATCH", f"forward={'reference' if ON_GPU else 'triton'},backward=sdpa")
    inputs = joint_inputs(1, 2, 20, 9, 16, requires_grad=True, seed=4)
    out, joint_out, _ = jointattn.joint_attention(*inputs)
    grads = torch.autograd.grad(out.sum() + joint_out.sum(), inputs)
    doubles = [t.detach().double().requires_grad_() for t in inputs]
    o, jo, _ = unfused_float64(*doubles)
    for g, w in zip(grads, torch.autograd.grad(o.sum() + jo.sum(), doubles)):
        assert rel_err(g, w) < 1e-5


def test_a_gradient_through_lse_never_takes_the_sdpa_backward(no_measurements):
    inputs = joint_inputs(1, 2, 20, 9, 16, requires_grad=True, seed=5)
    _, _, lse = jointattn.joint_attention(*inputs)
    grads = torch.autograd.grad(lse.sum(), inputs)
    doubles = [t.detach().double().requires_grad_() for t in inputs]
    want = torch.autograd.grad(unfused_float64(*doubles)[2].sum(), doubles, allow_unused=True)
    for g, w in zip(grads, want):
        if w is None:  # lse does not depend on the values
            assert torch.count_nonzero(g) == 0
        else:
            assert rel_err(g, w) < 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("dh", [64, 96, 128, 256])
@pytest.mark.parametrize("forward", ["hopper", "triton", "sdpa"])
@pytest.mark.parametrize("backward", ["hopper", "triton", "sdpa"])
def test_every_gpu_path_pair_matches_float64(forward, backward, dh, monkeypatch):
    """Each forward path followed by each backward path on the GPU, bf16, odd lengths: the backward reads the
    forward's out and lse whichever kernel wrote them (cuDNN's backward reads ours)."""
    if (forward == "hopper" and dh == 96) or (backward == "hopper" and dh in (96, 256)):
        pytest.skip("the Hopper kernels have no config there (the dispatcher never picks them)")
    monkeypatch.setenv("JOINTATTN_DISPATCH", f"forward={forward},backward={backward}")
    inputs = [t.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
              for t in joint_inputs(2, 3, 333, 77, dh, dtype=torch.bfloat16, device="cuda", seed=dh)]  # fmt: skip
    out, joint_out, lse = jointattn.joint_attention(*inputs)
    ref = unfused_float64(*inputs)
    assert rel_err(out, ref[0]) < 2e-2 and rel_err(joint_out, ref[1]) < 2e-2 and rel_err(lse, ref[2]) < 1e-3
    g_out = torch.randn_like(out)
    grads = torch.autograd.grad((out, joint_out), inputs, (g_out, torch.ones_like(joint_out)))
    doubles = [t.detach().double().requires_grad_() for t in inputs]
    o, jo, _ = unfused_float64(*doubles)
    want = torch.autograd.grad((o, jo), doubles, (g_out.double(), torch.ones_like(jo)))
    for g, w in zip(grads, want):
        assert rel_err(g, w) < 3e-2


def test_the_override_leaves_a_caller_that_narrowed_the_paths_alone(monkeypatch, no_measurements):
    """runtime="triton" asks for hopper-or-triton only: forcing "sdpa" for debugging does not break it."""
    monkeypatch.setenv("JOINTATTN_DISPATCH", "sdpa")
    assert choose(_problem(), allowed=("hopper", "triton")).path == "hopper"
    monkeypatch.setenv("JOINTATTN_DISPATCH", "triton")
    assert choose(_problem(), allowed=("hopper", "triton")).path == "triton"


def test_a_kernel_timed_at_fewer_points_is_scaled_from_where_it_was(table):
    """The Hopper backward was timed at one Flux-sized point; Mochi's padded backward is nearest a point timed
    before it existed (Triton only): its time there is the Triton time scaled by their measured ratio."""
    table += [
        _row(pass_="backward", b_nh=24, n=4096, l=512, padded=True, hopper=1.5, triton=2.5, sdpa=None),
        _row(pass_="backward", b_nh=24, n=16384, l=512, padded=True, triton=34.5, sdpa=None),
    ]
    mochi = choose(_problem(backward=True, padded=True, n=44520, l=256))
    assert mochi.path == "hopper" and "estimated: triton's time x 0.60" in mochi.reason
    assert "b*nh=24, N=16384, L=512" in mochi.reason
    slower = [_row(pass_="backward", b_nh=24, n=4096, l=512, padded=True, hopper=3.0, triton=2.5)]
    table[:1] = slower  # where the measured ratio favours Triton, the estimate keeps Triton
    dispatch.reload_measurements()
    assert choose(_problem(backward=True, padded=True, n=44520, l=256)).path == "triton"
    table[:] = [table[1]]  # nothing to scale from: only what was measured competes
    dispatch.reload_measurements()
    assert choose(_problem(backward=True, padded=True, n=44520, l=256)).path == "triton"
