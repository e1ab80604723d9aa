"""Where the time of one compiled forward goes: GPU kernel time by kernel, GPU idle time, host syncs.

    python benchmarks/profile_model.py --model mochi --layers 4 [--code-dir DIR]

Compiles a real-size model (optionally its first N blocks) with inductor and with jointattn, profiles one
forward of each after a warm-up, and prints wall time, summed kernel time, the gap between them (GPU idle:
launch gaps, host syncs), the number of host-device syncs, and the top kernels of each variant. With
--code-dir, inductor's generated code of each variant is written there (to read what a kernel fuses).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

import torch
from torch.profiler import ProfilerActivity, profile


def _profile(fn, grad: bool = False) -> dict:
    """One profiled call of `fn` after a warm-up one (under no_grad unless `grad`)."""
    with torch.enable_grad() if grad else torch.no_grad():
        fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
    kernels, syncs = {}, 0
    for e in prof.key_averages():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            kernels[e.key[:160]] = kernels.get(e.key[:160], 0.0) + e.device_time_total / 1e3
        elif e.key in (
            "cudaStreamSynchronize",
            "cudaDeviceSynchronize",
            "cudaMemcpyAsync",
            "aten::is_nonzero",
            "aten::item",
            "aten::_local_scalar_dense",
        ):
            syncs += e.count
    wall = start.elapsed_time(end)
    busy = sum(kernels.values())
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:25]
    return dict(
        wall_ms=round(wall, 2),
        kernel_ms=round(busy, 2),
        idle_ms=round(wall - busy, 2),
        sync_like_calls=syncs,
        top=[(k, round(v, 2)) for k, v in top],
    )


def _write_code(compiled, inputs, path: pathlib.Path) -> None:
    from torch._inductor.utils import run_and_get_code

    with torch.no_grad():
        _, codes = run_and_get_code(lambda: compiled(**inputs))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n# ---- next graph ----\n".join(codes))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["sd3", "flux", "mochi"], required=True)
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--code-dir", default=None, help="write inductor's generated code here")
    args = parser.parse_args(argv)
    import jointattn  # noqa: F401
    from jointattn import model_zoo

    case = model_zoo.build(args.model, "real", device="cuda", dtype=torch.bfloat16)
    if args.layers is not None:
        for attr in ("transformer_blocks", "single_transformer_blocks"):
            if hasattr(case.model, attr):
                del getattr(case.model, attr)[args.layers :]
    model, inputs = case.model, case.inputs
    result = {}
    for backend in ("inductor", "jointattn"):
        torch._dynamo.reset()
        with torch._dynamo.config.patch(
            capture_dynamic_output_shape_ops=(args.model == "mochi" and backend == "jointattn")
        ):
            compiled = torch.compile(model, backend=backend)
            if args.code_dir:
                _write_code(compiled, inputs, pathlib.Path(args.code_dir, f"code-{args.model}-{backend}.py"))
            result[backend] = _profile(lambda compiled=compiled: compiled(**inputs))
        print(backend, json.dumps(result[backend], indent=1), flush=True)
    if os.environ.get("OUT"):
        pathlib.Path(os.environ["OUT"], f"profile-{args.model}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
