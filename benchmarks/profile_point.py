"""Where one attention call's forward + backward time goes, ours against the PyTorch baseline, kernel by kernel.

    python benchmarks/profile_point.py --points 1,24,4096,512,128,77 2,38,4096,333,64 --out DIR

For each point (b, nh, N, L, dh[, valid text length]; bf16, the model layout) it profiles `--iters` forward +
backward iterations of: the op as users get it (runtime="auto"), `JOINTATTN_DISPATCH=sdpa` (both passes on the
sdpa path: the eager shortcut, i.e. the unfused graph with the op's checks and lse), and the PyTorch baseline
never_slower.py finds best there (cat -> SDPA -> slice, or unpad -> SDPA -> pad for padded text). It prints per variant the wall time, the summed kernel time, the gap (host time the GPU waited
for) and the kernels, per iteration, and writes `profile_point.json` under --out. Why: the never-slower sweep
says how far apart two paths are, this says in which kernels (or in no kernel: the host).

Caveat: under the profiler the op must be seen as one op (`runtime/ops/contract.op_is_watched`), so the eager
shortcut is off and the backward runs as the backward op, with its six gradient copies; plain eager calls skip
both. The never-slower times are the ones to compare; this says where the kernels' time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib

import torch
import torch.nn.functional as F
from never_slower import _env
from profile_model import _profile


def _inputs(b, nh, n, l, dh, valid):  # noqa: E741
    g = torch.Generator(device="cuda").manual_seed(0)

    def make(s):  # [b, S, nh, dh] memory seen as [b, nh, S, dh], as a model's projections leave it
        return torch.randn(b, s, nh, dh, device="cuda", dtype=torch.bfloat16, generator=g).transpose(1, 2)

    ts = [make(s).requires_grad_() for s in (n, n, n, l, l, l)]
    grads = (torch.randn_like(ts[0]), torch.randn_like(ts[3]))
    lengths = None if valid is None else torch.full((b,), valid, device="cuda", dtype=torch.int32)
    return ts, grads, lengths


def _variants(ts, grads, lengths, valid):
    import jointattn

    n = ts[0].shape[2]

    def ours():
        o, jo, _ = jointattn.joint_attention(*ts, logical_l=lengths)
        torch.autograd.grad(
            (o, jo), ts, grads
        )  # returned, not accumulated: q, k, v are not leaves in a model

    def baseline():
        keep = ts[3].shape[2] if valid is None else valid
        q = torch.cat([ts[0], ts[3]], 2)
        k = torch.cat([ts[1], ts[4][:, :, :keep]], 2)
        v = torch.cat([ts[2], ts[5][:, :, :keep]], 2)
        o = F.scaled_dot_product_attention(q, k, v)
        torch.autograd.grad((o[:, :, :n], o[:, :, n:]), ts, grads)

    # name -> (JOINTATTN_DISPATCH for it, or None, the step)
    return {"ours[auto]": (None, ours), "ours[sdpa]": ("sdpa", ours), "baseline": (None, baseline)}


def _repeat(fn, iters):
    def run():
        for _ in range(iters):
            fn()

    return run


def profile_point(point, iters):
    b, nh, n, l, dh, *rest = point  # noqa: E741
    valid = rest[0] if rest else None
    ts, grads, lengths = _inputs(b, nh, n, l, dh, valid)
    result = {}
    for name, (forced, fn) in _variants(ts, grads, lengths, valid).items():
        with _env("JOINTATTN_DISPATCH", forced) if forced else contextlib.nullcontext():
            prof = _profile(_repeat(fn, iters), grad=True)
        per = {
            k: round(v / iters, 4)
            for k, v in (("wall_ms", prof["wall_ms"]), ("kernel_ms", prof["kernel_ms"]))
        }
        per["idle_ms"] = round(per["wall_ms"] - per["kernel_ms"], 4)
        per["kernels"] = [(k, round(v / iters, 4)) for k, v in prof["top"]]
        result[name] = per
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", nargs="+", default=["1,24,4096,512,128,77", "1,24,4096,512,128"])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    rows = {}
    for text in args.points:
        point = tuple(int(x) for x in text.split(","))
        rows[text] = profile_point(point, args.iters)
        print(f"\n== point (b, nh, N, L, dh[, valid]) = {text}, per fwd+bwd iteration")
        for name, r in rows[text].items():
            print(
                f"-- {name}: wall {r['wall_ms']:.3f} ms, kernels {r['kernel_ms']:.3f}, gap {r['idle_ms']:.3f}"
            )
            for kernel, ms in r["kernels"][:14]:
                print(f"   {ms:8.4f}  {kernel[:110]}")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(
        torch=torch.__version__, device=torch.cuda.get_device_name(), cudnn=torch.backends.cudnn.version()
    )
    (out / "profile_point.json").write_text(
        json.dumps(dict(env=env, iters=args.iters, points=rows), indent=1)
    )


if __name__ == "__main__":
    main()
