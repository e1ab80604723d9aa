"""Benchmark of the joint-attention kernels against PyTorch's ways of doing joint attention on one GPU.

    python benchmarks/joint_attention.py                     # all shapes, table + JSON/PNG/markdown
    python benchmarks/joint_attention.py --shapes flux_1024 --out /tmp/r
    python benchmarks/joint_attention.py --sweep             # forward config sweep (tuning), JSON only
    python benchmarks/joint_attention.py --sweep --ws-top 0 --shapes sd35_1024 --configs 256,64,8,3  # listed ones

What one run measures, per shape (bf16; CUDA-event timing through triton.testing.do_bench, median, L2 flushed
between repetitions):
- ours: `jointattn.joint_attention(..., runtime="triton")` (what users get, op overhead included) and the raw
  launcher `launch_forward` on preallocated outputs, once with its default kernel (the Gluon Hopper kernel
  where it applies, see `runtime/hopper_launch.py`) and once with the Triton kernel (`hopper=False`);
- baselines: cat -> SDPA -> slice per SDPA backend (default, cuDNN, flash, efficient) for unpadded shapes;
  SDPA with a broadcast [b,1,1,S] key mask and with a materialized [b,1,S,S] mask, FlexAttention with a block
  mask (built once, outside the timing), and unpad -> SDPA -> pad for padded shapes;
- effective TFLOP/s on valid tokens (4 * b * nh * S_valid^2 * dh / t, as in shared/baselines/anchor_bench.py),
  peak memory, ratio of the best baseline's time to ours;
- the two floors: FLOPs our kernel must do (every query row, valid keys) over the measured bf16 GEMM rate, and
  bytes it must move (inputs once, outputs once) over the measured device-to-device copy bandwidth.
Note: unpad -> SDPA -> pad computes only valid query rows and zero-fills the rest; the op's contract computes
every query row (padded rows attend to the valid keys), i.e. (N+L)/S_valid more work than that baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

SHAPES = {
    # name: (b, nh, N, L, dh, valid spatial, valid text)
    "sd35_1024": (2, 38, 4096, 333, 64, 4096, 333),
    "flux_1024": (1, 24, 4096, 512, 128, 4096, 512),
    "flux_1024_textpad": (1, 24, 4096, 512, 128, 4096, 77),
    "mochi_848x480x163": (1, 24, 44520, 256, 128, 44520, 100),
}
DTYPE = torch.bfloat16


def _bench(fn, warmup=25, rep=200):
    """Median ms (CUDA events, L2 flushed between repetitions) and peak GiB; at least ~10 repetitions."""
    from triton.testing import do_bench

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    estimate = start.elapsed_time(end)
    ms = do_bench(fn, warmup=max(warmup, 2 * estimate), rep=max(rep, 10 * estimate), return_mode="median")
    return ms, torch.cuda.max_memory_allocated() / 2**30


def _cat_sdpa_slice(q, k, v, jq, jk, jv, backend=None, mask=None):
    from torch.nn.attention import sdpa_kernel

    n = q.shape[2]
    qq, kk, vv = torch.cat([q, jq], 2), torch.cat([k, jk], 2), torch.cat([v, jv], 2)
    if backend is None:
        o = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask)
    else:
        with sdpa_kernel([backend]):
            o = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask)
    return o[:, :, :n], o[:, :, n:]


def _unpad_sdpa_pad(q, k, v, jq, jk, jv, nv, lv):
    n, l = q.shape[2], jq.shape[2]  # noqa: E741
    qq = torch.cat([q[:, :, :nv], jq[:, :, :lv]], 2)
    kk = torch.cat([k[:, :, :nv], jk[:, :, :lv]], 2)
    vv = torch.cat([v[:, :, :nv], jv[:, :, :lv]], 2)
    o = F.scaled_dot_product_attention(qq, kk, vv)
    return F.pad(o[:, :, :nv], (0, 0, 0, n - nv)), F.pad(o[:, :, nv:], (0, 0, 0, l - lv))


def _inputs(b, nh, n, l, dh, seed=0):  # noqa: E741
    """Inputs laid out [b, S, nh, dh] (what a model's q/k/v projections produce), viewed as [b, nh, S, dh]."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    make = lambda s: torch.randn(b, s, nh, dh, device="cuda", dtype=DTYPE, generator=gen).transpose(1, 2)
    return make(n), make(n), make(n), make(l), make(l), make(l)


def _ceilings():
    a = torch.randn(8192, 8192, device="cuda", dtype=DTYPE)
    b = torch.randn(8192, 8192, device="cuda", dtype=DTYPE)
    ms, _ = _bench(lambda: a @ b)
    gemm = 2 * 8192**3 / (ms * 1e-3) / 1e12
    x = torch.empty(2**30, dtype=torch.uint8, device="cuda").random_()
    y = torch.empty_like(x)
    ms, _ = _bench(lambda: y.copy_(x))
    bw = 2 * x.numel() / (ms * 1e-3) / 1e12
    return gemm, bw


def _flops_valid(b, nh, sv, dh):
    return 4 * b * nh * sv * sv * dh


def versions() -> dict:
    import triton

    return dict(
        device=torch.cuda.get_device_name(),
        sm_count=torch.cuda.get_device_properties(0).multi_processor_count,
        torch=torch.__version__,
        triton=triton.__version__,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version(),
        python=platform.python_version(),
        date=time.strftime("%Y-%m-%d %H:%M"),
    )


def kernel_report() -> list[dict]:
    """Per compiled forward variant: registers, spills, shared memory, and what the PTX/SASS contain
    (wgmma / HGMMA: Hopper tensor-core path; TMA bulk copies; local-memory LDL/STL = spills)."""
    import subprocess
    import tempfile

    from jointattn.kernels.joint_attention_fwd import joint_attention_fwd_kernel
    from jointattn.kernels.joint_attention_fwd_hopper import joint_attention_fwd_hopper_kernel

    reports = []
    compiled_variants = [
        (kernel.__name__, compiled)
        for kernel in (joint_attention_fwd_kernel, joint_attention_fwd_hopper_kernel)
        for device_cache in kernel.device_caches.values()
        for compiled in device_cache[0].values()
    ]
    for kernel_name, compiled in compiled_variants:
        ptx = compiled.asm.get("ptx", "")
        meta = compiled.metadata
        consts = {
            k: v
            for k, v in (getattr(getattr(compiled, "src", None), "constants", None) or {}).items()
            if isinstance(v, (int, bool, str))
        }
        row = dict(
            kernel=kernel_name, constants=str(consts)[:300], num_warps=meta.num_warps, num_stages=meta.num_stages,
            n_regs=compiled.n_regs, n_spills=compiled.n_spills, shared=meta.shared,
            ptx_wgmma=ptx.count("wgmma.mma_async"), ptx_tma=ptx.count("cp.async.bulk.tensor"),
            ptx_cp_async=ptx.count("cp.async.cg"), ptx_ex2=ptx.count("ex2.approx"),
        )  # fmt: skip
        try:
            with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
                f.write(compiled.asm["cubin"])
                f.flush()
                sass = subprocess.run(
                    ["cuobjdump", "--dump-sass", f.name], capture_output=True, text=True
                ).stdout
            row.update(sass_hgmma=sass.count("HGMMA"), sass_hmma=sass.count("HMMA"), sass_ldl=sass.count("LDL"),
                       sass_stl=sass.count("STL"), sass_mufu_ex2=sass.count("MUFU.EX2"),
                       sass_utmaldg=sass.count("UTMALDG"), sass_ldgsts=sass.count("LDGSTS"))  # fmt: skip
        except Exception as e:
            row["sass_error"] = str(e)[:120]
        reports.append(row)
    return reports


def run_shape(name: str, gemm_tflops: float, bw_tbs: float, with_flex: bool, rows: list) -> None:
    from jointattn.runtime.call import JointCall
    from jointattn.runtime.triton_runtime import launch_forward

    import jointattn

    b, nh, n, l, dh, nv, lv = SHAPES[name]  # noqa: E741
    q, k, v, jq, jk, jv = _inputs(b, nh, n, l, dh)
    s, sv = n + l, nv + lv
    padded = nv < n or lv < l
    eff = _flops_valid(b, nh, sv, dh)
    computed = 4 * b * nh * s * sv * dh  # every query row x valid keys: what the op's contract computes
    nbytes = 2 * (3 * b * nh * s * dh) + 2 * b * nh * s * dh + 4 * b * nh * s
    floors = dict(
        flop_floor_ms=computed / (gemm_tflops * 1e12) * 1e3, byte_floor_ms=nbytes / (bw_tbs * 1e12) * 1e3
    )
    logical_n = torch.full((b,), nv, dtype=torch.int32, device="cuda") if nv < n else None
    logical_l = torch.full((b,), lv, dtype=torch.int32, device="cuda") if lv < l else None

    def record(variant, fn, kind):
        try:
            ms, mem = _bench(fn)
            row = dict(shape=name, variant=variant, kind=kind, ms=round(ms, 4), eff_tflops=round(eff / ms / 1e9, 1),
                       peak_gib=round(mem, 3))  # fmt: skip
        except Exception as e:  # a backend that refuses a shape is reported, not fatal
            row = dict(
                shape=name,
                variant=variant,
                kind=kind,
                error=f"{type(e).__name__}: {str(e).splitlines()[0][:160]}",
            )
        print(json.dumps(row), flush=True)
        rows.append(row)
        return row

    from torch.nn.attention import SDPBackend

    if not padded:
        for backend in (
            None,
            SDPBackend.CUDNN_ATTENTION,
            SDPBackend.FLASH_ATTENTION,
            SDPBackend.EFFICIENT_ATTENTION,
        ):
            label = backend.name if backend is not None else "default"
            record(
                f"cat_sdpa_slice[{label}]",
                lambda bk=backend: _cat_sdpa_slice(q, k, v, jq, jk, jv, bk),
                "baseline",
            )
    else:
        valid = torch.zeros(b, s, dtype=torch.bool, device="cuda")
        valid[:, :nv] = True
        valid[:, n : n + lv] = True
        key_mask = valid[:, None, None, :]
        record(
            "masked_sdpa[bcast b11S]",
            lambda: _cat_sdpa_slice(q, k, v, jq, jk, jv, None, key_mask),
            "baseline",
        )
        full = key_mask.expand(b, 1, s, s).contiguous()
        record(
            "masked_sdpa[materialized b1SS]",
            lambda: _cat_sdpa_slice(q, k, v, jq, jk, jv, None, full),
            "baseline",
        )
        del full
        torch.cuda.empty_cache()
        record("unpad_sdpa_pad", lambda: _unpad_sdpa_pad(q, k, v, jq, jk, jv, nv, lv), "baseline")
        if with_flex:
            try:
                from torch.nn.attention.flex_attention import create_block_mask, flex_attention

                flex = torch.compile(flex_attention, dynamic=False)
                block_mask = create_block_mask(
                    lambda bb, h, qi, ki: valid[bb, ki], b, None, s, s, device="cuda"
                )
                qq, kk, vv = torch.cat([q, jq], 2), torch.cat([k, jk], 2), torch.cat([v, jv], 2)
                record("flex_blockmask(pre-cat)", lambda: flex(qq, kk, vv, block_mask=block_mask), "baseline")
                del qq, kk, vv
            except Exception as e:
                print("flex unavailable:", str(e).splitlines()[0][:200], flush=True)

    out = torch.empty(b, n, nh, dh, device="cuda", dtype=DTYPE).transpose(1, 2)
    joint_out = torch.empty(b, l, nh, dh, device="cuda", dtype=DTYPE).transpose(1, 2)
    lse = torch.empty(b, nh, s, device="cuda", dtype=torch.float32)
    scale = dh**-0.5
    record(
        "triton_launch_forward(raw, Triton kernel)",
        lambda: launch_forward(
            JointCall.of(q, k, v, jq, jk, jv, scale, logical_n, logical_l), out, joint_out, lse, hopper=False
        ),
        "ours_raw",
    )
    record(
        "triton_launch_forward(raw, default kernel)",  # the Gluon Hopper kernel where it applies
        lambda: launch_forward(
            JointCall.of(q, k, v, jq, jk, jv, scale, logical_n, logical_l), out, joint_out, lse
        ),
        "ours_raw",
    )
    ours = record("jointattn.joint_attention(runtime=triton)",
                  lambda: jointattn.joint_attention(q, k, v, jq, jk, jv, logical_n=logical_n, logical_l=logical_l,
                                                    runtime="triton"), "ours")  # fmt: skip
    best = min(
        (r for r in rows if r["shape"] == name and r["kind"] == "baseline" and "ms" in r),
        key=lambda r: r["ms"],
    )
    for r in rows:
        if r["shape"] == name and "ms" in r:
            r["speedup_of_ours"] = round(r["ms"] / ours["ms"], 3) if "ms" in ours else None
    summary = dict(shape=name, kind="summary", best_baseline=best["variant"], best_baseline_ms=best["ms"],
                   ours_ms=ours.get("ms"), ratio_best_over_ours=round(best["ms"] / ours["ms"], 3) if "ms" in ours else None,
                   computed_tflops=round(computed / ours["ms"] / 1e9, 1) if "ms" in ours else None, **floors)  # fmt: skip
    print(json.dumps(summary), flush=True)
    rows.append(summary)


def run_backward(name: str, rows: list) -> None:
    """Forward + backward of ours vs cat -> SDPA (default backend) -> slice, the same loss, bf16."""
    import jointattn

    b, nh, n, l, dh, nv, lv = SHAPES[name]  # noqa: E741
    leaves = [t.detach().requires_grad_() for t in _inputs(b, nh, n, l, dh, seed=1)]
    logical_l = torch.full((b,), lv, dtype=torch.int32, device="cuda") if lv < l else None
    s = n + l
    mask = None
    if lv < l:
        valid = torch.ones(b, s, dtype=torch.bool, device="cuda")
        valid[:, n + lv :] = False
        mask = valid[:, None, None, :]

    def ours():
        out, joint_out, _ = jointattn.joint_attention(*leaves, logical_l=logical_l, runtime="triton")
        (out.float().sum() + joint_out.float().sum()).backward()

    def baseline():
        out, joint_out = _cat_sdpa_slice(*leaves, None, mask)
        (out.float().sum() + joint_out.float().sum()).backward()

    for variant, fn in (("fwd+bwd jointattn(triton)", ours), ("fwd+bwd cat_sdpa_slice[default]", baseline)):
        try:
            ms, mem = _bench(fn, warmup=10, rep=100)
            row = dict(shape=name, variant=variant, kind="backward", ms=round(ms, 4), peak_gib=round(mem, 3))
        except Exception as e:
            row = dict(shape=name, variant=variant, kind="backward", error=str(e).splitlines()[0][:160])
        print(json.dumps(row), flush=True)
        rows.append(row)


# (block_m, block_n, num_warps, num_stages) per head dim: the short list a focused sweep times (TMA on).
FOCUSED = {
    64: [
        (128, 64, 8, 3),
        (128, 64, 8, 4),
        (64, 128, 4, 3),
        (64, 128, 4, 4),
        (64, 64, 4, 4),
        (128, 128, 8, 4),
    ],
    128: [
        (128, 128, 8, 3),
        (128, 64, 8, 3),
        (128, 64, 8, 4),
        (64, 64, 4, 3),
        (64, 64, 4, 4),
        (64, 128, 4, 3),
    ],
}


def sweep(shape_names, rows: list, top: int = 3, focused: bool = False, listed=None) -> None:
    """Forward config sweep per shape: every kept candidate with BLOCK_N >= 64, TMA on and off (or, focused,
    the FOCUSED list with TMA; or the `listed` (block_m, block_n, num_warps, num_stages) tuples with TMA, which
    may lie outside the autotune space); then Triton's automatic warp specialization on the `top` fastest.
    Prints one JSON row per variant."""
    for name in shape_names:
        _sweep_shape(name, rows, top, focused, listed)
        torch.cuda.empty_cache()


def _sweep_shape(name: str, rows: list, top: int, focused: bool = False, listed=None) -> None:
    from jointattn.kernels.configs import forward_candidates
    from jointattn.runtime.call import JointCall
    from jointattn.runtime.triton_runtime import launch_forward

    b, nh, n, l, dh, nv, lv = SHAPES[name]  # noqa: E741
    q, k, v, jq, jk, jv = _inputs(b, nh, n, l, dh)
    out = torch.empty(b, n, nh, dh, device="cuda", dtype=DTYPE).transpose(1, 2)
    joint_out = torch.empty(b, l, nh, dh, device="cuda", dtype=DTYPE).transpose(1, 2)
    lse = torch.empty(b, nh, n + l, device="cuda", dtype=torch.float32)
    logical_n = torch.full((b,), nv, dtype=torch.int32, device="cuda") if nv < n else None
    logical_l = torch.full((b,), lv, dtype=torch.int32, device="cuda") if lv < l else None
    computed = 4 * b * nh * (n + l) * (nv + lv) * dh

    def measure(cfg, use_tma, ws):
        fn = lambda: launch_forward(JointCall.of(q, k, v, jq, jk, jv, dh**-0.5, logical_n, logical_l), out,
                                    joint_out, lse, cfg, use_tma=use_tma, warp_specialize=ws)  # fmt: skip
        row = dict(shape=name, kind="sweep", config=cfg.__dict__, tma=use_tma, warp_specialize=ws)
        try:
            t0 = time.time()
            fn()
            torch.cuda.synchronize()
            row["compile_s"] = round(time.time() - t0, 2)
            ms, _ = _bench(fn, warmup=10, rep=80)
            row.update(ms=round(ms, 4), tflops=round(computed / ms / 1e9, 1))
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
        print(json.dumps(row), flush=True)
        rows.append(row)
        return row

    from jointattn.kernels.configs import LaunchConfig

    timed = []
    short_list = listed or (FOCUSED[dh] if focused else None)
    for cfg in (LaunchConfig(*c) for c in short_list or ()):
        row = measure(cfg, True, False)
        if "ms" in row:
            timed.append((row["ms"], cfg, True))
    for cfg in [] if short_list else forward_candidates(dh, DTYPE):
        if cfg.block_n < 64:
            continue
        for use_tma in (True, False):
            row = measure(cfg, use_tma, False)
            if "ms" in row:
                timed.append((row["ms"], cfg, use_tma))
    for _, cfg, use_tma in sorted(timed, key=lambda t: t[0])[:top]:
        measure(cfg, use_tma, True)


def write_results(rows: list, meta: dict, out_dir: str, quiet: bool = False) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "joint_attention.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    lines = [
        f"Device: {meta['device']}; torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}, "
        f"cuDNN {meta['cudnn']}; bf16 GEMM {meta['gemm_tflops']:.0f} TFLOP/s, copy {meta['copy_tbs']:.2f} TB/s; "
        f"{meta['date']}",
        "",
        "| shape | variant | ms | eff TFLOP/s (valid tokens) | peak GiB | best baseline / this |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r.get("kind") in ("baseline", "ours", "ours_raw", "backward"):
            if "ms" in r:
                lines.append(f"| {r['shape']} | {r['variant']} | {r['ms']:.3f} | {r.get('eff_tflops', '')} | "
                             f"{r['peak_gib']:.2f} | {r.get('speedup_of_ours', '')} |")  # fmt: skip
            else:
                lines.append(f"| {r['shape']} | {r['variant']} | error: {r['error'][:60]} | | | |")
    lines += ["", "| shape | best baseline | its ms | ours ms | ratio | ours computed TFLOP/s | FLOP floor ms | byte floor ms |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in rows:
        if r.get("kind") == "summary" and r.get("ours_ms") is not None:
            lines.append(f"| {r['shape']} | {r['best_baseline']} | {r['best_baseline_ms']:.3f} | {r['ours_ms']:.3f} | "
                         f"{r['ratio_best_over_ours']:.3f} | {r['computed_tflops']} | {r['flop_floor_ms']:.3f} | "
                         f"{r['byte_floor_ms']:.3f} |")  # fmt: skip
    table = "\n".join(lines)
    with open(os.path.join(out_dir, "joint_attention.md"), "w") as f:
        f.write(table + "\n")
    if not quiet:
        print(table)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        shapes = [r["shape"] for r in rows if r.get("kind") == "summary"]
        fig, axes = plt.subplots(1, len(shapes), figsize=(5 * len(shapes), 4.5), squeeze=False)
        for ax, shape in zip(axes[0], shapes, strict=True):
            sel = [
                r
                for r in rows
                if r["shape"] == shape and r.get("kind") in ("baseline", "ours", "ours_raw") and "ms" in r
            ]
            colors = ["tab:orange" if r["kind"].startswith("ours") else "tab:gray" for r in sel]
            ax.barh([r["variant"] for r in sel], [r["eff_tflops"] for r in sel], color=colors)
            ax.set_title(shape)
            ax.set_xlabel("effective TFLOP/s on valid tokens (higher is better)")
            ax.tick_params(axis="y", labelsize=7)
        fig.suptitle(f"joint attention fwd, bf16, {meta['device']}")
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "joint_attention.png"), dpi=110)
    except Exception as e:
        print("plot skipped:", e)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--sweep", action="store_true", help="forward config sweep instead of the benchmark")
    parser.add_argument("--focused", action="store_true", help="sweep only the FOCUSED short list")
    parser.add_argument(
        "--configs", nargs="*", metavar="BM,BN,WARPS,STAGES", help="sweep only these configs (TMA on)"
    )
    parser.add_argument("--ws-top", type=int, default=3, help="sweep: warp-specialize the N fastest configs")
    parser.add_argument(
        "--no-flex", action="store_true", help="skip FlexAttention (its compile takes a while)"
    )
    parser.add_argument("--backward", nargs="*", default=["flux_1024"], help="shapes to time fwd+bwd on")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    meta = versions()
    rows: list = []
    if args.sweep:
        listed = [tuple(int(x) for x in c.split(",")) for c in args.configs or ()]
        sweep(args.shapes, rows, args.ws_top, args.focused, listed)
        meta["kernels"] = kernel_report()
        for k in meta["kernels"]:
            print(
                "KERNEL",
                json.dumps(
                    {
                        key: k.get(key)
                        for key in (
                            "num_warps",
                            "num_stages",
                            "n_regs",
                            "n_spills",
                            "shared",
                            "ptx_wgmma",
                            "ptx_tma",
                            "sass_hgmma",
                            "sass_hmma",
                            "sass_ldl",
                            "sass_stl",
                            "constants",
                        )
                    }
                ),
            )
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "sweep.json"), "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)
        best = {}
        for r in rows:
            if "ms" in r and (r["shape"] not in best or r["ms"] < best[r["shape"]]["ms"]):
                best[r["shape"]] = r
        for r in best.values():
            print("BEST", json.dumps(r))
        return 0
    gemm, bw = _ceilings()
    meta.update(gemm_tflops=gemm, copy_tbs=bw)
    print(json.dumps(meta), flush=True)
    for name in args.shapes:
        run_shape(name, gemm, bw, not args.no_flex, rows)
        write_results(rows, meta, args.out, quiet=True)  # partial results survive a time limit
    for name in args.backward:
        run_backward(name, rows)
    meta["kernels"] = kernel_report()
    write_results(rows, meta, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
