"""End-to-end: one forward of a real-size, random-weight, stock diffusers transformer on one GPU, bf16:
eager vs torch.compile(backend="inductor") vs torch.compile(backend="jointattn"), same inputs, one run.

    python benchmarks/models.py --model mochi            # one model per invocation (each takes minutes)
    python benchmarks/models.py --summarize              # results/models-*.json -> results/models.md
    python benchmarks/models.py --model sd3 --size tiny --device cpu   # smoke run of this script

Writes `results/models-<model>.json`: ms (median of --repeats after a warm-up call), first-call seconds
(compile), peak memory, ratio to inductor and eager, error vs eager, device and versions. CUDA events time
the whole forward. Mochi runs the jointattn variant with `capture_dynamic_output_shape_ops` (the README's one
line); the inductor baseline runs with default Dynamo settings, as a user gets it (--mochi-both adds inductor
with that setting too).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import torch

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _versions(device: torch.device) -> dict:
    import triton

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
        ).stdout
    except OSError:
        commit = ""
    return dict(
        device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        torch=torch.__version__,
        triton=triton.__version__,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version(),
        commit=commit.strip() or None,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_ms(fn, repeats: int, device: torch.device) -> list[float]:
    """CUDA events around each call on a GPU; the host clock after a sync elsewhere."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def _first(out):
    return out[0] if isinstance(out, tuple) else out.sample


def _measure(name, fn, repeats, device, reference=None):
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = _first(fn())  # compiles, if compiled
    _sync(device)
    first_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        times = _time_ms(fn, repeats, device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    row = dict(
        variant=name,
        ms=round(statistics.median(times), 2),
        ms_all=[round(t, 2) for t in times],
        first_call_s=round(first_s, 1),
        peak_gib=round(peak, 2) if peak is not None else None,
    )
    if reference is not None:
        diff = out.float() - reference.float()
        row["max_abs_err_vs_eager"] = float(f"{diff.abs().max().item():.3g}")
        row["rel_err_vs_eager"] = float(f"{(diff.norm() / reference.float().norm()).item():.3g}")
    print(json.dumps(row), flush=True)
    return row, out


def run(model_name, repeats, layers=None, mochi_both=False, size="real", device="cuda") -> dict:
    from jointattn.compiler.backend import REPORTS

    import jointattn  # noqa: F401  (registers the op; the backend loads through its entry point)
    from jointattn import model_zoo

    device = torch.device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    t0 = time.perf_counter()
    case = model_zoo.build(model_name, size, device=device, dtype=dtype)
    if layers is not None:  # a stated subset of layers, when a full model does not fit
        for attr in ("transformer_blocks", "single_transformer_blocks"):
            blocks = getattr(case.model, attr, None)
            if blocks is not None:
                del blocks[layers:]
    model, inputs = case.model, case.inputs
    setup_s = time.perf_counter() - t0
    rows = []
    row, eager = _measure("eager", lambda: model(**inputs), repeats, device)
    rows.append(row)

    torch._dynamo.reset()
    inductor = torch.compile(model, backend="inductor")
    rows.append(_measure("inductor", lambda: inductor(**inputs), repeats, device, eager)[0])
    if model_name == "mochi" and mochi_both:
        torch._dynamo.reset()
        with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
            inductor = torch.compile(model, backend="inductor")
            name = "inductor[capture_dynamic_output_shape_ops]"
            rows.append(_measure(name, lambda: inductor(**inputs), repeats, device, eager)[0])

    torch._dynamo.reset()
    before = len(REPORTS)
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=(model_name == "mochi")):
        fused = torch.compile(model, backend="jointattn")
        row = _measure("jointattn", lambda: fused(**inputs), repeats, device, eager)[0]
    print(torch._dynamo.utils.compile_times(repr="str"), flush=True)  # where the first call's seconds went
    row["fused"] = sum(r.fused for r in REPORTS[before:])
    row["graphs"] = len(REPORTS) - before
    rows.append(row)

    by = {r["variant"]: r for r in rows}
    return dict(
        model=model_name,
        size=size,
        params_b=round(sum(p.numel() for p in model.parameters()) / 1e9, 2),
        setup_s=round(setup_s, 1),
        joint_layers=case.joint_layers if layers is None else f"{layers} (subset)",
        speedup_vs_inductor=round(by["inductor"]["ms"] / by["jointattn"]["ms"], 3),
        speedup_vs_eager=round(by["eager"]["ms"] / by["jointattn"]["ms"], 3),
        rows=rows,
        **_versions(device),
    )


def summarize() -> str:
    lines = [
        "| model | variant | ms | inductor / this | peak GiB | rel err vs eager | fused | graphs |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    meta = None
    for path in sorted(RESULTS.glob("models-*.json")):
        result = json.loads(path.read_text())
        meta = meta or result
        base = next(r["ms"] for r in result["rows"] if r["variant"] == "inductor")
        for r in result["rows"]:
            lines.append(
                f"| {result['model']} | {r['variant']} | {r['ms']} | {base / r['ms']:.3f} | {r['peak_gib']} | "
                f"{r.get('rel_err_vs_eager', '')} | {r.get('fused', '')} | {r.get('graphs', '')} |"
            )
    if meta:
        lines.append(
            f"\n{meta['device']}, torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}, "
            f"cuDNN {meta['cudnn']}; one forward, bf16, random weights, median of repeats."
        )
    text = "\n".join(lines) + "\n"
    (RESULTS / "models.md").write_text(text)
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["sd3", "flux", "mochi"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", type=int, default=None, help="keep only the first N blocks (memory)")
    parser.add_argument(
        "--mochi-both", action="store_true", help="also time inductor with the Dynamo setting"
    )
    parser.add_argument(
        "--size", choices=["real", "tiny"], default="real", help="tiny: a smoke run of the script"
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--summarize", action="store_true")
    args = parser.parse_args(argv)
    if args.summarize:
        print(summarize())
        return
    if args.model is None:
        sys.exit("--model or --summarize is required")
    result = run(args.model, args.repeats, args.layers, args.mochi_both, args.size, args.device)
    text = json.dumps(result, indent=1)
    if args.size == "real":
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"models-{args.model}.json").write_text(text)
        if os.environ.get("OUT"):
            pathlib.Path(os.environ["OUT"], f"models-{args.model}.json").write_text(text)
    print(
        f"{args.model}: jointattn {result['speedup_vs_inductor']}x inductor, {result['speedup_vs_eager']}x eager"
    )


if __name__ == "__main__":
    main()
