"""Sequence-parallel joint attention across GPUs (ring and all-to-all) against the single-GPU op.

    torchrun --nproc-per-node=2 benchmarks/ring_joint_attention.py             # NCCL: Mochi and Flux shapes
    torchrun --nproc-per-node=4 benchmarks/ring_joint_attention.py --shapes mochi_848x480x163
    torchrun --nproc-per-node=2 benchmarks/ring_joint_attention.py --smoke     # CPU, gloo, tiny shapes

What one run measures, per shape (bf16 on GPUs; forward only, as in inference):
- single: the op (`jointattn.joint_attention`) on the whole problem on one GPU; every rank runs it on its
  own GPU (the reference output for the checks), the time reported is the median over iterations and ranks;
- per strategy (ring, all-to-all): each rank's time per call (CUDA events; ranks lined up by a barrier and a
  synchronize before each iteration), the group's time (per iteration the slowest rank; median), speedup =
  single / group, scaling efficiency = speedup / P, effective TFLOP/s on valid tokens
  (4 * b * nh * S_valid^2 * dh / t, as in shared/baselines/anchor_bench.py);
- overlap. Ring: compute-only = the same loop with each rank's own K/V shard standing in for the remote ones
  (same work, same valid lengths, no communication) and comm-only = the P - 1 K/V shifts and the joint
  gather alone; hidden = (compute + comm - total) / comm, clipped to [0, 1]. All-to-all: compute-only = the
  local op on its head group; its communication is not overlapped, exposed = total - compute;
- the ranks' check (agreement.py: one all-gather of call descriptors, on by default): group_ms includes it;
  unchecked_ms is the group's time with check_ranks=False, check_ms the check alone (the same exchange,
  descriptor and verdict, without the attention; median, and check_min_ms the fastest iteration), the number
  to read: a difference of two medians is noisier;
- correctness: `out` gathered with `gather_sequence` (and lse, joint_out) against the single-GPU op; joint_out
  bitwise identical on every rank;
- the chooser's pick and its modelled volumes for the shape and P.
Results: a table on rank 0 and JSON (device, versions, environment, rows) written to
benchmarks/results/ring_joint_attention_<device>_P<P>.json (or --out).

NVLink multicast stays off (the lent multi-GPU machines require it): NCCL_NVLS_ENABLE=0,
TORCH_SYMM_MEM_DISABLE_MULTICAST=1 and NVSHMEM_DISABLE_NVLS=1 are set below, before anything initializes NCCL.
"""

from __future__ import annotations

import os

MULTICAST_OFF = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}
os.environ.update(MULTICAST_OFF)

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHAPES = {
    # name: (b, nh, N, L, dh, valid spatial, valid text)
    "mochi_848x480x163": (1, 24, 44520, 256, 128, 44520, 100),
    "flux_1024": (1, 24, 4096, 512, 128, 4096, 512),
}
SMOKE_SHAPES = {
    # The same structure at CPU sizes. Mochi-like: N not a multiple of 2, 3 or 4, padded text, nh = 6;
    # Flux-like: nh = 4, so that on 3 ranks one shape runs the all-to-all and the other skips it.
    "mochi_tiny": (1, 6, 43, 8, 16, 43, 3),
    "flux_tiny": (1, 4, 32, 8, 16, 32, 8),
}
STRATEGIES = ("ring", "ulysses")
TOLERANCE = {torch.bfloat16: 2e-2, torch.float32: 1e-4}  # max abs difference accepted against the single op


def _import_jointattn():
    """The package, installed or (on a bare machine) assembled from this checkout's folders."""
    try:
        import jointattn.distributed  # noqa: F401
    except ImportError:
        site = Path(tempfile.mkdtemp(prefix="jointattn-site-"))
        (site / "jointattn").mkdir()
        for f in (REPO / "jointattn").glob("*.py"):
            shutil.copy(f, site / "jointattn")
        for folder in ("compiler", "passes", "runtime", "kernels", "distributed"):
            (site / "jointattn" / folder).symlink_to(REPO / folder)
        sys.path.insert(0, str(site))
    import jointattn.distributed

    import jointattn

    return jointattn


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="CPU, gloo, float32, tiny shapes, reference runtime")
    p.add_argument("--shapes", nargs="+", default=None, help="names from SHAPES (SMOKE_SHAPES with --smoke)")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument(
        "--runtime", default=None, help="the op's runtime (default: auto on GPU, reference in --smoke)"
    )
    p.add_argument("--iters", type=int, default=None, help="timed iterations (default 20, 2 in --smoke)")
    p.add_argument(
        "--warmup", type=int, default=None, help="untimed iterations first (default 5, 1 in --smoke)"
    )
    p.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/ring_joint_attention_*.json)"
    )
    args = p.parse_args(argv)
    table = SMOKE_SHAPES if args.smoke else SHAPES
    args.shapes = args.shapes or list(table)
    unknown = [s for s in args.shapes if s not in table]
    if unknown:
        p.error(f"unknown shapes {unknown}; choose from {list(table)}")
    args.runtime = args.runtime or ("reference" if args.smoke else "auto")
    args.iters = args.iters or (2 if args.smoke else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 5)
    return args


class Bench:
    """One rank's view of the run: device, group, timers and collectives of Python values."""

    def __init__(self, smoke: bool):
        if "RANK" not in os.environ:
            sys.exit(
                "run under torchrun, e.g. `torchrun --nproc-per-node=2 benchmarks/ring_joint_attention.py"
                + (" --smoke`" if smoke else "`")
            )
        self.cuda = not smoke
        if self.cuda:
            local_rank = int(os.environ["LOCAL_RANK"])
            torch.cuda.set_device(local_rank)
            self.device = torch.device("cuda", local_rank)
            dist.init_process_group("nccl", device_id=self.device, timeout=datetime.timedelta(minutes=5))
        else:
            torch.set_num_threads(1)
            self.device = torch.device("cpu")
            dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=2))
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def barrier(self):
        self.sync()
        dist.barrier(device_ids=[self.device.index]) if self.cuda else dist.barrier()
        self.sync()

    def time_ms(self, fn, iters: int, warmup: int, lined_up: bool = True) -> list[float]:
        """This rank's milliseconds per call of `fn`, one entry per iteration."""
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(iters):
            if lined_up:
                self.barrier()
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return times

    def gather(self, value):
        """Every rank's `value` (any picklable), in rank order."""
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def broadcast_(self, t):
        dist.broadcast(t, src=0)
        return t


def _inputs(bench: Bench, shape, dtype, seed: int):
    """Full tensors, identical on every rank (made on rank 0's generator and broadcast)."""
    b, nh, n, l, dh, n_valid, l_valid = shape  # noqa: E741
    g = torch.Generator(device=bench.device).manual_seed(seed)
    make = lambda s: bench.broadcast_(
        torch.randn(b, nh, s, dh, generator=g, device=bench.device, dtype=dtype)
    )
    full = [make(n) for _ in range(3)] + [make(l) for _ in range(3)]
    logical_n = n_valid  # also excludes the padding the sharding adds
    logical_l = None if l_valid == l else l_valid
    return full, logical_n, logical_l


def _ring_parts(jd, bench, local, logical_n, logical_l, runtime):
    """Compute-only (no communication) and comm-only callables of the ring, for the overlap measurement."""
    from jointattn.distributed.comm import all_gather
    from jointattn.distributed.ring import RingTransport, ring_attention_steps

    class LocalTransport:
        """Each rank's own shard stands in for the remote ones: the ring's compute, no communication."""

        def shift(self, kv):
            return kv, lambda: None

        def gather(self, x):
            return x.expand(bench.world_size, *x.shape)

    def compute_only():
        return ring_attention_steps(
            *local, rank=bench.rank, world_size=bench.world_size, transport=LocalTransport(),
            logical_n=logical_n, logical_l=logical_l, scale=None, runtime=runtime,
        )  # fmt: skip

    q = local[0]
    kv = torch.stack([local[1], local[2]])
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    b, nh, _, dh = q.shape
    packed = torch.zeros(b, nh, local[3].shape[2], dh + 1, device=q.device, dtype=acc)
    transport = RingTransport(None)

    def comm_only():
        buffer = kv
        for _ in range(bench.world_size - 1):
            buffer, wait = transport.shift(buffer)
            wait()
        return all_gather(packed, None)

    return compute_only, comm_only


def _ulysses_compute_only(jointattn, bench, full, logical_n, logical_l, runtime):
    """The all-to-all strategy's local work: the op on this rank's head group over the whole padded sequence."""
    import jointattn.distributed as jd

    h = full[0].shape[1] // bench.world_size
    heads = slice(bench.rank * h, (bench.rank + 1) * h)
    n_pad = jd.padded_length(full[0].shape[2], bench.world_size)
    pad = lambda t: torch.nn.functional.pad(t[:, heads], (0, 0, 0, n_pad - t.shape[2])).contiguous()
    spatial = [pad(t) for t in full[:3]]
    joint = [t[:, heads].contiguous() for t in full[3:]]
    return lambda: jointattn.joint_attention(
        *spatial, *joint, logical_n=logical_n, logical_l=logical_l, runtime=runtime
    )


def _errors(jd, bench, n, result, reference):
    """Max abs differences of the gathered result against the single-device op, and the joint check."""
    out, joint_out, lse = result
    ref_out, ref_joint_out, ref_lse = reference
    n_local = out.shape[2]
    gathered_out = jd.gather_sequence(out, length=n)
    gathered_lse = jd.gather_sequence(lse[..., :n_local].contiguous(), length=n)
    finite = torch.isfinite(ref_lse)
    lse_all = torch.cat([gathered_lse, lse[..., n_local:]], dim=-1)
    copies = bench.gather(joint_out.float().cpu())
    return {
        "max_abs_err_out": (gathered_out.float() - ref_out.float()).abs().max().item(),
        "max_abs_err_joint_out": (joint_out.float() - ref_joint_out.float()).abs().max().item()
        if joint_out.numel()
        else 0.0,
        "max_abs_err_lse": (lse_all[finite] - ref_lse[finite]).abs().max().item(),
        "lse_inf_match": bool(torch.equal(torch.isfinite(lse_all), finite)),
        "joint_out_identical_on_all_ranks": all(torch.equal(c, copies[0]) for c in copies),
    }


def _check_alone(bench, local, strategy, logical_n, logical_l, runtime):
    """The ranks' check of one call without the call: descriptor, one all-gather, verdict."""
    from jointattn.distributed.agreement import CallArgs, Checked, checked_call
    from jointattn.runtime.validation import JointShape

    b, nh, n_local, dh = local[0].shape
    checked = Checked(JointShape(b, nh, n_local, local[3].shape[2], dh), strategy)
    args = CallArgs(tuple(local), logical_n, logical_l, None, runtime)
    entry = f"{strategy}_joint_attention"
    return lambda: checked_call(entry, None, bench.world_size, True, lambda: checked, args)


def _group_ms(bench: Bench, fn, args, fastest: bool = False):
    """The group's time per call (per iteration the slowest rank; median) and every rank's times; with
    `fastest`, also the fastest iteration's (on a loaded CPU machine, closer to the cost itself)."""
    per_rank = bench.gather(bench.time_ms(fn, args.iters, args.warmup))
    group = [max(it) for it in zip(*per_rank, strict=True)]
    return statistics.median(group), (min(group) if fastest else per_rank)


def _resolved_runtime(runtime: str, tensors) -> str:
    """The runtime the op runs for such tensors ("auto" resolved), so a fallback cannot go unnoticed."""
    from jointattn.runtime.registry import JointCall, forward_path

    return forward_path(runtime, JointCall(*tensors, 1.0, None, None))


def run_shape(jointattn, bench: Bench, name: str, shape, args, dtype) -> list[dict]:
    import jointattn.distributed as jd

    b, nh, n, l, dh, n_valid, l_valid = shape  # noqa: E741
    p, runtime = bench.world_size, args.runtime
    full, logical_n, logical_l = _inputs(bench, shape, dtype, seed=0)
    single = lambda: jointattn.joint_attention(
        *full, logical_n=logical_n, logical_l=logical_l, runtime=runtime
    )
    reference = single()
    single_times = bench.gather(bench.time_ms(single, args.iters, args.warmup, lined_up=False))
    single_ms = statistics.median(sum(single_times, []))
    local = [jd.shard_sequence(t, bench.rank, p).contiguous() for t in full[:3]] + full[3:]
    n_local = local[0].shape[2]
    choice = jd.choose_strategy(nh, n_local, l, p)
    flops = 4 * b * nh * (n_valid + l_valid) ** 2 * dh
    rows = []
    for strategy in args.strategies:
        row = dict(
            shape=name, b=b, nh=nh, N=n, L=l, dh=dh, n_valid=n_valid, l_valid=l_valid, dtype=str(dtype),
            world_size=p, n_local=n_local, strategy=strategy, runtime=runtime, auto_choice=choice.strategy,
            auto_reason=choice.reason, single_ms=round(single_ms, 4),
            single_runtime=_resolved_runtime(runtime, full),
        )  # fmt: skip
        if strategy == "ulysses" and not jd.ulysses_eligible(nh, p):
            rows.append({**row, "skipped": f"nh={nh} is not divisible by P={p}"})
            continue
        attend = jd.ring_joint_attention if strategy == "ring" else jd.ulysses_joint_attention
        call = lambda: attend(*local, logical_n=logical_n, logical_l=logical_l, runtime=runtime)  # noqa: B023
        row.update(_errors(jd, bench, n, call(), reference))
        group_ms, per_rank = _group_ms(bench, call, args)
        unchecked = lambda: attend(  # noqa: B023
            *local, logical_n=logical_n, logical_l=logical_l, runtime=runtime, check_ranks=False
        )
        unchecked_ms = _group_ms(bench, unchecked, args)[0]
        check_fn = _check_alone(bench, local, strategy, logical_n, logical_l, runtime)
        check_ms, check_min_ms = _group_ms(bench, check_fn, args, fastest=True)
        if strategy == "ring":
            compute_fn, comm_fn = _ring_parts(jd, bench, local, logical_n, logical_l, runtime)
            comm_ms = _group_ms(bench, comm_fn, args)[0]
            # The ring's typical block: this rank's shard, joint tensors of length 0 (steps 2 and later).
            row["block_runtime"] = _resolved_runtime(runtime, [*local[:3], *(t[:, :, :0] for t in local[3:])])
        else:
            compute_fn = _ulysses_compute_only(jointattn, bench, full, logical_n, logical_l, runtime)
            comm_ms = None
            row["block_runtime"] = _resolved_runtime(runtime, full)
        compute_ms = _group_ms(bench, compute_fn, args)[0]
        row.update(
            per_rank_ms=[round(statistics.median(t), 4) for t in per_rank],
            group_ms=round(group_ms, 4),
            speedup=round(single_ms / group_ms, 3),
            scaling_efficiency=round(single_ms / group_ms / p, 3),
            eff_tflops=round(flops / (group_ms * 1e-3) / 1e12, 2),
            compute_only_ms=round(compute_ms, 4),
            exposed_comm_ms=round(group_ms - compute_ms, 4),
            unchecked_ms=round(unchecked_ms, 4),
            check_ms=round(check_ms, 4),
            check_min_ms=round(check_min_ms, 4),
            check_fraction=round(check_ms / unchecked_ms, 4),
        )
        if comm_ms is not None:
            hidden = (compute_ms + comm_ms - group_ms) / comm_ms if comm_ms > 0 else 1.0
            row.update(
                comm_only_ms=round(comm_ms, 4), comm_hidden_fraction=round(min(1.0, max(0.0, hidden)), 3)
            )
        row["ok"] = (
            max(row["max_abs_err_out"], row["max_abs_err_joint_out"]) <= TOLERANCE[dtype]
            and row["lse_inf_match"]
            and row["joint_out_identical_on_all_ranks"]
        )
        rows.append(row)
    return rows


def _environment(bench: Bench, jointattn) -> dict:
    env = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        host=platform.node(),
        python=platform.python_version(),
        torch=torch.__version__,
        jointattn=jointattn.__version__,
        backend=dist.get_backend(),
        world_size=bench.world_size,
        env={k: os.environ.get(k) for k in MULTICAST_OFF},
    )
    if bench.cuda:
        import triton

        env.update(
            device=torch.cuda.get_device_name(),
            devices=bench.gather(torch.cuda.get_device_name()),
            cuda=torch.version.cuda,
            nccl=".".join(map(str, torch.cuda.nccl.version())),
            triton=triton.__version__,
        )
    else:
        env.update(
            device=f"cpu ({_cpu_model()})",
            cpus=os.cpu_count(),
            threads_per_rank=torch.get_num_threads(),
            load_average=[round(x, 2) for x in os.getloadavg()],  # CPU timings depend on what else runs
        )
    return env


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _print_table(rows):
    cols = [
        ("shape", 18), ("strategy", 8), ("world_size", 3), ("single_ms", 10), ("group_ms", 10), ("speedup", 7),
        ("scaling_efficiency", 6), ("eff_tflops", 8), ("compute_only_ms", 10), ("comm_only_ms", 10),
        ("comm_hidden_fraction", 6), ("exposed_comm_ms", 9), ("unchecked_ms", 10), ("check_ms", 8),
        ("check_min_ms", 8), ("check_fraction", 6), ("max_abs_err_out", 9), ("ok", 5),
    ]  # fmt: skip
    heads = {
        "world_size": "P",
        "scaling_efficiency": "eff",
        "comm_hidden_fraction": "hid",
        "max_abs_err_out": "err",
        "check_fraction": "chk/t",
    }
    print(" ".join(f"{heads.get(c, c):>{w}}" for c, w in cols))
    for r in rows:
        if "skipped" in r:
            print(f"{r['shape']:>18} {r['strategy']:>8} {r['world_size']:>3}  skipped: {r['skipped']}")
            continue
        cells = []
        for c, w in cols:
            v = r.get(c, "")
            v = f"{v:.3g}" if isinstance(v, float) else str(v)
            cells.append(f"{v[:w]:>{w}}")
        print(" ".join(cells))
        print(
            f"{'':>18}   auto -> {r['auto_choice']} ({r['auto_reason']}); blocks on {r['block_runtime']}, "
            f"single on {r['single_runtime']}; per-rank ms {r['per_rank_ms']}"
        )


def main(argv=None) -> int:
    args = _parse_args(argv)
    bench = Bench(args.smoke)
    jointattn = _import_jointattn()
    dtype = torch.float32 if args.smoke else torch.bfloat16
    table = SMOKE_SHAPES if args.smoke else SHAPES
    rows = []
    with torch.no_grad():
        for name in args.shapes:
            rows.extend(run_shape(jointattn, bench, name, table[name], args, dtype))
    environment = _environment(bench, jointattn)
    if bench.rank == 0:
        _print_table(rows)
        tag = "smoke_cpu" if args.smoke else torch.cuda.get_device_name().split()[-1].lower()
        out = (
            Path(args.out)
            if args.out
            else REPO / "benchmarks" / "results" / f"ring_joint_attention_{tag}_P{bench.world_size}.json"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(dict(environment=environment, args=vars(args), rows=rows), indent=1))
        print(f"wrote {out}")
    all_ok = all(r.get("ok", True) for r in rows)
    bench.barrier()  # nobody tears the group down while rank 0 still writes (gloo aborts otherwise)
    dist.destroy_process_group()
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
