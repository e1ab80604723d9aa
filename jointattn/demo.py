"""The main demo: a stock diffusers transformer compiled with `backend="jointattn"`.

    python -m jointattn.demo                      # tiny random-weight SD3 on the CPU, no download
    python -m jointattn.demo --model mochi        # tiny Mochi with per-sample text padding
    python -m jointattn.demo --size real --device cuda --dtype bfloat16   # SD3.5-large 1024² on a GPU

Prints how many joint attentions were fused (counted by the profiler), the largest difference from eager,
and eager vs compiled time, and nothing else: the profiler's own log lines and a warning stock Mochi raises on
CPU are silenced here, for this run only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
import warnings

import torch
from torch.profiler import ProfilerActivity, profile

from . import model_zoo


def _time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: allocator, kernel caches
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _count_fused(fn) -> int:
    # Kineto, the profiler's backend, logs profiler_start/stop to stderr at its highest level (USDT, 5). It reads
    # the level once, when the profiler first starts; 6 is above all of its levels. A level set by the user stays.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(
        1
        for e in prof.events()
        if e.name == "jointattn::joint_attention" and (e.cpu_parent is None or e.cpu_parent.name != e.name)
    )


@contextlib.contextmanager
def _quiet_stock_code():
    """Stock Mochi builds its RoPE under `torch.autocast("cpu", float32)`, which CPU autocast (bf16/fp16 only)
    turns off with a warning on every forward. Nothing changes: that code casts its inputs to float32 itself."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="In CPU autocast, but the target dtype is not supported", category=UserWarning
        )
        yield


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=model_zoo.MODELS, default="sd3")
    parser.add_argument("--size", choices=model_zoo.SIZES, default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--runtime", default="auto", help="the op's runtime: auto, reference, triton, ttnn")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.model == "mochi":
        # Mochi gathers valid text tokens with nonzero; this lets Dynamo keep it in one graph (see README).
        torch._dynamo.config.capture_dynamic_output_shape_ops = True

    device = torch.device(args.device)
    if device.type == "cpu" and args.size == "tiny":
        # Tiny matrices: with several threads, OpenMP wake-ups dominate (and swing 100x when another process
        # shares the cores), which would make the eager/compiled ratio meaningless.
        torch.set_num_threads(1)
    case = model_zoo.build(args.model, args.size, device=device, dtype=getattr(torch, args.dtype))
    model, inputs = case.model, case.inputs
    compiled = torch.compile(model, backend="jointattn", options={"runtime": args.runtime})
    with torch.no_grad(), _quiet_stock_code():
        eager_out = model(**inputs)[0]
        compiled_out = compiled(**inputs)[0]  # compiles
        fused = _count_fused(lambda: compiled(**inputs))
        eager_ms = _time(lambda: model(**inputs), device, args.repeats)
        compiled_ms = _time(lambda: compiled(**inputs), device, args.repeats)
    diff = (compiled_out.float() - eager_out.float()).abs().max().item()
    result = dict(
        model=args.model,
        size=args.size,
        device=str(device),
        dtype=args.dtype,
        fused=fused,
        joint_layers=case.joint_layers,
        max_abs_diff=diff,
        eager_ms=eager_ms,
        compiled_ms=compiled_ms,
    )
    print(f"model: {args.model} ({args.size}, {args.dtype}, {device}), unmodified diffusers code")
    print(
        f"joint attentions fused: {fused} of {case.joint_layers} joint-attention layers "
        f"(jointattn::joint_attention calls per forward)"
    )
    print(f"max |compiled - eager|: {diff:.3g}")
    print(f"eager {eager_ms:.1f} ms, compiled (jointattn) {compiled_ms:.1f} ms, median of {args.repeats}")
    if args.size == "tiny":
        print(
            "(a tiny model measures framework overhead, not attention: see benchmarks/ for real sizes on a GPU)"
        )
    return result


if __name__ == "__main__":
    main()
