"""Never slower: the op (runtime="auto") against every PyTorch way to compute the same thing, over a grid of
head sizes, sequence lengths, batch*heads, dtypes and padding, forward and forward+backward, in one run.

    python benchmarks/never_slower.py --out benchmarks/results            # the grid, table, JSON, plot
    python benchmarks/never_slower.py --quick                             # a few points (smoke test)
    python benchmarks/never_slower.py --points 1,24,44520,256,128,100       # chosen points (Mochi: 100 text valid)
    python benchmarks/never_slower.py --write-table runtime/dispatch_measurements.json
    python benchmarks/never_slower.py --points 1,24,4096,512,128 --update-table runtime/dispatch_measurements.json
    python benchmarks/never_slower.py --table-rows r/1/t.json r/2/t.json --update-table runtime/dispatch_measurements.json
                                                      # shards' --write-table rows merged into the table (no GPU)
    python benchmarks/never_slower.py --shard 2/3 --out $OUT/2                 # a third of the grid (one call)
    python benchmarks/never_slower.py --merge r/1/never_slower.json r/2/never_slower.json r/3/never_slower.json

Per point it times, with CUDA events (triton.testing.do_bench, median):
- ours: `jointattn.joint_attention(..., runtime="auto")`, what users get (host overhead included);
- each of our paths alone, forced with JOINTATTN_DISPATCH (forward and backward: hopper, triton, sdpa; a path
  that cannot run a point is left out), and forward + backward with both passes on sdpa (the eager shortcut:
  the unfused graph under PyTorch's autograd): the measurements the dispatcher's table is made of
  (`--write-table`, or `--update-table` to merge chosen points into it);
- PyTorch: cat -> SDPA -> slice with each SDPA backend (default choice, cuDNN, flash, efficient) for unpadded
  text; for padded text, SDPA with a [b,1,1,S] key mask and "unpad": the valid text keys cut out before a
  single SDPA (every query row kept, as the op computes them, so it is the same function);
- forward+backward: the outputs' backward with fixed random gradients, after the forward, per iteration.
PyTorch's ways and ours are timed one after another; with `--rounds R`, R times each in rotated order, keeping
each one's median (at host-bound points one timing of the same kernels moves 3-6x from the next).
Writes `never_slower.json` (rows: shape, pass, ours_ms, best_ms, best_name, ratio = best/ours, TFLOP/s, every
path's ms) and `never_slower.png` under --out, and prints the table; the last line counts the points slower than
the best PyTorch path by more than 3%.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

SDPA_BACKENDS = ("default", "cudnn", "flash", "efficient")


def coarse_grid():
    """The dispatcher's table: every head size on a coarse grid of sizes, per-path times only."""
    points = []
    for dh in (64, 96, 128, 256):
        for n in (256, 1024, 4096, 16384):
            for l in (77, 512):  # noqa: E741
                for b, nh in ((1, 8), (2, 24)) if n < 16384 else ((1, 24),):
                    for padded in (False, True):
                        points.append((b, nh, n, l, dh, torch.bfloat16, padded))
    return points


def grid(quick: bool):
    """(b, nh, N, L, dh, dtype, padded) points: the issue's sweep, pruned to one run's budget (long sequences
    only at small b*nh, fp16 on a subset)."""
    if quick:
        return [(1, 8, 1024, 77, 64, torch.bfloat16, False), (1, 8, 1024, 256, 128, torch.bfloat16, True)]
    points = []
    for dh in (64, 96, 128, 256):
        for n in (256, 1024, 4096, 16384, 44520):
            for l in (0, 77, 256, 512):  # noqa: E741
                for b, nh in ((1, 8), (2, 24)):
                    if n >= 16384 and b * nh > 24:
                        continue  # the largest grids run at Mochi's b*nh only (time budget)
                    if n == 44520 and (dh not in (128,) or l != 256):
                        continue
                    if n == 16384 and l not in (77, 512):
                        continue
                    for padded in (False, True):
                        if padded and l == 0:
                            continue
                        points.append(
                            (b if n < 16384 else 1, nh if n < 16384 else 24, n, l, dh, torch.bfloat16, padded)
                        )
    for n, l, dh in ((1024, 333, 64), (4096, 512, 128), (4096, 256, 256)):  # noqa: E741
        for padded in (False, True):
            points.append((2, 24, n, l, dh, torch.float16, padded))
    return sorted(set(points), key=lambda p: (p[4], p[2], p[3], p[0] * p[1], str(p[5]), p[6]))


# Largest relative difference from PyTorch's path that still counts as the same function: a few times half
# precision's rounding, far below what a wrong result gives.
DIFFERENT = 5e-2


def _bench(fn, budget_ms: float) -> float | None:
    from triton.testing import do_bench

    try:
        fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        estimate = start.elapsed_time(end)
        return do_bench(
            fn, warmup=max(5, 2 * estimate), rep=max(budget_ms, 5 * estimate), return_mode="median"
        )
    except Exception as e:  # a backend that does not take this point: no time, not a failure of the run
        print(f"    ({type(e).__name__}: {str(e).splitlines()[0][:100]})", file=sys.stderr)
        return None


@contextlib.contextmanager
def _env(name, value):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _backend(name):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if name == "default":
        return contextlib.nullcontext()
    return sdpa_kernel(
        {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
         "efficient": SDPBackend.EFFICIENT_ATTENTION}[name]
    )  # fmt: skip


def timed_in_rounds(variants: dict, rounds: int, bench) -> dict:
    """{name: median ms} of each variant timed `rounds` times, the order rotated each round so that no variant
    always runs first or right after another (at host-bound points baselines that run the same kernels moved 3-6x
    between consecutive timings); a variant that fails a round (bench returns None) has no time and is not
    timed again."""
    names = list(variants)
    samples = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)] if names else ():
            if None not in samples[name]:
                samples[name].append(bench(variants[name]))
    return {name: None if not got or None in got else statistics.median(got) for name, got in samples.items()}


def run_point(point, budget_ms, measure_paths=True, baselines_too=True, valid=None, rounds=1):
    """Times one point; a padded point's valid text length is `valid` (default 30% of L). PyTorch's ways and ours
    are timed together, `rounds` times in rotated order (`timed_in_rounds`)."""
    import jointattn

    b, nh, n, l, dh, dtype, padded = point  # noqa: E741
    l_valid = (valid if valid is not None else max(1, (l * 3) // 10)) if padded else l
    g = torch.Generator(device="cuda").manual_seed(0)

    def make(s):  # the model layout: [b, S, nh, dh] memory, seen as [b, nh, S, dh]
        return torch.randn(b, s, nh, dh, device="cuda", dtype=dtype, generator=g).transpose(1, 2)

    q, k, v, jq, jk, jv = (make(s) for s in (n, n, n, l, l, l))
    inputs = (q, k, v, jq, jk, jv)
    logical_l = torch.full((b,), l_valid, device="cuda", dtype=torch.int32) if padded else None
    go, gjo = torch.randn_like(q), torch.randn_like(jq)
    s_valid = n + l_valid
    flops = 4 * b * nh * (n + l) * s_valid * dh
    results = []

    def with_grad(ts):
        return [t.detach().requires_grad_() for t in ts]

    # ours, as users get it
    def ours_fwd(ts=inputs):
        return jointattn.joint_attention(*ts, logical_l=logical_l)

    grad_inputs = with_grad(inputs)

    def ours_fwd_bwd():
        o, jo, _ = jointattn.joint_attention(*grad_inputs, logical_l=logical_l)
        _gradients((o, jo), grad_inputs, (go, gjo))

    # each of our paths alone (the dispatcher's measurements)
    paths = {"forward": {}, "backward": {}}
    for path in ("hopper", "triton", "sdpa") if measure_paths else ():
        with _env("JOINTATTN_DISPATCH", f"forward={path}"):
            paths["forward"][path] = _bench(ours_fwd, budget_ms)
    out, joint_out, lse = ours_fwd()
    for path in ("hopper", "triton", "sdpa") if measure_paths else ():
        with _env("JOINTATTN_DISPATCH", f"backward={path}"):
            paths["backward"][path] = _bench(
                lambda: torch.ops.jointattn.joint_attention_backward(
                    go, gjo, None, *inputs, out, joint_out, lse, None, None, logical_l, "auto"
                ),
                budget_ms,
            )

    if measure_paths:
        # the step as the unfused graph runs it (the shortcut): `dispatch.choose_training`'s rows
        paths["fwd+bwd"] = {}
        with _env("JOINTATTN_DISPATCH", "sdpa"):
            paths["fwd+bwd"]["sdpa"] = _bench(ours_fwd_bwd, budget_ms)

    # PyTorch's ways
    baselines = {"forward": {}, "fwd+bwd": {}}
    if not baselines_too:
        return [], paths
    if not padded:
        for backend in SDPA_BACKENDS:

            def cat_sdpa(ts=inputs, backend=backend):
                with _backend(backend):
                    return _cat_sdpa(ts, n)

            grad_copies = with_grad(inputs)

            def cat_sdpa_bwd(backend=backend, ts=grad_copies):
                o, jo = cat_sdpa(ts, backend)
                _gradients((o, jo), ts, (go, gjo))

            baselines["forward"][f"cat_sdpa[{backend}]"] = cat_sdpa
            baselines["fwd+bwd"][f"cat_sdpa[{backend}]"] = cat_sdpa_bwd
    else:
        mask = torch.cat([torch.ones(b, n, dtype=torch.bool, device="cuda"),
                          torch.arange(l, device="cuda")[None, :] < logical_l[:, None]], 1)[:, None, None, :]  # fmt: skip

        def masked(ts=inputs):
            o = F.scaled_dot_product_attention(
                *(torch.cat([a, c], 2) for a, c in zip(ts[:3], ts[3:])), attn_mask=mask
            )
            return o[:, :, :n], o[:, :, n:]

        def unpad(ts=inputs):  # uniform text length here: one SDPA over the valid keys, every query row
            qq = torch.cat([ts[0], ts[3]], 2)
            kk = torch.cat([ts[1], ts[4][:, :, :l_valid]], 2)
            vv = torch.cat([ts[2], ts[5][:, :, :l_valid]], 2)
            o = F.scaled_dot_product_attention(qq, kk, vv)
            return o[:, :, :n], o[:, :, n:]

        for name, fn in (("masked_sdpa", masked), ("unpad_sdpa", unpad)):
            grad_copies = with_grad(inputs)

            def fwd_bwd(fn=fn, ts=grad_copies):
                o, jo = fn(ts)
                _gradients((o, jo), ts, (go, gjo))

            baselines["forward"][name] = fn
            baselines["fwd+bwd"][name] = fwd_bwd

    ours = {"forward": ours_fwd, "fwd+bwd": ours_fwd_bwd}
    variants = {(pass_, name): fn for pass_, fns in baselines.items() for name, fn in fns.items()}
    variants |= {(pass_, "ours"): fn for pass_, fn in ours.items()}
    times = timed_in_rounds(variants, rounds, lambda fn: _bench(fn, budget_ms))
    baselines = {pass_: {name: times[pass_, name] for name in fns} for pass_, fns in baselines.items()}
    ours = {pass_: times[pass_, "ours"] for pass_ in ours}
    chosen = _chosen_paths(inputs, padded)
    # What ours computed, against PyTorch's exact form of the same function (after the timings: whatever state
    # they left, a cuDNN graph cache included, is what a user's later call meets).
    reference = unpad if padded else lambda ts: _cat_sdpa(ts, n)
    difference = agreement(lambda ts: ours_fwd(ts)[:2], reference, inputs, (go, gjo))
    for pass_, work in (("forward", flops), ("fwd+bwd", 3.5 * flops)):
        timed = {k: t for k, t in baselines[pass_].items() if t is not None}
        best_name = min(timed, key=timed.get) if timed else None
        best = timed.get(best_name) if best_name else None
        mine = ours[pass_]
        results.append(
            dict(
                b=b,
                nh=nh,
                n=n,
                l=l,
                l_valid=l_valid,
                dh=dh,
                dtype=str(dtype).removeprefix("torch."),
                padded=padded,
                **{"pass": pass_},
                ours_ms=mine,
                best_ms=best,
                best_name=best_name,
                ratio=(best / mine) if (best and mine) else None,
                ours_tflops=(work / mine / 1e9) if mine else None,
                baselines_ms=baselines[pass_],
                chosen=chosen,  # the dispatcher's path per pass ("ours" runs these)
                rel_diff_vs_pytorch=difference,  # outputs and six gradients, largest (`agreement`)
                paths_ms=paths,  # each of our paths alone, per pass (empty with --no-paths)
            )  # fmt: skip
        )
    return results, paths


def _cat_sdpa(ts, n):
    """cat -> SDPA (PyTorch's choice of kernel, or the one a surrounding `_backend` allows) -> slice."""
    o = F.scaled_dot_product_attention(*(torch.cat([a, c], 2) for a, c in zip(ts[:3], ts[3:])))
    return o[:, :, :n], o[:, :, n:]


def agreement(ours, reference, inputs, cotangents) -> float:
    """The largest relative difference (norm) between two ways of computing joint attention: out, joint_out and
    the six gradients for `cotangents`, each from fresh leaves. Both in the inputs' dtype, so about its rounding
    (bf16: ~1e-2) where they agree; a wrong path shows as O(1)."""

    def run(fn):
        leaves = [t.detach().requires_grad_() for t in inputs]
        outputs = fn(leaves)
        grads = _gradients(outputs, leaves, cotangents)
        return [*outputs, *(torch.zeros_like(t) if g is None else g for g, t in zip(grads, leaves))]

    def rel(a, b):
        a, b = a.detach().float(), b.detach().float()
        return float((a - b).norm() / b.norm().clamp_min(1e-30))

    return max(rel(a, b) for a, b in zip(run(ours), run(reference), strict=True))


def _gradients(outputs, inputs, cotangents):
    """The inputs' gradients, returned rather than accumulated into `.grad`: a model's q, k and v are not leaves,
    and the per-pass backward rows time no accumulation either (since the twelfth session's step rows)."""
    return torch.autograd.grad(outputs, inputs, cotangents, allow_unused=True)


def _chosen_paths(inputs, padded):
    """The dispatcher's choice per pass for these tensors, as the op's call makes it, and for a step with
    autograd ("step": "sdpa" where the unfused graph runs both passes, `dispatch.choose_training`)."""
    from jointattn.runtime import dispatch

    scale = inputs[0].shape[-1] ** -0.5
    chosen = {
        name: dispatch.choose(dispatch.describe_tensors(inputs, scale, padded, backward=backward)).path
        for name, backward in (("forward", False), ("backward", True))
    }
    chosen["step"] = dispatch.choose_training(dispatch.describe_meta(inputs[0], inputs[3], padded)).path
    return chosen


def table_rows(point, paths, arch):
    b, nh, n, l, dh, dtype, padded = point  # noqa: E741
    common = dict(
        arch=arch, dtype=str(dtype).removeprefix("torch."), dh=dh, b_nh=b * nh, n=n, l=l, padded=padded
    )
    return [
        dict(common, ms=paths[p], **{"pass": p}) for p in ("forward", "backward", "fwd+bwd") if p in paths
    ]


def update_table(path, rows, env, source):
    """Merge `rows` into the table at `path`: a measured point replaces the row of the same point and pass, the
    rest is kept; the update is recorded under "updates" (env, row count, source)."""
    with open(path) as f:
        table = json.load(f)

    def key(r):
        return tuple(r[k] for k in ("arch", "dtype", "dh", "b_nh", "n", "l", "padded", "pass"))

    new = {key(r): r for r in rows}
    table["rows"] = [r for r in table.get("rows", []) if key(r) not in new] + list(new.values())
    table.setdefault("updates", []).append(dict(env=env, rows=len(new), source=source))
    with open(path, "w") as f:
        json.dump(table, f, indent=1)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 5), sharey=True)
    for ax, pass_ in zip(axes, ("forward", "fwd+bwd")):
        sel = [r for r in rows if r["pass"] == pass_ and r["ratio"]]
        x = range(len(sel))
        ax.bar(
            x,
            [r["ratio"] for r in sel],
            color=["tab:green" if r["ratio"] >= 0.97 else "tab:red" for r in sel],
        )
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(0.97, color="r", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_title(f"{pass_}: best PyTorch / ours (>1: ours faster)")
        ax.set_xticks(list(x))
        ax.set_xticklabels([f"{r['dh']}/{r['n']}/{r['l']}/{r['b'] * r['nh']}{'p' if r['padded'] else ''}" for r in sel],
                           rotation=90, fontsize=5)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def other_gpu_processes() -> list[int] | None:
    """Process ids of other compute processes on the GPUs (nvidia-smi), or None where it cannot tell. Why: the
    fourteenth session's two outliers (Flux's step 2.35 ms against 1.73-1.86, the padded forward 0.67 against
    0.38) came in the run that followed the GPU tests' eight workers directly."""
    import subprocess

    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return [int(x) for x in done.stdout.split() if x.strip().isdigit() and int(x) != os.getpid()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--budget-ms", type=float, default=40.0, help="do_bench repetition time per measurement"
    )
    parser.add_argument("--write-table", default=None, help="also write the dispatcher's table here")
    parser.add_argument(
        "--update-table",
        default=None,
        help="merge the measured points into this table (same point: replaced)",
    )
    parser.add_argument(
        "--table-rows", nargs="+", default=None,
        help="with --update-table, no GPU: merge these --write-table files' rows instead (shards of a grid)",
    )  # fmt: skip
    parser.add_argument("--limit-s", type=float, default=480.0, help="stop starting new points after this")
    parser.add_argument("--dh", default=None, help="only these head sizes, e.g. 64,128")
    parser.add_argument(
        "--points", nargs="+", default=None, metavar="B,NH,N,L,DH[,VALID]",
        help="these points only (bf16); a sixth number pads the text to that many valid tokens",
    )  # fmt: skip
    parser.add_argument("--max-n", type=int, default=None, help="only points with N at most this")
    parser.add_argument("--no-paths", action="store_true", help="skip timing each of our paths alone")
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="time PyTorch's ways and ours this many times each, in rotated order, and keep the medians",
    )  # fmt: skip
    parser.add_argument("--coarse", action="store_true", help="the dispatcher's coarse grid, paths only")
    parser.add_argument(
        "--shard", default=None, help="i/k: only every k-th point from the i-th (the grid over several calls)"
    )
    parser.add_argument(
        "--merge", nargs="+", default=None, help="combine shards' never_slower.json files into --out (no GPU)"
    )
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.out)
    if args.update_table and args.no_paths and not args.table_rows:
        raise SystemExit("--update-table: the table is made of each path's times, which --no-paths skips")
    if args.table_rows:
        if not args.update_table:
            raise SystemExit("--table-rows: name the table to merge them into with --update-table")
        for path in args.table_rows:
            with open(path) as f:
                part = json.load(f)
            update_table(
                args.update_table,
                part.get("rows", []),
                part.get("env"),
                f"benchmarks/never_slower.py shard {path}",
            )
        return None
    import triton

    import jointattn  # noqa: F401

    major, minor = torch.cuda.get_device_capability()
    arch = f"sm_{major}{minor}"
    env = dict(
        gpu=torch.cuda.get_device_name(), arch=arch, torch=torch.__version__, triton=triton.__version__,
        cudnn=torch.backends.cudnn.version(), python=platform.python_version(),
        dispatch_table=os.path.exists(os.path.join(os.path.dirname(jointattn.runtime.__file__), "dispatch_measurements.json")),
    )  # fmt: skip
    if args.shard:
        env["shard"] = args.shard
    env["rounds"] = args.rounds
    env["other_gpu_processes"] = other_gpu_processes()
    if env["other_gpu_processes"]:  # e.g. a test run's workers still exiting: every time would be shared
        print(f"warning: other processes on the GPU: {env['other_gpu_processes']}", file=sys.stderr)
    print(json.dumps(env))
    rows, table, t0 = [], [], time.time()
    points = coarse_grid() if args.coarse else grid(args.quick)
    valid = {}
    if args.points:
        points = []
        for text in args.points:
            numbers = [int(x) for x in text.split(",")]
            if len(numbers) not in (5, 6):
                raise SystemExit(f"--points: expected B,NH,N,L,DH[,VALID]; got {text!r}")
            points.append((*numbers[:5], torch.bfloat16, len(numbers) == 6))
            if len(numbers) == 6:
                valid[points[-1]] = numbers[5]
    if args.dh:
        points = [p for p in points if p[4] in {int(x) for x in args.dh.split(",")}]
    if args.max_n:
        points = [p for p in points if p[2] <= args.max_n]
    if args.shard:
        index, count = (int(x) for x in args.shard.split("/"))
        if not 1 <= index <= count:
            raise SystemExit(f"--shard: expected i/k with 1 <= i <= k; got {args.shard!r}")
        points = points[index - 1 :: count]
    for i, point in enumerate(points):
        if time.time() - t0 > args.limit_s:
            print(f"time limit: {len(points) - i} points not measured", file=sys.stderr)
            break
        results, paths = run_point(
            point, args.budget_ms, measure_paths=not args.no_paths, baselines_too=not args.coarse,
            valid=valid.get(point), rounds=args.rounds,
        )  # fmt: skip
        rows += results
        if not args.no_paths:
            table += table_rows(point, paths, arch)
        if args.coarse:
            print(point[:5], point[6], json.dumps(paths), flush=True)
        for r in results:
            ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
            print(f"{r['dh']:4d} {r['n']:6d} {r['l']:4d} {r['b'] * r['nh']:3d} {r['dtype']:8s} {'pad' if r['padded'] else '   '} "
                  f"{r['pass']:8s} ours {r['ours_ms'] or float('nan'):8.3f} best {r['best_ms'] or float('nan'):8.3f} "
                  f"{str(r['best_name']):22s} ratio {ratio}", flush=True)  # fmt: skip
        torch.cuda.empty_cache()
    if args.write_table:
        with open(args.write_table, "w") as f:
            json.dump(dict(env=env, rows=table), f, indent=1)
    if args.update_table:
        update_table(args.update_table, table, env, "benchmarks/never_slower.py " + " ".join(sys.argv[1:]))
    write_results(env, rows, args.out)


def merge(paths, out):
    """One never_slower.json (and plot, and summary) from the shards' files; each shard's env must agree."""
    envs, rows = [], []
    for path in paths:
        with open(path) as f:
            part = json.load(f)
        envs.append({k: v for k, v in part["env"].items() if k != "shard"})
        rows += part["rows"]
    if any(env != envs[0] for env in envs):
        raise SystemExit(f"--merge: the shards ran on different setups: {envs}")
    write_results(dict(envs[0], merged_from=len(paths)), rows, out)


def write_results(env, rows, out):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "never_slower.json"), "w") as f:
        json.dump(dict(env=env, rows=rows), f, indent=1)
    plot(rows, os.path.join(out, "never_slower.png"))
    slower = [r for r in rows if r["ratio"] is not None and r["ratio"] < 0.97]
    print(f"points: {len(rows)}; slower than the best PyTorch path by more than 3%: {len(slower)}")
    print(
        "| N | pass | rows | slower by > 3% | median ratio | lowest |\n| --- | --- | ---: | ---: | ---: | ---: |"
    )
    for (n, pass_), (count, slow, median, lowest) in summary(rows).items():
        print(f"| {n} | {pass_} | {count} | {slow} | {median:.2f} | {lowest:.2f} |")
    for r in slower:
        print(f"  SLOWER {_point_name(r)} {r['pass']}: ratio {r['ratio']:.2f} vs {r['best_name']}")
    different = [r for r in rows if r["pass"] == "forward" and r.get("rel_diff_vs_pytorch", 0.0) > DIFFERENT]
    print(
        f"points whose outputs or gradients differ from PyTorch's by more than {DIFFERENT}: {len(different)}"
    )
    for r in different:
        print(f"  DIFFERENT {_point_name(r)}: {r['rel_diff_vs_pytorch']:.3g} (the step ran {r['chosen']})")


def summary(rows) -> dict:
    """(N, pass) -> (rows, rows slower than the best PyTorch path by more than 3%, median ratio, lowest ratio),
    over the rows with a ratio: where the grid holds and where it does not, by size."""
    groups: dict = {}
    for r in rows:
        if r["ratio"] is not None:
            groups.setdefault((r["n"], r["pass"]), []).append(r["ratio"])
    return {
        key: (len(ratios), sum(x < 0.97 for x in ratios), statistics.median(ratios), min(ratios))
        for key, ratios in sorted(groups.items())
    }


def _point_name(r) -> str:
    return f"{r['dh']}/{r['n']}/{r['l']}/{r['b'] * r['nh']}/{r['dtype']}{'/pad' if r['padded'] else ''}"


if __name__ == "__main__":
    main()
