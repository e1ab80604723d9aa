"""Sweep of the Triton backward's tiles (GPU): the dk/dv kernel's, then the dq kernel's with the best dk/dv,
at SD3.5's, Flux's and Flux-with-padded-text's shapes, against the sdpa path's backward (cuDNN's via cat) in the
same run. Every config's gradients are checked against the default config's before it is timed.

    python benchmarks/backward_sweep.py [--out DIR]

Prints a table per shape and writes `backward_sweep.json` (device, versions, shapes, ms per config) under
benchmarks/results/ (and --out). The winners go to `kernels/configs.py` by hand, with the numbers.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import torch
from jointattn.kernels.configs import LaunchConfig, backward_launch_config
from jointattn.runtime.call import JointCall
from jointattn.runtime.sdpa_runtime import SdpaRuntime
from jointattn.runtime.triton_runtime import launch_backward, launch_forward

SHAPES = {  # name: (b, nh, N, L, dh, valid text or None)
    "sd35": (2, 38, 4096, 333, 64, None),
    "flux": (1, 24, 4096, 512, 128, None),
    "flux_77_valid": (1, 24, 4096, 512, 128, 77),
}
# (query tile, key tile, warps, stages)
DKDV = [(64, 128, 8, 2), (64, 128, 8, 3), (32, 128, 4, 3), (32, 128, 4, 4), (32, 128, 4, 5), (64, 64, 4, 3),
        (64, 128, 4, 3), (128, 128, 8, 2), (32, 64, 4, 4), (16, 128, 4, 4)]  # fmt: skip
DQ = [(64, 128, 8, 2), (128, 32, 4, 3), (128, 32, 4, 5), (128, 64, 8, 2), (128, 64, 8, 3), (128, 64, 4, 3),
      (64, 64, 4, 3), (128, 128, 8, 2), (64, 32, 4, 4)]  # fmt: skip


def _ms(fn) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=10, rep=40, return_mode="median")


def sweep(name, b, nh, n, l, dh, valid):  # noqa: E741
    torch.manual_seed(0)
    dtype = torch.bfloat16
    t = [torch.randn(b, nh, s, dh, device="cuda", dtype=dtype) for s in (n, n, n, l, l, l)]
    call = JointCall.of(*t, dh**-0.5, None, valid)
    out, jo = torch.empty_like(t[0]), torch.empty_like(t[3])
    lse = torch.empty(b, nh, n + l, device="cuda", dtype=torch.float32)
    launch_forward(call, out, jo, lse)
    g_out, g_jo = torch.randn_like(out), torch.randn_like(jo)
    default = backward_launch_config(dh, dtype, n, l)
    want = launch_backward(call, out, jo, lse, g_out, g_jo, None)
    row = dict(
        shape=dict(b=b, nh=nh, n=n, l=l, dh=dh, valid_text=valid), default=list(default.__dict__.values())
    )

    def timed(dkdv, dq):
        try:
            got = launch_backward(call, out, jo, lse, g_out, g_jo, None, dkdv, dq)
            err = max(((g.float() - w.float()).abs().max() / w.float().abs().max().clamp(min=1e-6)).item()
                      for g, w in zip(got, want))  # fmt: skip
            if err > 2e-2:
                return None, f"wrong: rel err {err:.3g}"
            return _ms(lambda: launch_backward(call, out, jo, lse, g_out, g_jo, None, dkdv, dq)), None
        except Exception as e:  # out of shared memory or registers: the config cannot run here
            return None, f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"

    row["dkdv"] = {}
    for c in DKDV:
        ms, why = timed(LaunchConfig(*c), default)
        row["dkdv"][str(c)] = ms if ms is not None else why
        print(f"{name} dkdv {c}: {ms if ms is not None else why}", flush=True)
    timed_ok = {c: v for c, v in row["dkdv"].items() if isinstance(v, float)}
    best_dkdv = LaunchConfig(*eval(min(timed_ok, key=timed_ok.get)))
    row["dq"] = {}
    for c in DQ:
        ms, why = timed(best_dkdv, LaunchConfig(*c))
        row["dq"][str(c)] = ms if ms is not None else why
        print(f"{name} dq {c} (dkdv {tuple(best_dkdv.__dict__.values())}): {ms if ms is not None else why}")
    sdpa_ok = SdpaRuntime().unsupported(call) is None
    row["sdpa_backward_ms"] = (
        _ms(lambda: SdpaRuntime().backward(call, out, jo, lse, g_out, g_jo, None)) if sdpa_ok else None
    )
    print(f"{name}: default {row['dkdv'][str(tuple(default.__dict__.values()))]} ms, "
          f"sdpa backward {row['sdpa_backward_ms']} ms", flush=True)  # fmt: skip
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=None)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    args = parser.parse_args(argv)
    import triton

    result = dict(
        device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
        cudnn=torch.backends.cudnn.version(), dtype="bfloat16",
        rows={name: sweep(name, *SHAPES[name]) for name in args.shapes.split(",")},
    )  # fmt: skip
    text = json.dumps(result, indent=1)
    for folder in filter(None, [pathlib.Path(__file__).parent / "results", args.out]):
        pathlib.Path(folder).mkdir(parents=True, exist_ok=True)
        (pathlib.Path(folder) / "backward_sweep.json").write_text(text)


if __name__ == "__main__":
    main()
