"""Our SDPA backwards and a model's own at the same shape in one process: gradient errors against float64 for
each pair of forward and backward paths, the op called eagerly and the same attention compiled with
backend="jointattn", in two orders, each in a fresh process (a fresh cuDNN graph cache).

    python benchmarks/compiled_backward_check.py     # on the GPU machine; prints a table, writes
                                                     # results/compiled_backward_check-<gpu>.json (and $OUT)

Found on the H200 (thirteenth session): a compiled SD3.5-like model with our Triton forward and the sdpa backward
had gradients 10x further from float32's than the original graph's. Cause (fourteenth session, this script,
`results/compiled_backward_check-before-h200.json`): torch 2.11 caches cuDNN's SDPA backward graph by q, k and
v's sizes and strides alone, with the first call's O and dO strides baked in. Models slice the attention output
after `transpose(1, 2).reshape(...)`, so their dO is [b, S, nh, dh] in memory; ours was packed [b, nh, S, dh].
With the op's backward first, PyTorch's own block then ran our graph: its gradients 92-105% off. The fix: our q, k
and v reach cuDNN in `runtime/join.py`'s private layout (a padded batch stride), a key no one else has.
- `op-first`: the op's eager pairs, then PyTorch's own block (its cuDNN backward, dO [b, S, nh, dh]), then the
  op's pairs again and the compiled block per pair.
- `pytorch-first`: PyTorch's own block first (as in the model benchmarks, where eager and inductor ran first),
  then the op's pairs and the compiled block per pair.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import torch
import torch.nn.functional as F

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

# JOINTATTN_CHECK_DEVICE=cpu: a dry run of this script on CPU (float32; Triton pairs need TRITON_INTERPRET=1)
DEVICE = os.environ.get("JOINTATTN_CHECK_DEVICE", "cuda")
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32
B, NH, N, L, DH, WIDTH = (2, 4, 1024, 333, 64, 256) if DEVICE == "cuda" else (2, 2, 40, 9, 16, 32)
LIMIT = 0.02  # bf16 against float64: 0.002-0.005 when right, 0.04-1.0 with another call's cuDNN graph
PAIRS = [("sdpa", "sdpa"), ("triton", "sdpa"), ("hopper", "sdpa"), ("triton", "hopper"), ("triton", "triton")]
PAIRS = [p for p in PAIRS if DEVICE == "cuda" or "hopper" not in p]  # Gluon runs on CUDA only


def block(x, c, wq, wk, wv, wo):
    """One joint attention as models write it: projections, heads, cat -> SDPA -> slice, an output projection."""

    def heads(t, w):
        return (t @ w).view(B, -1, NH, DH).transpose(1, 2)

    q, k, v = (torch.cat([heads(x, w), heads(c, w)], 2) for w in (wq, wk, wv))
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, -1, NH * DH)
    return (o[:, :N] @ wo).square().mean() + (o[:, N:] @ wo).square().mean()


def _inputs():
    """The block's float64 gradients and bf16 inputs; the op's inputs, output gradients and float64 gradients."""
    from helpers import unfused_float64

    g = torch.Generator().manual_seed(0)
    args = [torch.randn(B, N, WIDTH, generator=g), torch.randn(B, L, WIDTH, generator=g)]
    args += [torch.randn(WIDTH, NH * DH, generator=g) / 16 for _ in range(3)]
    args += [torch.randn(NH * DH, WIDTH, generator=g) / 16]
    exact = [a.double().to(DEVICE).requires_grad_() for a in args]
    want_block = torch.autograd.grad(block(*exact), exact)
    x = [a.to(DEVICE, DTYPE).requires_grad_() for a in args]
    heads = [
        torch.randn(B, s, NH, DH, generator=g).to(DEVICE, DTYPE).transpose(1, 2) for s in (N, N, N, L, L, L)
    ]
    go, gjo = torch.randn_like(heads[0]), torch.randn_like(heads[3])
    doubles = [t.double().requires_grad_() for t in heads]
    want_op = torch.autograd.grad(unfused_float64(*doubles)[:2], doubles, (go.double(), gjo.double()))
    return x, want_block, heads, (go, gjo), want_op


def run(order: str) -> list[dict]:
    """The rows of one order, in this process."""
    from helpers import rel_err

    import jointattn

    x, want_block, heads, grads_out, want_op = _inputs()

    def op_row(case, forward, backward):
        os.environ["JOINTATTN_DISPATCH"] = f"forward={forward},backward={backward}"
        ins = [t.detach().requires_grad_() for t in heads]
        out, joint_out, _ = jointattn.joint_attention(*ins)
        got = torch.autograd.grad((out, joint_out), ins, grads_out)
        return dict(case=f"{case}: {forward} -> {backward}", op=[rel_err(a, w) for a, w in zip(got, want_op)])

    def pytorch_row(case):
        os.environ.pop("JOINTATTN_DISPATCH", None)
        got = torch.autograd.grad(block(*x), x)
        return dict(case=case, block=[rel_err(a, w) for a, w in zip(got, want_block)])

    rows = []
    if order == "op-first":
        rows += [op_row("op, fresh", f, b) for f, b in PAIRS]
        rows.append(pytorch_row("PyTorch's block, after the op's"))
        rows += [op_row("op, after PyTorch's block", f, b) for f, b in PAIRS]
    else:
        rows.append(pytorch_row("PyTorch's block, fresh"))
        rows += [op_row("op, after PyTorch's block", f, b) for f, b in PAIRS]
    for forward, backward in PAIRS:
        os.environ["JOINTATTN_DISPATCH"] = f"forward={forward},backward={backward}"
        torch._dynamo.reset()
        got = torch.autograd.grad(torch.compile(block, backend="jointattn")(*x), x)
        rows.append(dict(case=f"compiled block: {forward} -> {backward}",
                         block=[rel_err(a, w) for a, w in zip(got, want_block)]))  # fmt: skip
    os.environ.pop("JOINTATTN_DISPATCH", None)
    return rows


def main() -> int:
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("compiled_backward_check.py: needs a CUDA device", file=sys.stderr)
        return 2
    if len(sys.argv) == 3 and sys.argv[1] == "--order":  # one order, in a fresh process: rows as JSON
        print(json.dumps(run(sys.argv[2])))
        return 0
    rows = []
    for order in ("op-first", "pytorch-first"):
        done = subprocess.run([sys.executable, __file__, "--order", order], capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        rows += [dict(r, order=order) for r in json.loads(done.stdout.strip().splitlines()[-1])]
    print(f"{'order':14} {'case':52} grads (op: q k v jq jk jv; block: x c wq wk wv wo)")
    for r in rows:
        print(
            f"{r['order']:14} {r['case']:52} " + " ".join(f"{e:.4f}" for e in r.get("op", r.get("block", [])))
        )
    worst = max(max(r.get("op", r.get("block", [0.0]))) for r in rows)
    print(f"worst gradient error: {worst:.4f} (limit {LIMIT})")
    gpu = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    result = dict(device=gpu, torch=torch.__version__, shape=[B, NH, N, L, DH], rows=rows, worst=worst)
    name = "compiled_backward_check-" + gpu.split()[-1].lower() + ".json"
    for out_dir in [HERE / "results"] + ([pathlib.Path(os.environ["OUT"])] if os.environ.get("OUT") else []):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / name).write_text(json.dumps(result, indent=1))
    return 0 if worst <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
