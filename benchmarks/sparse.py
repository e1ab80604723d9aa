"""Benchmark of block-sparse joint attention (issue 17 item 5) on one GPU: kernel time against kept fraction.

    python benchmarks/sparse.py --quick          # Mochi only, 100% and 30% kept: under 4 minutes on an H200
    python benchmarks/sparse.py                  # Mochi and SD3.5, 100/50/30/10% kept, fwd and fwd+bwd
    python benchmarks/sparse.py --e2e            # adds one forward of real-size Mochi (random weights)
    python benchmarks/sparse.py --e2e-only inductor frame   # only that forward, these variants
    python benchmarks/sparse.py --merge a/sparse-e2e.json b/sparse-e2e.json --out DIR   # one table of two runs
    python benchmarks/sparse.py --smoke          # tiny shapes on CPU (reference runtime): checks this script
    python benchmarks/sparse.py --estimator-only # the estimator's cost only (torch path and Triton kernels)
    python benchmarks/sparse.py --shapes mochi_848x480x163 --fractions 0.3 --tile 128 128 --lean --no-flex
                                                 # one mask: ours and the dense op only (a short GPU run)

Per shape (bf16; CUDA-event timing through triton.testing.do_bench, median, L2 flushed between repetitions):
- masks: the estimator's (`estimate_block_mask(q, k, keep=f)`, kept blocks full) at each kept fraction f, with
  128x64 tiles (`--tile`), and 128x16 tiles at 30% (FG-Attn's finer granularity); a static pattern (Mochi: a symmetric
  frame window over its 28 latent frames of 1590 tokens; SD3.5: a 2-D tile window over its 64x64 grid);
- ours: `joint_attention(..., block_mask=layout, runtime="triton")` (layout built once, outside the timing),
  which runs the Gluon forward and backward on Hopper where they can (the row's `kernel` and
  `backward_kernel`; the Triton kernels are then timed too, in a row of their own, and with key blocks of 128
  or more the Gluon backward's CTAs of 64 keys, its schedule for 64-key blocks);
  our dense op (`runtime="auto"`: what users get without a mask); `torch.compile(flex_attention)` with the same
  mask on the pre-concatenated sequence (text dense, padded text keys masked; the cat is not timed, which
  favours flex); forward, and forward + backward (gradients of out and joint_out);
- the estimator's cost (`jointattn::estimate_kv_blocks`, what the compile pass runs per layer and call) against
  the dense forward time of the same layer: as a call (host launches included) and replayed from a CUDA graph
  (its GPU time alone, what it costs inside a model whose host runs ahead);
- the output error of each sparse variant against the dense op (relative Frobenius norm over both outputs), and
  ours against flex with the same mask (a cross-check of the two implementations: bf16 noise expected).
Quality on trained weights cannot be measured here (no weights can be downloaded): the error curves are what
random inputs give. Writes results/sparse[-quick].json and .png, prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from unittest import mock

import torch

SHAPES = {
    # name: (b, nh, N, L, dh, valid text, static pattern)
    "mochi_848x480x163": (1, 24, 44520, 256, 128, 100, "frame_window"),
    "sd35_1024": (2, 38, 4096, 333, 64, 333, "tile_window"),
}
SMOKE_SHAPES = {"tiny": (1, 2, 300, 20, 32, 11, "frame_window")}
FRACTIONS = (1.0, 0.5, 0.3, 0.1)
TILE = (128, 64)
FINE_TILE = (128, 16)
FLEX_SMALL_TILES = {"BLOCK_M": 64, "BLOCK_N": 64, "num_stages": 2}


def _pattern(kind: str, n: int):
    from jointattn.sparse import frame_window, tile_window

    if kind == "frame_window":
        frame = 1590 if n == 44520 else 50  # Mochi: 28 latent frames of 30 x 53 tokens
        return frame_window(frame, 5, causal=False)
    side = int(round(n**0.5))
    return tile_window((1, side, side), (1, 37, 37))


class Timer:
    """Median ms: CUDA events through do_bench on a GPU, the host clock (3 runs) on the CPU smoke path."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def __call__(self, fn) -> float:
        if not self.cuda:
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
            return sorted(times)[1]
        from triton.testing import do_bench

        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        estimate = start.elapsed_time(end)
        return do_bench(fn, warmup=max(25, 2 * estimate), rep=max(100, 5 * estimate), return_mode="median")


def _rel(a, b) -> float:
    a, b = a.float(), b.float()
    return float(f"{((a - b).norm() / b.norm().clamp_min(1e-30)).item():.3g}")


_FLEX = {}


def _flex(cuda: bool):
    """flex_attention, compiled once per run on a GPU (a block mask is an input: new masks of one shape reuse it)."""
    from torch.nn.attention.flex_attention import flex_attention

    if cuda not in _FLEX:
        _FLEX[cuda] = torch.compile(flex_attention, dynamic=False) if cuda else flex_attention
    return _FLEX[cuda]


def _flex_setup(layout, n, l, lv, cuda):  # noqa: E741
    """flex_attention (compiled on a GPU) and a BlockMask over the joined sequence with the same mask: spatial
    pairs from the layout's blocks (and partial bits), text keys dense, padded text keys masked."""
    from jointattn.runtime.sparse_layout import block_maps
    from torch.nn.attention.flex_attention import create_block_mask

    bm_, hm = (max(t.shape[i] for t in layout.tensors) for i in (0, 1))
    full, slot = block_maps(layout.expanded(bm_, hm), n)
    bits = layout.expanded(bm_, hm).partial_bits
    # A layout of full blocks only (the estimator's) has no partial slots: no bits to read (indexing their empty
    # dimension failed flex's compile with an IndexError).
    has_partial = bits.shape[3] > 0
    qb_size, kb_size = layout.q_block, layout.kv_block

    def mask_mod(b, h, qi, ki):
        bb, hh = (b if bm_ > 1 else 0), (h if hm > 1 else 0)
        qs, ks = qi.clamp(max=n - 1), ki.clamp(max=n - 1)
        qb, kb = qs // qb_size, ks // kb_size
        spatial = full[bb, hh, qb, kb]
        if has_partial:
            s = slot[bb, hh, qb, kb]
            c = ks % kb_size
            word = bits[bb, hh, qb, s.clamp(min=0), qs % qb_size, c // 32]
            spatial = spatial | ((s >= 0) & (((word >> (c % 32)) & 1) == 1))
        text_key_valid = (ki - n) < lv
        return torch.where(ki < n, torch.where(qi < n, spatial, True), text_key_valid)

    s = n + l
    device = layout.kv_num_blocks.device
    block_mask = create_block_mask(mask_mod, bm_, hm, s, s, device=device, _compile=cuda)
    return _flex(cuda), block_mask


def _flex_row(layout, tensors, grads, lv, out, ours_fwd, ours_fb, timed, backward, cuda) -> dict:
    """Times flex_attention with the layout's mask on the joined sequence; its row's fields."""
    q, k, v, jq, jk, jv = tensors
    n, l = q.shape[2], jq.shape[2]  # noqa: E741
    try:
        flex, fbm = _flex_setup(layout, n, l, lv, cuda)
    except Exception as e:
        return dict(error=_error_text(e))
    qq, kk, vv = (torch.cat(p, 2) for p in ((q, jq), (k, jk), (v, jv)))
    # flex's default tiles for dh 128 asked for 331776 bytes of shared memory at Mochi's size on the H200 (limit
    # 232448) and failed to compile: smaller tiles (which divide its 128-token mask blocks) are the fallback.
    options, fo, failures = None, None, []
    for options in (None, FLEX_SMALL_TILES):
        try:
            with torch.no_grad():
                fo = flex(qq, kk, vv, block_mask=fbm, kernel_options=options)
            break
        except Exception as e:
            failures.append(_error_text(e, 120))
            torch._dynamo.reset()
    if fo is None:
        return dict(error=" / ".join(failures))
    ours_vs_flex = _rel(torch.cat([out[0], out[1]], 2), fo) if out is not None else None
    f_fwd, f_err = timed(lambda: flex(qq, kk, vv, block_mask=fbm, kernel_options=options))

    def flex_fb():
        leaves = [t.detach().requires_grad_() for t in (qq, kk, vv)]
        flex(*leaves, block_mask=fbm, kernel_options=options).backward(torch.cat(grads, 2))

    f_fb, f_err_fb = timed(flex_fb) if backward else (None, None)
    return dict(fwd_ms=f_fwd, fwd_bwd_ms=f_fb, kernel_options=options, default_failed=failures or None,
                ours_speedup_fwd=round(f_fwd / ours_fwd, 3) if f_fwd and ours_fwd else None,
                ours_speedup_fwd_bwd=round(f_fb / ours_fb, 3) if f_fb and ours_fb else None,
                ours_vs_flex_error=ours_vs_flex, error=f_err or f_err_fb)  # fmt: skip


def _error_text(e: Exception, width: int = 160) -> str:
    """A failed variant's error, one line, for its row."""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:width]}"


def _graphed(fn):
    """`fn` captured once in a CUDA graph (after a warm-up on a side stream); returns the graph's replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def _kernels(tensors, layout, logical_l) -> tuple[str, str]:
    """Which kernels run our sparse forward and backward of this call: "hopper" (Gluon) or "triton"."""
    from jointattn.runtime.ops.contract import make_call
    from jointattn.runtime.sparse_triton_runtime import backward_kernel, forward_kernel

    call = make_call(*tensors, "rear", None, None, logical_l, "reference")
    return forward_kernel(call, layout, call.q, call.joint_q), backward_kernel(call, layout)


def run_shape(name, spec, args, rows, timer, cuda):
    from jointattn.runtime.ops.sparse import estimate_kv_blocks
    from jointattn.runtime.sparse_layout import spatial_layout
    from jointattn.sparse import estimate_block_mask

    import jointattn

    b, nh, n, l, dh, lv, pattern_kind = spec  # noqa: E741
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    runtime = "triton" if cuda else "reference"
    g = torch.Generator(device=device).manual_seed(0)
    make = lambda s: torch.randn(b, nh, s, dh, device=device, dtype=dtype, generator=g)
    q, k, v, jq, jk, jv = make(n), make(n), make(n), make(l), make(l), make(l)
    q = q + 0.5 * k  # some structure for the estimator to find (random q, k alone have flat attention)
    logical_l = torch.full((b,), lv, dtype=torch.int32, device=device) if lv < l else None
    grads = [torch.randn(b, nh, s, dh, device=device, dtype=dtype, generator=g) for s in (n, l)]

    def record(**row):
        row = dict(shape=name, **row)
        print(json.dumps(row), flush=True)
        rows.append(row)
        return row

    def timed(fn):
        try:
            return round(timer(fn), 4), None
        except Exception as e:  # a variant that fails is reported, not fatal
            return None, _error_text(e)

    def graph_timed(fn):
        """`timed` of fn's CUDA-graph replay; a capture that fails is reported as the row's error."""
        try:
            replay = _graphed(fn)
        except Exception as e:
            return None, _error_text(e)
        return timed(replay)

    def gpu_time(run) -> dict:
        """fwd+bwd replayed from a CUDA graph: the GPU's time alone, without the host's launches (which bound
        the timing of a call at small sizes)."""
        if not (cuda and args.backward):
            return {}
        ms, err = graph_timed(fwd_bwd(run))
        return dict(gpu_fwd_bwd_ms=ms, gpu_error=err) if err else dict(gpu_fwd_bwd_ms=ms)

    def fwd_bwd(run):
        def fn():
            inputs = [t.detach().requires_grad_() for t in (q, k, v, jq, jk, jv)]
            out = run(*inputs)
            torch.autograd.backward([out[0], out[1]], grads)

        return fn

    dense_run = lambda *t: jointattn.joint_attention(
        *t, logical_l=logical_l, runtime="auto" if cuda else "reference"
    )
    with torch.no_grad():
        dense_out = dense_run(q, k, v, jq, jk, jv)
    dense_fwd, err = timed(lambda: dense_run(q, k, v, jq, jk, jv))
    dense_fb, err_fb = timed(fwd_bwd(dense_run)) if args.backward else (None, None)
    record(variant="dense (our op)", kept=1.0, tile=None, fwd_ms=dense_fwd, fwd_bwd_ms=dense_fb,
           error=err or err_fb, **gpu_time(dense_run))  # fmt: skip

    def estimator_row(variant, estimate):
        """The estimator timed as a call and, on a GPU, replayed from a CUDA graph: as a call, a dozen small
        launches are host-bound when nothing else is queued, while inside a model the host runs ahead of the GPU
        and they overlap; the graph's replay is its GPU time alone."""
        ms, err = timed(estimate)
        gpu_ms, gpu_err = graph_timed(estimate) if cuda else (None, None)
        share = lambda t: round(t / dense_fwd, 4) if t and dense_fwd else None  # noqa: E731
        record(variant=variant, kept=None, tile=list(TILE), fwd_ms=ms, share_of_dense_fwd=share(ms),
               gpu_ms=gpu_ms, gpu_share_of_dense_fwd=share(gpu_ms), error=err or gpu_err)  # fmt: skip

    from jointattn.runtime.sparse_estimate import ESTIMATOR_ENV

    # Each implementation forced (JOINTATTN_ESTIMATOR), whatever the default picks at this size.
    labels = {
        "torch": "estimator (estimate_kv_blocks, keep=0.3)",
        "triton": "estimator, Triton kernels (keep=0.3)",
    }
    for kernels in ("torch", "triton") if cuda else ("torch",):
        with mock.patch.dict(os.environ, {ESTIMATOR_ENV: kernels}):  # the caller's setting back after
            estimator_row(labels[kernels], lambda: estimate_kv_blocks(q, k, 0.3, None, *TILE, None))

    if args.estimator_only:
        return
    tile = tuple(args.tile)
    cases = [(f, tile, "estimate") for f in args.fractions]
    if 0.3 in args.fractions and not args.lean:
        cases.append((0.3, FINE_TILE, "estimate"))
    if not args.lean:
        cases.append((None, tile, pattern_kind))
    flex_jobs = []
    for fraction, tile, source in cases:
        if source == "estimate":
            bm = estimate_block_mask(q, k, keep=fraction, block_size=tile)
            label = f"estimate(keep={fraction})"
        else:
            bm = _pattern(source, n).block_mask(n, device=device, block_size=tile)
            label = _pattern(source, n).name
        layout = spatial_layout(bm, n, device)
        kept = round(layout.kept_fraction(n), 4)
        sparse_run = lambda *t, layout=layout: jointattn.joint_attention(
            *t, logical_l=logical_l, block_mask=layout, runtime=runtime
        )
        with torch.no_grad():
            try:
                out = sparse_run(q, k, v, jq, jk, jv)
                error_vs_dense = _rel(torch.cat([out[0], out[1]], 2), torch.cat(dense_out[:2], 2))
            except Exception as e:
                out, error_vs_dense = None, _error_text(e)
        fwd, err = timed(lambda run=sparse_run: run(q, k, v, jq, jk, jv))
        fb, err_fb = timed(fwd_bwd(sparse_run)) if args.backward else (None, None)
        kernel, bwd_kernel = ("reference", "reference")
        if cuda:
            kernel, bwd_kernel = _kernels((q, k, v, jq, jk, jv), layout, logical_l)
        record(variant=f"ours {label}", kernel=kernel, backward_kernel=bwd_kernel, kept=kept, tile=list(tile),
               fwd_ms=fwd, fwd_bwd_ms=fb,
               vs_dense_fwd=round(fwd / dense_fwd, 3) if fwd and dense_fwd else None,
               vs_dense_fwd_bwd=round(fb / dense_fb, 3) if fb and dense_fb else None,
               error_vs_dense=error_vs_dense, error=err or err_fb, **gpu_time(sparse_run))  # fmt: skip
        if bwd_kernel == "hopper" and tile[1] % 128 == 0 and args.backward:
            # The Gluon backward's CTAs of 64 keys (its schedule for 64-key blocks) on the same mask: what the
            # 128-key CTAs gain.
            from jointattn.kernels import configs

            narrow = lambda dh, kv_block=64: configs.hopper_sparse_backward_config(dh)  # noqa: E731
            with mock.patch("jointattn.runtime.sparse_hopper_launch.hopper_sparse_backward_config", narrow):
                n_fb, n_err = timed(fwd_bwd(sparse_run))
                n_gpu = gpu_time(sparse_run)
            record(variant=f"ours {label}, 64-key backward CTAs", kernel=kernel, backward_kernel=bwd_kernel,
                   kept=kept, tile=list(tile), fwd_bwd_ms=n_fb,
                   vs_dense_fwd_bwd=round(n_fb / dense_fb, 3) if n_fb and dense_fb else None, error=n_err,
                   **n_gpu)  # fmt: skip
        # The Triton sparse kernels on the same mask: what the Gluon ones replaced.
        if "hopper" in (kernel, bwd_kernel) and not args.lean:
            with mock.patch.dict(os.environ, {"JOINTATTN_HOPPER_KERNEL": "0"}):
                t_fwd, t_err = timed(lambda run=sparse_run: run(q, k, v, jq, jk, jv))
                t_fb, t_err_fb = timed(fwd_bwd(sparse_run)) if args.backward else (None, None)
            record(variant=f"ours {label}, Triton kernels", kernel="triton", backward_kernel="triton", kept=kept,
                   tile=list(tile), fwd_ms=t_fwd, fwd_bwd_ms=t_fb,
                   vs_dense_fwd=round(t_fwd / dense_fwd, 3) if t_fwd and dense_fwd else None,
                   vs_dense_fwd_bwd=round(t_fb / dense_fb, 3) if t_fb and dense_fb else None,
                   error=t_err or t_err_fb)  # fmt: skip
        if args.no_flex or (args.flex_at is not None and (source != "estimate" or fraction != args.flex_at)):
            continue  # --quick: flex only at 30% kept with the estimator's mask (each flex compile takes a while)
        if tile == FINE_TILE:
            continue  # flex's own blocks are 128 x 128 whatever the mask's granularity: one row per mask
        flex_jobs.append((label, layout, kept, out, fwd, fb))
    # FlexAttention last: its compile at Mochi's size takes minutes, and a run cut short keeps our rows.
    for label, layout, kept, out, fwd, fb in flex_jobs:
        record(variant=f"flex {label}", kept=kept, tile=[128, 128], **_flex_row(
            layout, (q, k, v, jq, jk, jv), grads, lv, out, fwd, fb, timed, args.backward, cuda))  # fmt: skip
        if cuda:
            torch.cuda.empty_cache()


E2E_VARIANTS = ("inductor", "dense", "frame", "estimate")


def run_e2e(rows, cuda, which=E2E_VARIANTS, layers=None):
    """One forward of real-size Mochi (random weights): inductor, jointattn dense, frame window, estimator
    (`which` of them: each compile of the real model takes minutes); `layers` keeps only its first blocks
    (a shorter check of the same layer sizes, not the model's end-to-end time)."""
    sys.path.insert(0, os.path.dirname(__file__))
    import models  # benchmarks/models.py
    from jointattn.sparse import Sparsity, estimate, frame_window

    from jointattn import model_zoo

    device = torch.device("cuda" if cuda else "cpu")
    size = "real" if cuda else "tiny"
    case = model_zoo.build("mochi", size, device=device, dtype=torch.bfloat16 if cuda else torch.float32)
    if layers:
        case.model.transformer_blocks = case.model.transformer_blocks[:layers]
        size += f", first {layers} layers"
    frame = 1590 if cuda else 6
    variants = {
        "inductor": None,
        "jointattn dense": "dense",
        "jointattn frame_window(5, symmetric), first 2 layers dense": Sparsity(
            frame_window(frame, 5, causal=False), dense_layers=2
        ),
        "jointattn estimate(keep=0.3), first 2 layers dense": Sparsity(estimate(keep=0.3), dense_layers=2),
    }
    variants = {name: v for key, (name, v) in zip(E2E_VARIANTS, variants.items()) if key in which}
    eager = None
    with torch.no_grad():
        eager = case.model(**case.inputs).sample
    for name, sparsity in variants.items():
        torch._dynamo.reset()
        try:
            with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
                if sparsity is None:
                    compiled = torch.compile(case.model, backend="inductor")
                else:
                    options = {} if sparsity == "dense" else {"sparsity": sparsity}
                    compiled = torch.compile(case.model, backend="jointattn", options=options)
                row, _ = models._measure(name, lambda fn=compiled: fn(**case.inputs), 3, device, eager)
        except Exception as e:
            row = dict(variant=name, error=_error_text(e, 200))
        row["shape"] = f"e2e mochi {size}"
        print(json.dumps(row), flush=True)
        rows.append(row)
    _e2e_speedups(rows)


def _e2e_speedups(rows) -> None:
    """speedup_vs_inductor of each end-to-end row, against the inductor row of the same shape."""
    e2e = [r for r in rows if r.get("shape", "").startswith("e2e") and "ms" in r]
    inductor = {r["shape"]: r["ms"] for r in e2e if r["variant"] == "inductor"}
    for r in e2e:
        if r["shape"] in inductor:
            r["speedup_vs_inductor"] = round(inductor[r["shape"]] / r["ms"], 3)


def merge(paths, out: str) -> int:
    """One table of the rows of several runs' JSON (e.g. the end-to-end variants, one device call each: a
    compile of the real model takes minutes), speedups against the inductor row of any of them; written as
    `sparse-merged.{json,md}` under `out`, each run's meta kept."""
    runs = [json.load(open(p)) for p in paths]
    rows = [r for run in runs for r in run["rows"]]
    _e2e_speedups(rows)
    text = table(rows)
    print(text)
    os.makedirs(out, exist_ok=True)
    metas = [dict(run["meta"], source=os.path.basename(p)) for p, run in zip(paths, runs)]
    with open(os.path.join(out, "sparse-merged.json"), "w") as f:
        json.dump(dict(meta=metas, rows=rows), f, indent=1)
    with open(os.path.join(out, "sparse-merged.md"), "w") as f:
        f.write("\n".join(map(str, metas)) + f"\n\n{text}\n")
    return 0


def table(rows) -> str:
    lines = ["| shape | variant | kept | tile | fwd ms | fwd+bwd ms | vs dense fwd | vs dense f+b | ours faster (f / f+b) | error vs dense |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in rows:
        if r.get("shape", "").startswith("e2e"):
            continue
        tile = "x".join(map(str, r["tile"])) if r.get("tile") else ""
        faster = ""
        if "ours_speedup_fwd" in r:
            faster = f"{r.get('ours_speedup_fwd')} / {r.get('ours_speedup_fwd_bwd')}"
        err = r.get("error_vs_dense", r.get("ours_vs_flex_error", ""))
        note = f" ({r['error'][:50]})" if r.get("error") else ""
        share = (
            f" (share of dense fwd {r['share_of_dense_fwd']})"
            if r.get("share_of_dense_fwd") is not None
            else ""
        )
        if r.get("gpu_ms") is not None:
            share += f" (GPU time from a CUDA graph {r['gpu_ms']} ms, {r['gpu_share_of_dense_fwd']})"
        if r.get("gpu_fwd_bwd_ms") is not None:
            share += f" (fwd+bwd GPU time from a CUDA graph {r['gpu_fwd_bwd_ms']} ms)"
        lines.append(f"| {r['shape']} | {r['variant']}{note}{share} | {r.get('kept', '')} | {tile} | "
                     f"{r.get('fwd_ms', '')} | {r.get('fwd_bwd_ms', '')} | {r.get('vs_dense_fwd', '')} | "
                     f"{r.get('vs_dense_fwd_bwd', '')} | {faster} | {err} |")  # fmt: skip
    e2e = [r for r in rows if r.get("shape", "").startswith("e2e")]
    if e2e:
        lines += [
            "",
            "| end to end | variant | ms | speedup vs inductor | rel err vs eager |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for r in e2e:
            lines.append(f"| {r['shape']} | {r['variant']} | {r.get('ms', r.get('error', ''))} | "
                         f"{r.get('speedup_vs_inductor', '')} | {r.get('rel_err_vs_eager', '')} |")  # fmt: skip
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = sorted({r["shape"] for r in rows if not r["shape"].startswith("e2e")})
    fig, axes = plt.subplots(len(shapes), 2, figsize=(11, 4 * len(shapes)), squeeze=False)
    for row_axes, shape in zip(axes, shapes):
        for ax, key, title in zip(row_axes, ("fwd_ms", "fwd_bwd_ms"), ("forward", "forward + backward")):
            sel = [r for r in rows if r["shape"] == shape and r.get(key)]
            for prefix, color in (("ours estimate", "tab:orange"), ("flex estimate", "tab:gray")):
                pts = sorted(
                    (r["kept"], r[key])
                    for r in sel
                    if r["variant"].startswith(prefix) and r.get("tile") != list(FINE_TILE)
                )
                if pts:
                    ax.plot(*zip(*pts), "o-", color=color, label=prefix.split()[0])
            fine = [(r["kept"], r[key]) for r in sel if r.get("tile") == list(FINE_TILE)]
            if fine:
                ax.plot(*zip(*fine), "s", color="tab:red", label="ours, 128x16 tiles")
            dense = [r[key] for r in sel if r["variant"].startswith("dense")]
            if dense:
                ax.axhline(dense[0], color="tab:blue", ls="--", label="our dense op")
            ax.set_title(f"{shape}: {title}")
            ax.set_xlabel("kept fraction of spatial key blocks")
            ax.set_ylabel("ms")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="Mochi only, 100%% and 30%% kept (< 4 min, H200)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU, reference runtime")
    parser.add_argument("--shapes", nargs="*", default=None)
    parser.add_argument("--fractions", nargs="*", type=float, default=None)
    parser.add_argument("--no-backward", dest="backward", action="store_false")
    parser.add_argument(
        "--no-flex", action="store_true", help="skip FlexAttention (its compiles take a while)"
    )
    parser.add_argument(
        "--estimator-only", action="store_true", help="the dense forward and the estimator rows only"
    )
    parser.add_argument("--tile", nargs=2, type=int, default=list(TILE), help="mask blocks (q, kv)")
    parser.add_argument(
        "--lean", action="store_true", help="estimated masks only (no 128x16, pattern, Triton rows)"
    )
    parser.add_argument("--e2e", action="store_true", help="also one forward of real-size Mochi")
    parser.add_argument(
        "--e2e-only", nargs="*", choices=E2E_VARIANTS, default=None,
        help="only the end-to-end Mochi forward, these variants (all without names)",
    )  # fmt: skip
    parser.add_argument("--e2e-layers", type=int, default=None, help="keep only Mochi's first K blocks")
    parser.add_argument("--merge", nargs="+", default=None, help="only merge these runs' JSON into one table")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    args.backward = args.backward and not args.estimator_only
    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        print("no CUDA device: run with --smoke for the CPU check of this script", file=sys.stderr)
        return 2
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    names = args.shapes or (list(shapes)[:1] if args.quick else list(shapes))
    args.fractions = args.fractions or ([1.0, 0.3] if args.quick else list(FRACTIONS))
    args.flex_at = 0.3 if args.quick else None
    rows: list = []
    t0 = time.perf_counter()
    timer = Timer(cuda)
    for name in names if args.e2e_only is None else ():
        run_shape(name, shapes[name], args, rows, timer, cuda)
    if args.e2e or args.e2e_only is not None:
        run_e2e(rows, cuda, args.e2e_only or E2E_VARIANTS, args.e2e_layers)
    import triton

    meta = dict(
        device=torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        torch=torch.__version__, triton=triton.__version__, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        mode="smoke" if args.smoke else "quick" if args.quick else "full", seconds=round(time.perf_counter() - t0, 1),
    )  # fmt: skip
    text = table(rows)
    print(text)
    stem = "sparse" + ("-smoke" if args.smoke else "-quick" if args.quick else "")
    stem += "-estimator" if args.estimator_only else ""
    stem += "-e2e" if args.e2e_only is not None else ""
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, stem + ".json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    with open(os.path.join(args.out, stem + ".md"), "w") as f:
        f.write(f"{meta}\n\n{text}\n")
    if any(not r.get("shape", "").startswith("e2e") for r in rows):  # the kernel rows are what it plots
        try:
            plot(rows, os.path.join(args.out, stem + ".png"))
        except Exception as e:
            print("plot skipped:", e)
    print(f"total {meta['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
