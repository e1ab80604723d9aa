"""Host time per eager call: the op (each path) against cat -> SDPA -> slice, at small shapes where the host,
not the GPU, decides the time, plus where the op's host time goes (cProfile of its calls).

    python benchmarks/host_overhead.py --out benchmarks/results
    python benchmarks/host_overhead.py --sparse   # the block-sparse op at SD3.5's size instead (below)
    python benchmarks/host_overhead.py --step     # the training step at small shapes: ours against the unfused graph

Per shape and variant: host µs per call (perf_counter around `iters` back-to-back calls, no synchronization
inside, so a call's time is what it takes the CPU to enqueue it) and the wall µs per call with the GPU work
included (synchronized at the end). Writes `host_overhead.json` and prints a table and the profile.
Variants and launch steps marked "fast launch" run with launches bound once per specialization
(`runtime/fast_launch.py`, `JOINTATTN_FAST_LAUNCH=1`), the others without: before/after of that change.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import json
import os
import pstats
import time

import torch
import torch.nn.functional as F

SHAPES = [(2, 24, 1024, 333, 64), (1, 8, 256, 77, 64), (1, 24, 512, 77, 128)]


def measure(fn, iters):
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    host = (time.perf_counter() - t0) / iters
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / iters
    return host * 1e6, wall * 1e6


@contextlib.contextmanager
def fast_launch(on: bool):
    """Launches bound once per specialization (`runtime/fast_launch.py`) on or off inside."""
    from jointattn.runtime import fast_launch as switch

    switch.set_enabled(on)
    try:
        yield
    finally:
        switch.set_enabled(None)


def _variants(jointattn, tensors, lengths):
    q, k, v, jq, jk, jv = tensors
    n = q.shape[2]

    def cat_sdpa():
        o = F.scaled_dot_product_attention(
            torch.cat([q, jq], 2), torch.cat([k, jk], 2), torch.cat([v, jv], 2)
        )
        return o[:, :, :n], o[:, :, n:]

    def op(env=None, lengths=None):
        if env:
            os.environ["JOINTATTN_DISPATCH"] = env
        try:
            return jointattn.joint_attention(*tensors, logical_l=lengths)
        finally:
            os.environ.pop("JOINTATTN_DISPATCH", None)

    variants = {"cat_sdpa_slice": cat_sdpa, "op[auto]": op}
    for path in ("hopper", "triton", "sdpa"):
        variants[f"op[{path}]"] = functools.partial(op, f"forward={path}")
    variants["op[auto, padded]"] = functools.partial(op, None, lengths)
    for name in ("op[auto]", "op[hopper]", "op[triton]", "op[auto, padded]"):
        variants[f"{name}, fast launch"] = variants[name]  # measured under fast_launch(True)
    # forward + backward: what a training step pays per attention (autograd recorded, gradients of all six)
    leaves = [t.detach().requires_grad_() for t in tensors]
    grads = (torch.randn_like(q), torch.randn_like(jq))

    def cat_sdpa_fwd_bwd():
        qq, kk, vv = (torch.cat([a, c], 2) for a, c in zip(leaves[:3], leaves[3:]))
        o = F.scaled_dot_product_attention(qq, kk, vv)
        torch.autograd.backward((o[:, :, :n], o[:, :, n:]), grads)

    def op_fwd_bwd(env=None):
        if env:
            os.environ["JOINTATTN_DISPATCH"] = env
        try:
            out, joint_out, _ = jointattn.joint_attention(*leaves)
            torch.autograd.backward((out, joint_out), grads)
        finally:
            os.environ.pop("JOINTATTN_DISPATCH", None)

    variants["cat_sdpa_slice fwd+bwd"] = cat_sdpa_fwd_bwd
    variants["op[auto] fwd+bwd"] = op_fwd_bwd
    for path in ("hopper", "sdpa"):
        variants[f"op[{path}] fwd+bwd"] = functools.partial(op_fwd_bwd, path)
    return variants


def breakdown(jointattn, tensors, iters):
    """Host µs of each step of one op call, each timed alone over `iters` repetitions."""
    from jointattn.runtime import dispatch
    from jointattn.runtime.auto_runtime import run_forward
    from jointattn.runtime.call import JointCall
    from jointattn.runtime.ops import contract
    from jointattn.runtime.triton_runtime import launch_backward, launch_forward

    q, k, v, jq, jk, jv = tensors
    call = JointCall(*tensors, q.shape[-1] ** -0.5, None, None)
    out, joint_out, lse = contract.empty_outputs_of(q, call.shape)
    problem = dispatch.describe(call)
    steps = {
        "wrapper checks": lambda: contract.check_call(q, k, v, jq, jk, jv, "rear", None, None, None, "auto"),
        "impl: make call": lambda: contract.make_call(q, k, v, jq, jk, jv, "rear", None, None, None, "auto"),
        "impl: empty outputs": lambda: contract.empty_outputs_of(q, call.shape),
        "dispatch: describe": lambda: dispatch.describe(call),
        "dispatch: choose": lambda: dispatch.choose(problem),
        "launch: triton": lambda: launch_forward(call, out, joint_out, lse, hopper=False),
        "launch: hopper": lambda: launch_forward(call, out, joint_out, lse, hopper=True),
        "launch: triton backward": lambda: launch_backward(call, out, joint_out, lse, out, joint_out, None),
        "path: sdpa": lambda: run_forward("sdpa", call, out, joint_out, lse),
        "torch.ops call (auto)": lambda: torch.ops.jointattn.joint_attention(
            *tensors, "rear", None, None, None, "auto"
        ),
        "joint_attention (auto)": lambda: jointattn.joint_attention(*tensors),
    }
    for name in [name for name in steps if name.startswith(("launch:", "torch.ops", "joint_attention"))]:
        steps[f"{name}, fast launch"] = steps[name]  # measured under fast_launch(True)
    found = {}
    for name, fn in steps.items():
        try:
            with fast_launch("fast launch" in name):
                found[name] = measure(fn, iters)[0]
        except Exception as e:  # noqa: BLE001
            print(f"  {name}: {type(e).__name__}: {str(e)[:100]}")
    return found


def _profile(fn, calls=100, top=30) -> str:
    """cProfile of `calls` calls of fn (after one outside the profile): the top functions by own and by
    cumulative time."""
    fn()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    profiler.disable()
    text = io.StringIO()
    for key in ("tottime", "cumulative"):
        pstats.Stats(profiler, stream=text).sort_stats(key).print_stats(top)
    return text.getvalue()


def sparse(jointattn, iters, out_dir):
    """The block-sparse op (`block_mask=`, an estimated 128x128 layout built once) at SD3.5's size, where its
    GPU time at 30% kept (about 1.9 ms forward + backward) is below what its host takes to enqueue it: host and
    wall µs of the forward and forward + backward, and where the host time goes."""
    from jointattn.runtime.sparse_layout import spatial_layout
    from jointattn.sparse import estimate_block_mask

    b, nh, n, l, dh = 2, 38, 4096, 333, 64  # noqa: E741
    g = torch.Generator(device="cuda").manual_seed(0)
    tensors = [
        torch.randn(b, nh, s, dh, device="cuda", dtype=torch.bfloat16, generator=g)
        for s in (n,) * 3 + (l,) * 3
    ]
    layout = spatial_layout(
        estimate_block_mask(tensors[0], tensors[1], keep=0.3, block_size=(128, 128)), n, "cuda"
    )
    leaves = [t.detach().requires_grad_() for t in tensors]
    grads = (torch.randn_like(tensors[0]), torch.randn_like(tensors[3]))

    def forward():
        return jointattn.joint_attention(*tensors, block_mask=layout)

    def fwd_bwd():
        out, joint_out, _ = jointattn.joint_attention(*leaves, block_mask=layout)
        torch.autograd.backward((out, joint_out), grads)

    rows = []
    for name, fn in (("sparse forward", forward), ("sparse fwd+bwd", fwd_bwd)):
        host, wall = measure(fn, iters)
        rows.append(dict(shape=[b, nh, n, l, dh], variant=name, host_us=host, wall_us=wall))
        print(f"{name:16s} host {host:8.1f} us  wall {wall:8.1f} us", flush=True)
        print(_profile(fn)[:12000], flush=True)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "host_overhead-sparse.json"), "w") as f:
        json.dump(dict(torch=torch.__version__, gpu=torch.cuda.get_device_name(), rows=rows), f, indent=1)


STEP_SHAPES = [(1, 8, 256, 77, 64), (2, 24, 1024, 333, 64)]


def step(jointattn, iters, out_dir):
    """The training step (forward with autograd recording, then gradients of all six inputs) at small shapes,
    where it is host time: ours (the eager shortcut's step) against cat -> SDPA -> slice, host and wall µs, the
    forward alone too, and where the host time goes (aten ops by own CPU time, torch.profiler; Python by
    cProfile)."""
    rows = []
    for shape in STEP_SHAPES:
        rows += _step_at(jointattn, shape, iters)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "host_overhead-step.json"), "w") as f:
        json.dump(dict(torch=torch.__version__, gpu=torch.cuda.get_device_name(), rows=rows), f, indent=1)


def _layout_copies(fn) -> list:
    """(shape, strides) of each operand `sdpa_runtime._packed` or `join.to_private` copied during one fn()
    (the operands our cuDNN backward must get in fixed layouts: each copy is a launch and an allocation)."""
    from jointattn.runtime import join, sdpa_runtime

    copies, packed, private = [], sdpa_runtime._packed, join.to_private

    def watch(real, kind):
        def wrapper(t):
            result = real(t)
            if result is not t:
                copies.append((kind, tuple(t.shape), t.stride()))
            return result

        return wrapper

    sdpa_runtime._packed, join.to_private = watch(packed, "packed"), watch(private, "private")
    try:
        fn()
        torch.cuda.synchronize()
    finally:
        sdpa_runtime._packed, join.to_private = packed, private
    return copies


def _forward_parts(jointattn, shape, leaves, iters) -> list:
    """Host µs of each piece of the shortcut's training forward (autograd recording), each timed alone: where its
    lead over the unfused graph's forward goes (the library step's joins, kernel, lse function and slices, and the
    layers above them)."""
    from jointattn.runtime import sdpa_runtime
    from jointattn.runtime.ops import eager_sdpa

    q, k, v, jq, jk, jv = leaves
    scale = q.shape[-1] ** -0.5
    s = q.shape[2] + jq.shape[2]
    pad = eager_sdpa._query_pad(q, jq)
    qq, kk, vv = torch.cat([q, jq, pad], 2), torch.cat([k, jk], 2), torch.cat([v, jv], 2)
    o, lse, _ = sdpa_runtime.attention_on(qq, kk, vv, scale)
    plan = eager_sdpa.Plan(scale, q.shape[2])
    order = eager_sdpa._kernels(plan, qq, kk, vv)
    parts = {
        "joint_attention (the whole forward)": lambda: jointattn.joint_attention(*leaves),
        "try_joint_attention": lambda: eager_sdpa.try_joint_attention(leaves, None),
        "_run (library step)": lambda: eager_sdpa._run(leaves, plan, True),
        "_library_step": lambda: eager_sdpa._library_step(q, jq, k, jk, v, jv, plan),
        "three torch.cat (q padded)": lambda: (
            torch.cat([q, jq, pad], 2), torch.cat([k, jk], 2), torch.cat([v, jv], 2)
        ),
        "PyTorch's choice with lse (attention_on)": lambda: sdpa_runtime.attention_on(qq, kk, vv, scale),
        "attention_on, the plan's kernel order": lambda: sdpa_runtime.attention_on(qq, kk, vv, scale, order),
        "F.scaled_dot_product_attention": lambda: F.scaled_dot_product_attention(qq, kk, vv),
        "_LseGradient.apply": lambda: eager_sdpa._LseGradient.apply(lse, qq, kk, vv, scale, s),
        "two narrows": lambda: (o.narrow(2, 0, q.shape[2]), o.narrow(2, q.shape[2], jq.shape[2])),
    }  # fmt: skip
    rows = []
    for name, fn in parts.items():
        host, wall = measure(fn, iters)
        rows.append(dict(shape=list(shape), variant=f"ours forward part: {name}", host_us=host, wall_us=wall))
        print(f"{str(shape):24s} part {name:46s} host {host:8.1f} us  wall {wall:8.1f} us", flush=True)
    return rows


@contextlib.contextmanager
def _shortcut_under_profiler():
    from jointattn.runtime.ops import eager_sdpa

    watched = eager_sdpa.op_is_watched
    eager_sdpa.op_is_watched = lambda: False
    try:
        yield
    finally:
        eager_sdpa.op_is_watched = watched


def _step_at(jointattn, shape, iters):
    from torch.profiler import ProfilerActivity, profile

    b, nh, n, l, dh = shape  # noqa: E741
    g = torch.Generator(device="cuda").manual_seed(0)
    leaves = [
        torch.randn(b, s, nh, dh, device="cuda", dtype=torch.bfloat16, generator=g).transpose(1, 2).detach()
        .requires_grad_()
        for s in (n, n, n, l, l, l)
    ]  # fmt: skip
    grads = (torch.randn_like(leaves[0]), torch.randn_like(leaves[3]))

    def unfused():
        o = F.scaled_dot_product_attention(*(torch.cat([a, c], 2) for a, c in zip(leaves[:3], leaves[3:])))
        return o[:, :, :n], o[:, :, n:]

    def ours():
        return jointattn.joint_attention(*leaves)[:2]

    rows = []
    for name, forward in (("unfused", unfused), ("ours", ours)):

        def whole(forward=forward):
            torch.autograd.grad(forward(), leaves, grads)

        for variant, fn in ((f"{name} forward (autograd recording)", forward), (f"{name} fwd+bwd", whole)):
            host, wall = measure(fn, iters)
            rows.append(dict(shape=list(shape), variant=variant, host_us=host, wall_us=wall))
            print(f"{str(shape):24s} {variant:40s} host {host:8.1f} us  wall {wall:8.1f} us", flush=True)
        print(f"{shape} {name}: layout copies before cuDNN's backward in one step: {_layout_copies(whole)}")
        if name == "ours":
            rows += _forward_parts(jointattn, shape, leaves, iters)
        # The profiler makes `op_is_watched()` true, which turns the eager shortcut off: let it run, so that the
        # profile shows the step users get.
        with _shortcut_under_profiler(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(50):
                whole()
            torch.cuda.synchronize()
        print(f"{shape} {name} fwd+bwd, 50 calls, aten ops by own CPU time:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30), flush=True)
        print(_profile(whole, calls=50, top=25)[:8000], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--sparse", action="store_true", help="the block-sparse op at SD3.5's size only")
    parser.add_argument("--step", action="store_true", help="the training step at small shapes only")
    args = parser.parse_args()
    import jointattn

    if args.sparse:
        sparse(jointattn, args.iters, args.out)
        return
    if args.step:
        step(jointattn, args.iters, args.out)
        return

    rows = []
    for b, nh, n, l, dh in SHAPES:  # noqa: E741
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, jq, jk, jv = (
            torch.randn(b, s, nh, dh, device="cuda", dtype=torch.bfloat16, generator=g).transpose(1, 2)
            for s in (n, n, n, l, l, l)
        )
        lengths = torch.full((b,), l // 3, device="cuda", dtype=torch.int32)

        variants = _variants(jointattn, (q, k, v, jq, jk, jv), lengths)
        for name, fn in variants.items():
            try:
                with fast_launch("fast launch" in name):
                    host, wall = measure(fn, args.iters)
            except Exception as e:
                print(f"{name}: {type(e).__name__}: {str(e)[:120]}")
                continue
            rows.append(dict(shape=[b, nh, n, l, dh], variant=name, host_us=host, wall_us=wall))
            print(
                f"{str((b, nh, n, l, dh)):24s} {name:20s} host {host:8.1f} us  wall {wall:8.1f} us",
                flush=True,
            )
        for name, us in breakdown(jointattn, (q, k, v, jq, jk, jv), args.iters).items():
            rows.append(dict(shape=[b, nh, n, l, dh], variant=f"step: {name}", host_us=us, wall_us=None))
            print(f"{str((b, nh, n, l, dh)):24s} step {name:26s} host {us:8.1f} us", flush=True)
        for on in (False, True):
            profiler = cProfile.Profile()
            with fast_launch(on):
                jointattn.joint_attention(q, k, v, jq, jk, jv)  # binds, outside the profile
                profiler.enable()
                for _ in range(200):
                    jointattn.joint_attention(q, k, v, jq, jk, jv)
                torch.cuda.synchronize()
                profiler.disable()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
            print(f"profile, fast launch {'on' if on else 'off'}:")
            print(text.getvalue()[:6000])
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "host_overhead.json"), "w") as f:
        json.dump(dict(torch=torch.__version__, gpu=torch.cuda.get_device_name(), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
