"""Times the Gluon Hopper forward's configs (stages, BLOCK_N) against the Triton kernel and cuDNN, per shape.

python benchmarks/hopper_tune.py          # H100/H200 only; prints one JSON line per (shape, variant)
"""

import json
import sys

import torch
import torch.nn.functional as F
from jointattn.kernels.configs import HopperConfig
from jointattn.runtime.call import JointCall
from jointattn.runtime.hopper_launch import launch_forward_hopper
from jointattn.runtime.triton_runtime import launch_forward
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from joint_attention import SHAPES  # noqa: E402


def tune_shape(name: str) -> None:
    b, nh, n, l, dh, nv, lv = SHAPES[name]  # noqa: E741
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (
        torch.randn(b, n, nh, dh, device="cuda", dtype=torch.bfloat16, generator=g).transpose(1, 2)
        for _ in range(3)
    )
    jq, jk, jv = (
        torch.randn(b, l, nh, dh, device="cuda", dtype=torch.bfloat16, generator=g).transpose(1, 2)
        for _ in range(3)
    )
    ln = torch.full((b,), nv, device="cuda", dtype=torch.int32) if nv < n else None
    ll = torch.full((b,), lv, device="cuda", dtype=torch.int32) if lv < l else None
    out, jout = torch.empty_like(q), torch.empty_like(jq)
    lse = torch.empty(b, nh, n + l, device="cuda")
    scale = dh**-0.5
    flops = 4 * b * nh * (n + l) * (nv + lv) * dh
    call = JointCall.of(q, k, v, jq, jk, jv, scale, ln, ll)
    variants = {"triton": lambda: launch_forward(call, out, jout, lse, hopper=False)}
    # (rows per consumer warpgroup, keys per block, stages)
    tiles = (
        [(64, 128, 2), (64, 128, 3)]
        if dh == 128
        else [(64, 128, 2), (128, 64, 2), (128, 64, 3), (128, 64, 4)]
    )
    for block_m, block_n, stages in tiles:
        cfg = HopperConfig(block_m, block_n, stages, 240, default=False)
        variants[f"hopper_m{block_m}_n{block_n}_s{stages}"] = lambda cfg=cfg: launch_forward_hopper(
            call, out, jout, lse, n, l, cfg
        )
    if ln is None and ll is None:
        qq, kk, vv = (torch.cat([a, c], 2) for a, c in ((q, jq), (k, jk), (v, jv)))

        def cudnn():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(qq, kk, vv)

        variants["cudnn(pre-cat)"] = cudnn
    ref = None
    for variant, fn in variants.items():
        ms = do_bench(fn, warmup=20, rep=100, return_mode="median")
        if variant.startswith(("triton", "hopper")):
            got = torch.cat([out, jout], 2).float()
            ref = got.clone() if ref is None else ref
            err = ((got - ref).norm() / ref.norm()).item()
        else:
            err = None
        print(
            json.dumps(
                dict(
                    shape=name,
                    variant=variant,
                    ms=round(ms, 4),
                    tflops=round(flops / ms / 1e9, 1),
                    rel_diff_vs_triton=err,
                )
            ),
            flush=True,
        )


if __name__ == "__main__":
    for shape in sys.argv[1:] or SHAPES:
        tune_shape(shape)
