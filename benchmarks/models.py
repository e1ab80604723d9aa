"""End-to-end: one forward of a real-size, random-weight, stock diffusers transformer on one GPU, bf16:
eager vs torch.compile(backend="inductor") vs torch.compile(backend="jointattn"), same inputs, one run.

    python benchmarks/models.py --model mochi            # one model per invocation (each takes minutes)
    python benchmarks/models.py --summarize              # results/models-*.json -> results/models.md

Writes `results/models-<model>.json` (and a copy under $OUT when set): ms (median of --repeats after a
warm-up), compile seconds, peak memory, ratio to inductor and eager, largest error vs eager, device and
versions. Timing with CUDA events around the whole forward.
Mochi is traced with `capture_dynamic_output_shape_ops` for jointattn (the README's one line); the inductor
baseline runs with default Dynamo settings, as a user gets it, and also with that setting when --mochi-both.
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


def _versions() -> dict:
    import triton

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    return dict(
        device=torch.cuda.get_device_name(),
        torch=torch.__version__,
        triton=triton.__version__,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version(),
        commit=commit or None,
    )


def _time_ms(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return times


def _first(out):
    return out[0] if isinstance(out, tuple) else out.sample


def _measure(name, fn, repeats, reference=None) -> tuple[dict, torch.Tensor]:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = _first(fn())  # compiles, if compiled
    torch.cuda.synchronize()
    first_s = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        times = _time_ms(fn, repeats)
    row = dict(
        variant=name,
        ms=round(statistics.median(times), 2),
        ms_all=[round(t, 2) for t in times],
        first_call_s=round(first_s, 1),
        peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
    )
    if reference is not None:
        diff = out.float() - reference.float()
        row["max_abs_err_vs_eager"] = round(diff.abs().max().item(), 4)
        row["rel_err_vs_eager"] = round((diff.norm() / reference.float().norm()).item(), 5)
    print(json.dumps(row), flush=True)
    return row, out


def run(model_name: str, repeats: int, layers: int | None, mochi_both: bool) -> dict:
    from jointattn.compiler.backend import REPORTS

    import jointattn  # noqa: F401  (registers the op; the backend itself loads through its entry point)
    from jointattn import model_zoo

    torch.manual_seed(0)
    t0 = time.perf_counter()
    case = model_zoo.build(model_name, "real", device="cuda", dtype=torch.bfloat16)
    if layers is not None:  # a stated subset of layers, when a full model does not fit
        for attr in ("transformer_blocks", "single_transformer_blocks"):
            blocks = getattr(case.model, attr, None)
            if blocks is not None:
                del blocks[layers:]
    model, inputs = case.model, case.inputs
    setup_s = time.perf_counter() - t0
    params_b = sum(p.numel() for p in model.parameters()) / 1e9
    rows = []
    row, eager = _measure("eager", lambda: model(**inputs), repeats)
    rows.append(row)

    torch._dynamo.reset()
    inductor = torch.compile(model, backend="inductor")
    row, _ = _measure("inductor", lambda: inductor(**inputs), repeats, eager)
    rows.append(row)
    if model_name == "mochi" and mochi_both:
        torch._dynamo.reset()
        with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
            compiled = torch.compile(model, backend="inductor")
            row, _ = _measure(
                "inductor[capture_dynamic_output_shape_ops]", lambda: compiled(**inputs), repeats, eager
            )
        rows.append(row)

    torch._dynamo.reset()
    before = len(REPORTS)
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=(model_name == "mochi")):
        compiled = torch.compile(model, backend="jointattn")
        row, _ = _measure("jointattn", lambda: compiled(**inputs), repeats, eager)
    row["fused"] = sum(r.fused for r in REPORTS[before:])
    row["graphs"] = len(REPORTS) - before
    rows.append(row)

    by = {r["variant"]: r for r in rows}
    summary = dict(
        model=model_name,
        params_b=round(params_b, 2),
        setup_s=round(setup_s, 1),
        joint_layers=case.joint_layers if layers is None else f"{layers} (subset)",
        speedup_vs_inductor=round(by["inductor"]["ms"] / by["jointattn"]["ms"], 3),
        speedup_vs_eager=round(by["eager"]["ms"] / by["jointattn"]["ms"], 3),
        rows=rows,
        **_versions(),
    )
    return summary


def summarize() -> str:
    lines = [
        "| model | variant | ms | vs inductor | peak GiB | rel err vs eager | fused |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    meta = None
    for path in sorted(RESULTS.glob("models-*.json")):
        result = json.loads(path.read_text())
        meta = meta or result
        base = next(r["ms"] for r in result["rows"] if r["variant"] == "inductor")
        for r in result["rows"]:
            lines.append(
                f"| {result['model']} | {r['variant']} | {r['ms']} | {base / r['ms']:.3f}x | {r['peak_gib']} | "
                f"{r.get('rel_err_vs_eager', '')} | {r.get('fused', '')} |"
            )
    if meta:
        lines.append(
            f"\n{meta['device']}, torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}, "
            f"cuDNN {meta['cudnn']}, commit {meta['commit']}; one forward, bf16, median of repeats."
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
    parser.add_argument("--summarize", action="store_true")
    args = parser.parse_args(argv)
    if args.summarize:
        print(summarize())
        return
    if args.model is None:
        sys.exit("--model or --summarize is required")
    result = run(args.model, args.repeats, args.layers, args.mochi_both)
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1)
    (RESULTS / f"models-{args.model}.json").write_text(text)
    if os.environ.get("OUT"):
        pathlib.Path(os.environ["OUT"], f"models-{args.model}.json").write_text(text)
    print(
        f"{args.model}: jointattn {result['speedup_vs_inductor']}x inductor, {result['speedup_vs_eager']}x eager"
    )


if __name__ == "__main__":
    main()
