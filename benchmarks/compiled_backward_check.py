"""Why compiled training graphs keep their original attention where the op's backward would take the sdpa path
(`passes/fx/pytorch_path._unproven_backward`): gradient errors against float64 for each pair of forward and
backward paths, the op called eagerly and the same attention compiled with backend="jointattn".

    python benchmarks/compiled_backward_check.py     # on the GPU machine; prints a table, writes
                                                     # results/compiled_backward_check-<gpu>.json (and $OUT)

Found on the H200 (thirteenth session): a compiled SD3.5-like model (4 layers, 1024², bf16) with our Triton
forward and the sdpa backward had gradients 3.6% from float32's, the original graph 0.36%, our Triton or Hopper
backward after the same forward 0.34%; the op called eagerly was as close to float64 on every pair (0.24%).
This script is the next step: a single attention with projections, compiled, each pair forced through
JOINTATTN_DISPATCH (which the pass does not overrule), so that the pair and the layer that lose precision show.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import torch
import torch.nn.functional as F

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

B, NH, N, L, DH, WIDTH = 2, 4, 1024, 333, 64, 256
DEVICE, DTYPE = "cuda", torch.bfloat16
PAIRS = [("sdpa", "sdpa"), ("triton", "sdpa"), ("hopper", "sdpa"), ("triton", "hopper"), ("triton", "triton")]


def block(x, c, wq, wk, wv, wo):
    """One joint attention as models write it: projections, heads, cat -> SDPA -> slice, an output projection."""

    def heads(t, w):
        return (t @ w).view(B, -1, NH, DH).transpose(1, 2)

    q, k, v = (torch.cat([heads(x, w), heads(c, w)], 2) for w in (wq, wk, wv))
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, -1, NH * DH)
    return (o[:, :N] @ wo).square().mean() + (o[:, N:] @ wo).square().mean()


def main() -> int:
    from helpers import rel_err, unfused_float64

    import jointattn

    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("compiled_backward_check.py: needs a CUDA device", file=sys.stderr)
        return 2
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(B, N, WIDTH, generator=g), torch.randn(B, L, WIDTH, generator=g)]
    args += [torch.randn(WIDTH, NH * DH, generator=g) / 16 for _ in range(3)] + [
        torch.randn(NH * DH, WIDTH, generator=g) / 16
    ]
    exact = [a.double().to(DEVICE).requires_grad_() for a in args]
    want_block = torch.autograd.grad(block(*exact), exact)
    x = [a.to(DEVICE, DTYPE).requires_grad_() for a in args]
    heads = [
        torch.randn(B, s, NH, DH, generator=g).to(DEVICE, DTYPE).transpose(1, 2) for s in (N, N, N, L, L, L)
    ]
    go, gjo = torch.randn_like(heads[0]), torch.randn_like(heads[3])
    doubles = [t.double().requires_grad_() for t in heads]
    ref = unfused_float64(*doubles)
    want_op = torch.autograd.grad(ref[:2], doubles, (go.double(), gjo.double()))
    rows = [
        dict(
            case="eager PyTorch",
            block=[rel_err(a, w) for a, w in zip(torch.autograd.grad(block(*x), x), want_block)],
        )
    ]
    for forward, backward in PAIRS:
        os.environ["JOINTATTN_DISPATCH"] = f"forward={forward},backward={backward}"
        ins = [t.detach().requires_grad_() for t in heads]
        out, joint_out, _ = jointattn.joint_attention(*ins)
        op = torch.autograd.grad((out, joint_out), ins, (go, gjo))
        torch._dynamo.reset()
        compiled = torch.autograd.grad(torch.compile(block, backend="jointattn")(*x), x)
        rows.append(dict(case=f"{forward} -> {backward}", op=[rel_err(a, w) for a, w in zip(op, want_op)],
                         block=[rel_err(a, w) for a, w in zip(compiled, want_block)]))  # fmt: skip
    os.environ.pop("JOINTATTN_DISPATCH", None)
    print(f"{'pair':18} {'eager op: grads of q k v jq jk jv':48} compiled block: grads of x c wq wk wv wo")
    for r in rows:
        op = " ".join(f"{e:.4f}" for e in r.get("op", []))
        print(f"{r['case']:18} {op:48} " + " ".join(f"{e:.4f}" for e in r["block"]))
    gpu = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    result = dict(device=gpu, torch=torch.__version__, shape=[B, NH, N, L, DH], rows=rows)
    name = "compiled_backward_check-" + gpu.split()[-1].lower() + ".json"
    for out_dir in [HERE / "results"] + ([pathlib.Path(os.environ["OUT"])] if os.environ.get("OUT") else []):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / name).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
