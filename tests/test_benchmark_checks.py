"""The correctness checks the GPU benchmarks make while they time: never_slower's agreement of ours with PyTorch's
path per point, and training.py's flag for gradients that differ from eager by more than inductor's do; and that
sparse.py's flex baseline computes the sparse op's function. Run here on CPU against functions known right and
known wrong."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from helpers import joint_inputs

import jointattn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import never_slower  # noqa: E402
import training  # noqa: E402

N = 13


def _ours(ts):
    return jointattn.joint_attention(*ts, runtime="reference")[:2]


def test_agreement_is_rounding_for_the_same_function_and_order_one_for_a_wrong_one():
    inputs = joint_inputs(2, 3, N, 6, 16, seed=1)
    g = torch.Generator().manual_seed(2)
    cotangents = (torch.randn(2, 3, N, 16, generator=g), torch.randn(2, 3, 6, 16, generator=g))
    same = never_slower.agreement(_ours, lambda ts: never_slower._cat_sdpa(ts, N), inputs, cotangents)
    assert same < 1e-5

    def values_for_keys(ts):  # a plausible bug: k and v swapped in the joined call
        return never_slower._cat_sdpa([ts[0], ts[2], ts[1], ts[3], ts[5], ts[4]], N)

    wrong = never_slower.agreement(_ours, values_for_keys, inputs, cotangents)
    assert wrong > never_slower.DIFFERENT


def test_training_flags_gradients_further_from_eager_than_inductors():
    inductor = {"grad_rel_err_vs_eager": 0.0036}
    assert training.gradient_suspect({"grad_rel_err_vs_eager": 0.0854}, inductor)  # the 1024² run
    assert training.gradient_suspect({"grad_rel_err_vs_eager": 0.0035}, inductor) is None  # the 512² run
    exact = {"grad_rel_err_vs_eager": 4.7e-7}
    assert training.gradient_suspect({"grad_rel_err_vs_eager": 9e-7}, exact) is None  # float32: both exact


def test_training_without_cudnn_sdpa_turns_it_off_for_every_variant_and_names_the_result(
    monkeypatch, tmp_path
):
    """`training.py --no-cudnn-sdpa` (Flux on torch 2.11: the stock model's eager step fails with PyTorch's cuDNN
    SDPA on): the switch is off while the variants run, and the result file says so in its name."""
    seen = []

    def run(*args):
        seen.append(torch.backends.cuda.cudnn_sdp_enabled())
        return dict(speedup_vs_inductor=1.0, speedup_vs_eager=1.0)

    monkeypatch.setattr(training, "run", run)
    monkeypatch.setattr(training, "RESULTS", tmp_path)
    monkeypatch.delenv("OUT", raising=False)
    enabled = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        training.main(["--model", "flux", "--no-cudnn-sdpa"])
    finally:
        torch.backends.cuda.enable_cudnn_sdp(enabled)
    assert seen == [False]
    assert [p.name for p in tmp_path.iterdir()] == ["training-flux-1024-no-cudnn.json"]


def test_other_gpu_processes_lists_everyone_but_this_process(monkeypatch):
    """never_slower records who else was on the GPU while it timed (nvidia-smi's compute apps, itself left out);
    None where nvidia-smi is missing or fails."""
    import os
    import subprocess
    import types

    listing = f"{os.getpid()}\n4242\n"
    monkeypatch.setattr(
        subprocess, "run", lambda *a, **k: types.SimpleNamespace(returncode=0, stdout=listing)
    )
    assert never_slower.other_gpu_processes() == [4242]
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: types.SimpleNamespace(returncode=9, stdout=""))
    assert never_slower.other_gpu_processes() is None

    def missing(*a, **k):
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(subprocess, "run", missing)
    assert never_slower.other_gpu_processes() is None


def test_the_summary_counts_the_slower_rows_per_size_and_pass():
    rows = [
        dict(n=256, **{"pass": "forward"}, ratio=0.5),
        dict(n=256, **{"pass": "forward"}, ratio=1.2),
        dict(n=256, **{"pass": "forward"}, ratio=0.97),  # within 3%: not slower
        dict(n=256, **{"pass": "fwd+bwd"}, ratio=None),  # no baseline ran: left out
        dict(n=4096, **{"pass": "fwd+bwd"}, ratio=1.1),
    ]
    assert never_slower.summary(rows) == {
        (256, "forward"): (3, 1, 0.97, 0.5),
        (4096, "fwd+bwd"): (1, 0, 1.1, 1.1),
    }


def _load_sparse_benchmark():
    """benchmarks/sparse.py under a name of its own (the repo's `sparse/` folder is jointattn.sparse)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "sparse.py"
    spec = importlib.util.spec_from_file_location("sparse_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dynamo, under flex_attention, looks the mask_mod's module up
    spec.loader.exec_module(module)
    return module


def test_the_flex_baseline_computes_the_ops_function_with_and_without_partial_blocks():
    """sparse.py times flex_attention on the joined sequence with the layout's mask: it must compute what the
    sparse op computes, for the estimator's layouts (full blocks only: no partial slots, whose empty bits once
    failed flex's compile) and a frame window's (partial blocks), with padded text keys."""
    from jointattn.runtime.sparse_layout import spatial_layout
    from jointattn.sparse import estimate_block_mask, frame_window

    bench = _load_sparse_benchmark()
    n, l, lv = 333, 21, 17  # noqa: E741
    ts = joint_inputs(2, 2, n, l, 16, seed=3, dtype=torch.float64)
    for mask, partial in (
        (estimate_block_mask(ts[0] + 0.5 * ts[1], ts[1], keep=0.3, block_size=(64, 64)), False),
        (frame_window(50, 2), True),
    ):
        layout = spatial_layout(mask, n, ts[0].device)
        assert (layout.partial_bits.shape[3] > 0) == partial
        flex, flex_mask = bench._flex_setup(layout, n, l, lv, cuda=False)
        joined = (torch.cat([a, c], 2) for a, c in zip(ts[:3], ts[3:]))
        got = flex(*joined, block_mask=flex_mask)
        out, joint_out, _ = jointattn.joint_attention(*ts, block_mask=mask, logical_l=lv, runtime="reference")
        torch.testing.assert_close(got, torch.cat([out, joint_out], 2), rtol=1e-10, atol=1e-10)


def test_timed_in_rounds_rotates_the_order_and_keeps_each_variants_median():
    order, times = [], {"a": iter([5.0, 1.0, 3.0]), "b": iter([2.0, 2.0, 9.0]), "c": iter([1.0, None, 1.0])}

    def bench(name):
        order.append(name)
        return next(times[name])

    got = never_slower.timed_in_rounds({n: n for n in "abc"}, 3, bench)
    assert order == ["a", "b", "c", "b", "c", "a", "a", "b"]  # c failed in round 2: not timed again
    assert got == {"a": 3.0, "b": 2.0, "c": None}  # and has no time
    assert never_slower.timed_in_rounds({}, 3, bench) == {}
