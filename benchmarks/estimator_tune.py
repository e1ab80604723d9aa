"""Times the block-mask estimator's two Triton kernels apart, per launch setting (pooled rows per load, warps, query
blocks per selection program, the threshold by sort or bisection), on the GPU alone: each variant launched 20
times inside one CUDA graph, the replay timed. Where the estimate's GPU time goes, and which settings
`kernels/estimate_blocks.grid_and_tiles` should pick.

    python benchmarks/estimator_tune.py [--out DIR] [--select-only]   # a CUDA GPU; a table, estimator_tune.{json,png}
    python benchmarks/estimator_tune.py --plot-only benchmarks/results/estimator_tune-h200.json   # redraw a plot
"""

from __future__ import annotations

import argparse
import json
import math
import os
from unittest import mock

import torch

SHAPES = {  # (b, nh, N, dh, q_block, kv_block): the spatial tokens the estimator pools (benchmarks/sparse.py)
    "sd35_1024": (2, 38, 4096, 64, 128, 64),
    "mochi_848x480x163": (1, 24, 44520, 128, 128, 64),
    "mochi_848x480x163 128x16": (1, 24, 44520, 128, 128, 16),
}
REPEATS = 20


def gpu_ms(fn) -> float:
    """ms per launch of fn on the GPU alone: REPEATS launches captured in one CUDA graph, the replay timed."""
    from triton.testing import do_bench

    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(REPEATS):
            fn()
    return do_bench(graph.replay, warmup=10, rep=100, return_mode="median") / REPEATS


def tune(name, rows_out, select_only=False):
    import triton
    from jointattn.kernels.estimate_blocks import block_means_kernel, grid_and_tiles, select_blocks_kernel
    from jointattn.runtime.sparse_estimate import estimate_kv_blocks

    b, nh, n, dh, q_block, kv_block = SHAPES[name]
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k = (torch.randn(b, nh, n, dh, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
    qbn, kbn = -(-n // q_block), -(-n // kv_block)
    t = grid_and_tiles(qbn, kbn, b * nh, dh)
    pool_grid, chunk, kbn_pad, block_d = t.pool_grid, t.chunk, t.kbn_pad, t.block_d
    qm = torch.empty((b * nh, qbn, block_d), dtype=torch.float32, device="cuda")
    km = torch.empty((b * nh, kbn, block_d), dtype=torch.float32, device="cuda")
    scratch = (
        qm if kbn_pad == chunk else torch.empty((b * nh, qbn, kbn_pad), dtype=torch.float32, device="cuda")
    )
    count = torch.empty((b, nh, qbn), dtype=torch.int32, device="cuda")
    indices = torch.empty((b, nh, qbn, kbn), dtype=torch.int32, device="cuda")
    kept = max(1, math.ceil(0.3 * kbn))
    bytes_read = 2 * q.numel() * q.element_size()

    def record(kernel, setting, ms):
        row = dict(shape=name, kernel=kernel, setting=setting, gpu_ms=round(ms, 4),
                   tb_per_s=round(bytes_read / ms / 1e9, 2) if kernel == "block_means" else None)  # fmt: skip
        rows_out.append(row)
        print(f"{name:20s} {kernel:12s} {json.dumps(setting):48s} {ms * 1e3:8.1f} us", flush=True)

    for env in ("torch", "triton"):  # each implementation forced (`sparse_estimate.estimator_kernels`)
        with mock.patch.dict(os.environ, {"JOINTATTN_ESTIMATOR": env}):
            for keep, cdf in ((0.3, None), (None, 0.9)):
                record(
                    "whole",
                    {"estimator": env, "keep": keep, "cdf": cdf},
                    gpu_ms(lambda keep=keep, cdf=cdf: estimate_kv_blocks(q, k, keep, cdf, q_block, kv_block)),
                )
    print(f"  settings: {t}", flush=True)

    for pooled_rows in () if select_only else (32, 64, 128, 256):
        for warps in (1, 2, 4):

            def pool(pooled_rows=pooled_rows, warps=warps):
                block_means_kernel[pool_grid](
                    q, k, qm, km, count, *q.stride(), *k.stride(), n, nh, qbn,
                    Q_BLOCK=q_block, KV_BLOCK=kv_block, ROWS=pooled_rows, BLOCK_D=block_d, HEAD_DIM=dh,
                    HAS_VALID=False, num_warps=warps,
                )  # fmt: skip

            try:
                record("block_means", dict(rows=pooled_rows, warps=warps), gpu_ms(pool))
            except Exception as e:  # a setting that does not compile: named, not fatal
                print(f"  rows={pooled_rows} warps={warps}: {type(e).__name__}", flush=True)

    # The selection: a sort of each row (one product: every setting; scratch rows: the launcher's setting only,
    # a sort of wide rows is slow) or the bisection (scratch rows), per query blocks a program, warps and rows
    # selected at once.
    single = kbn_pad == chunk
    variants = []
    for by_mass in (False, True):
        if single:
            variants += [(False, by_mass, qt, w, qt) for qt in (16, 32) for w in (2, 4, 8)]
            continue
        variants.append((False, by_mass, t.qt, t.select_warps, t.select_rows))
        variants += [
            (True, by_mass, qt, w, max(1, tile // kbn_pad))
            for qt in (16, 32)
            for w in (4, 8, 16)
            for tile in (2048, 4096)
        ]
    for search, by_mass, q_tile, warps, sel in variants:
        grid = (triton.cdiv(qbn, q_tile), b * nh)

        def select(search=search, by_mass=by_mass, q_tile=q_tile, warps=warps, grid=grid, sel=sel):
            select_blocks_kernel[grid](
                qm, km, scratch, count, indices, count, n, nh, qbn, kbn, kept, 0.9, dh**-0.5,
                KV_BLOCK=kv_block, QT=q_tile, CHUNK=chunk, KBN_PAD=kbn_pad, BLOCK_D=block_d, HAS_VALID=False,
                BY_MASS=by_mass, SEL_ROWS=sel, SEARCH=search, num_warps=warps,
            )  # fmt: skip

        setting = dict(search=search, by_mass=by_mass, qt=q_tile, warps=warps, rows_at_once=sel)
        try:
            record("select", setting, gpu_ms(select))
        except Exception as e:
            print(f"  {setting}: {type(e).__name__}: {str(e)[:80]}", flush=True)


def plot(rows, path):
    """One panel per shape: each variant's GPU µs (log scale), the whole estimate's rows first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    fig, axes = plt.subplots(1, len(shapes), figsize=(7 * len(shapes), 9), squeeze=False)
    colors = {"whole": "tab:blue", "block_means": "tab:green", "select": "tab:orange"}
    for ax, shape in zip(axes[0], shapes):
        mine = [r for r in rows if r["shape"] == shape and r["gpu_ms"] == r["gpu_ms"]]  # NaN rows left out
        y = range(len(mine))
        ax.barh(list(y), [r["gpu_ms"] * 1e3 for r in mine], color=[colors[r["kernel"]] for r in mine])
        ax.set_yticks(list(y))
        labels = [f"{r['kernel']} " + " ".join(f"{k}={v}" for k, v in r["setting"].items()) for r in mine]
        ax.set_yticklabels(labels, fontsize=5)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("GPU µs per estimate or launch")
        ax.set_title(shape)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument(
        "--select-only", action="store_true", help="the whole estimate and the selection only"
    )
    parser.add_argument(
        "--plot-only", metavar="JSON", help="redraw the plot of an earlier run's JSON (no GPU)"
    )
    args = parser.parse_args()
    if args.plot_only:
        plot(json.load(open(args.plot_only))["rows"], args.plot_only.removesuffix(".json") + ".png")
        return
    rows = []
    for name in SHAPES:
        tune(name, rows, args.select_only)
    import triton

    env = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__)
    path = os.path.join(args.out, "estimator_tune.json")
    with open(path, "w") as f:
        json.dump(dict(env=env, rows=rows), f, indent=1)
    plot(rows, path.removesuffix(".json") + ".png")
    print(f"wrote {path} and its plot")


if __name__ == "__main__":
    main()
