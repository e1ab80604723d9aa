"""Times the block-mask estimator's two Triton kernels apart, per launch setting (pooled rows per load, warps, query
blocks per selection program), on the GPU alone: each variant launched 20 times inside one CUDA graph, the replay
timed. Where the estimate's GPU time goes, and which settings `kernels/estimate_blocks.grid_and_tiles` should pick.

    python benchmarks/estimator_tune.py [--out DIR]     # a CUDA GPU; prints a table, writes estimator_tune.json
"""

from __future__ import annotations

import argparse
import json
import math
import os

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


def tune(name, rows_out):
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

    for env in ("torch", "triton"):
        os.environ["JOINTATTN_ESTIMATOR"] = env
        record(
            "whole",
            {"estimator": env},
            gpu_ms(lambda: estimate_kv_blocks(q, k, 0.3, None, q_block, kv_block)),
        )
    os.environ.pop("JOINTATTN_ESTIMATOR")
    record("whole", {"settings": dict(rows=t.rows, pool_warps=t.pool_warps, qt=t.qt, select_warps=t.select_warps)},
           float("nan"))  # fmt: skip

    for pooled_rows in (32, 64, 128, 256):
        for warps in (1, 2, 4):
            for stages in (1,):

                def pool(pooled_rows=pooled_rows, warps=warps, stages=stages):
                    block_means_kernel[pool_grid](
                        q, k, qm, km, count, *q.stride(), *k.stride(), n, nh, qbn,
                        Q_BLOCK=q_block, KV_BLOCK=kv_block, ROWS=pooled_rows, BLOCK_D=block_d, HEAD_DIM=dh,
                        HAS_VALID=False, num_warps=warps, num_stages=stages,
                    )  # fmt: skip

                try:
                    record("block_means", dict(rows=pooled_rows, warps=warps, stages=stages), gpu_ms(pool))
                except Exception as e:  # a setting that does not compile: named, not fatal
                    print(f"  rows={pooled_rows} warps={warps}: {type(e).__name__}", flush=True)

    for q_tile in (16, 32, 64):
        for warps in (2, 4, 8, 16):
            grid = (triton.cdiv(qbn, q_tile), b * nh)
            sel = q_tile if kbn_pad == chunk else max(1, 2048 // kbn_pad)

            def select(q_tile=q_tile, warps=warps, grid=grid, sel=sel):
                select_blocks_kernel[grid](
                    qm, km, scratch, count, indices, count, n, nh, qbn, kbn, kept, 0.0, dh**-0.5,
                    KV_BLOCK=kv_block, QT=q_tile, CHUNK=chunk, KBN_PAD=kbn_pad, BLOCK_D=block_d, HAS_VALID=False,
                    BY_MASS=False, SEL_ROWS=sel, num_warps=warps,
                )  # fmt: skip

            try:
                record("select", dict(qt=q_tile, warps=warps, programs=grid[0] * grid[1]), gpu_ms(select))
            except Exception as e:
                print(f"  qt={q_tile} warps={warps}: {type(e).__name__}: {str(e)[:80]}", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    rows = []
    for name in SHAPES:
        tune(name, rows)
    env = dict(device=torch.cuda.get_device_name(), torch=torch.__version__)
    path = os.path.join(args.out, "estimator_tune.json")
    with open(path, "w") as f:
        json.dump(dict(env=env, rows=rows), f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
