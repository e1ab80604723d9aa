"""The Gluon Hopper backward against the Triton backward and the sdpa path's backward (cuDNN via cat), one run
(GPU, sm_90): SD3.5's, Flux's and Flux-with-77-of-512-text-valid's shapes, bf16.

    python benchmarks/hopper_backward.py [--out DIR] [--shapes sd35,flux,flux_77_valid,mochi] [--no-sweep]

For each shape: the gradients of the Hopper backward against the Triton backward's (relative error per
gradient, printed and kept), then median ms of each backward alone (preprocess and postprocess included) and
TFLOP/s (the backward's five products: 10 * b * nh * (N+L) * valid keys * dh). The sdpa path cannot pad; for
the padded shape (b = 1) it is timed on the valid keys alone (what unpad -> SDPA -> pad runs). Then (unless
--no-sweep) the Hopper backward's candidate configs (`CANDIDATES`), each checked against the Triton backward
before it is timed. Writes `hopper_backward.json` under benchmarks/results/ (and --out).
"""

from __future__ import annotations

import argparse
import json
import pathlib

import torch
from jointattn.kernels.configs import HopperBackwardConfig
from jointattn.runtime.call import JointCall
from jointattn.runtime.hopper_backward_launch import launch_backward_hopper
from jointattn.runtime.sdpa_runtime import SdpaRuntime
from jointattn.runtime.triton_runtime import launch_backward, launch_forward

SHAPES = {  # name: (b, nh, N, L, dh, valid text or None)
    "sd35": (2, 38, 4096, 333, 64, None),
    "flux": (1, 24, 4096, 512, 128, None),
    "flux_77_valid": (1, 24, 4096, 512, 128, 77),
    "mochi": (1, 24, 44520, 256, 128, 100),  # not in the default run (--shapes mochi): ~1 s per backward
}
DEFAULT_SHAPES = "sd35,flux,flux_77_valid"

# dh -> (block_m, keys_per_wg, num_stages, split_dq) candidates of the Hopper backward (the default first).
CANDIDATES = {
    128: [(64, 64, 2, True), (64, 64, 2, False)],
    64: [(64, 64, 2, False), (64, 64, 3, False), (128, 64, 2, False)],
}


def _ms(fn) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=10, rep=50, return_mode="median")


def _rel(a, b) -> float:
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def measure(name, b, nh, n, l, dh, valid, sweep=True):  # noqa: E741
    torch.manual_seed(0)
    dtype = torch.bfloat16
    t = [torch.randn(b, nh, s, dh, device="cuda", dtype=dtype) for s in (n, n, n, l, l, l)]
    call = JointCall.of(*t, dh**-0.5, None, valid)
    out, jo = torch.empty_like(t[0]), torch.empty_like(t[3])
    lse = torch.empty(b, nh, n + l, device="cuda", dtype=torch.float32)
    launch_forward(call, out, jo, lse)
    g_out, g_jo = torch.randn_like(out), torch.randn_like(jo)

    def hopper():
        return launch_backward(call, out, jo, lse, g_out, g_jo, None, hopper=True)

    def triton():
        return launch_backward(call, out, jo, lse, g_out, g_jo, None, hopper=False)

    want = triton()
    row = dict(shape=dict(b=b, nh=nh, n=n, l=l, dh=dh, valid_text=valid))
    try:
        got = hopper()
        errors = {k: _rel(g, w) for k, g, w in zip(("dq", "dk", "dv", "djq", "djk", "djv"), got, want)}
    except Exception as e:  # reported with the other paths' times, not fatal
        errors = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    print(f"{name}: hopper vs triton relative error {errors}", flush=True)
    row["rel_err_vs_triton"] = errors
    ok = all(isinstance(e, float) and e < 2e-2 for e in errors.values())
    row["hopper_ms"] = _ms(hopper) if ok else None
    row["triton_ms"] = _ms(triton)
    if valid is None:
        row["sdpa_ms"] = _ms(lambda: SdpaRuntime().backward(call, out, jo, lse, g_out, g_jo, None))
    elif b == 1:  # unpad -> SDPA: the same gradients of the valid keys, on a call without padding
        cut = JointCall.of(*t[:3], *(x[:, :, :valid] for x in t[3:]), dh**-0.5)
        o2, jo2 = torch.empty_like(t[0]), torch.empty_like(cut.joint_q)
        lse2 = torch.empty(b, nh, n + valid, device="cuda", dtype=torch.float32)
        launch_forward(cut, o2, jo2, lse2)
        g2 = g_jo[:, :, :valid]
        row["sdpa_on_valid_keys_ms"] = _ms(
            lambda: SdpaRuntime().backward(cut, o2, jo2, lse2, g_out, g2, None)
        )
    if sweep:
        row["hopper_configs_ms"] = {}
        for c in CANDIDATES[dh]:
            config = HopperBackwardConfig(*c[:3], 240, split_dq=c[3])

            def run(config=config):
                grads = tuple(torch.empty_like(x) for x in t)
                launch_backward_hopper(call, out, jo, lse, g_out, g_jo, None, grads, config)
                return grads

            try:
                errs = [_rel(g, w) for g, w in zip(run(), want)]
                row["hopper_configs_ms"][str(c)] = _ms(run) if max(errs) < 2e-2 else f"wrong: {max(errs):.3g}"
            except Exception as e:  # a candidate that does not fit here: reported, not fatal
                row["hopper_configs_ms"][str(c)] = f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"
            print(f"{name} hopper {c}: {row['hopper_configs_ms'][str(c)]}", flush=True)
    keys = n + (valid if valid is not None else l)
    flops = 10 * b * nh * (n + l) * keys * dh
    row["tflops"] = {k: flops / v / 1e9 for k, v in row.items() if k.endswith("_ms") and isinstance(v, float)}
    print(f"{name}: {json.dumps({k: v for k, v in row.items() if k != 'shape'})}", flush=True)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=None)
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"any of {','.join(SHAPES)}")
    parser.add_argument("--no-sweep", action="store_true", help="time the default Hopper config only")
    args = parser.parse_args(argv)
    import triton

    result = dict(
        device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
        cudnn=torch.backends.cudnn.version(), dtype="bfloat16",
        rows={name: measure(name, *SHAPES[name], sweep=not args.no_sweep) for name in args.shapes.split(",")},
    )  # fmt: skip
    text = json.dumps(result, indent=1)
    for folder in filter(None, [pathlib.Path(__file__).parent / "results", args.out]):
        pathlib.Path(folder).mkdir(parents=True, exist_ok=True)
        (pathlib.Path(folder) / "hopper_backward.json").write_text(text)


if __name__ == "__main__":
    main()
