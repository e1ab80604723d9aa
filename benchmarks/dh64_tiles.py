"""SD3.5's dh-64 attention with the Triton kernel at query tiles beyond the autotune space (BLOCK_M 256).

python benchmarks/dh64_tiles.py   # H100/H200; one JSON line per config: ms, TFLOP/s, rel. diff to the default
"""

import json
import sys

import torch
from jointattn.kernels.configs import LaunchConfig
from jointattn.runtime.triton_runtime import launch_forward
from triton.testing import do_bench

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from joint_attention import SHAPES  # noqa: E402

CONFIGS = [None] + [
    LaunchConfig(bm, bn, w, s)
    for bm, bn, w, s in [
        (128, 64, 8, 3),
        (128, 128, 8, 3),
        (256, 64, 8, 3),
        (256, 64, 8, 2),
        (256, 128, 8, 2),
        (256, 64, 16, 3),
        (256, 128, 16, 2),
        (256, 32, 8, 4),
    ]
]


def main(name: str = "sd35_1024") -> None:
    b, nh, n, l, dh, nv, lv = SHAPES[name]  # noqa: E741
    g = torch.Generator(device="cuda").manual_seed(0)
    make = lambda s: torch.randn(b, s, nh, dh, device="cuda", dtype=torch.bfloat16, generator=g).transpose(
        1, 2
    )
    q, k, v, jq, jk, jv = make(n), make(n), make(n), make(l), make(l), make(l)
    out, jout = torch.empty_like(q), torch.empty_like(jq)
    lse = torch.empty(b, nh, n + l, device="cuda")
    flops = 4 * b * nh * (n + l) * (nv + lv) * dh
    ref = None
    for config in CONFIGS:
        run = lambda config=config: launch_forward(
            q, k, v, jq, jk, jv, out, jout, lse, dh**-0.5, None, None, config, hopper=False
        )
        try:
            ms = do_bench(run, warmup=20, rep=100, return_mode="median")
        except Exception as error:  # a config that does not compile or fit is reported, not fatal
            print(
                json.dumps(
                    dict(shape=name, config=str(config), error=f"{type(error).__name__}: {error}"[:300])
                )
            )
            continue
        got = torch.cat([out, jout], 2).float()
        ref = got.clone() if ref is None else ref
        err = ((got - ref).norm() / ref.norm()).item()
        print(json.dumps(dict(shape=name, config=str(config), ms=round(ms, 4), tflops=round(flops / ms / 1e9, 1),
                              rel_diff_vs_default=err)), flush=True)  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:])
