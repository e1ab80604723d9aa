"""Mochi's QK-norm + RoPE prologue at real size: how inductor compiles it in one graph, and the memory floor.

    python benchmarks/prologue.py

The Mochi profile (`results/profile-mochi-2layers.json`) shows one inductor kernel doing RMS-norm + RoPE of q and
k at ~2.3 ms per tensor, 7x the rope kernel of the graph-broken inductor baseline. This script times the same
computation (diffusers' MochiRMSNorm and Mochi's apply_rotary_emb, q and k of [1, 44520, 24, 128] bf16) compiled
in the ways that differ between the two graphs, against a hand-written Triton kernel at the memory floor:
- `one graph, tables inside`: cos/sin computed from the positions inside the compiled function (jointattn's
  single graph: inductor inlines cos/sin into every layer's prologue);
- `tables as inputs`: cos/sin realized before the prologue (what the graph-broken baseline gets);
- `triton kernel`: `kernels/rms_norm_rope.py`, one pass per tensor.
"""

from __future__ import annotations

import json
import os
import pathlib

import torch
import triton
from jointattn.runtime.ops.rms_norm_rope import reference

N, HEADS, DH = 44520, 24, 128


def tables(pos, frequencies):
    freqs = torch.einsum("nd,dhf->nhf", pos.float(), frequencies.float())
    return torch.cos(freqs), torch.sin(freqs)


def prologue_tables_inside(q, k, wq, wk, pos, frequencies):
    cos, sin = tables(pos, frequencies)
    return prologue_tables_given(q, k, wq, wk, cos, sin)


def prologue_tables_given(q, k, wq, wk, cos, sin):
    """MochiRMSNorm then Mochi's apply_rotary_emb, as the model writes them (`reference` is that code)."""
    return reference(q, wq, 1e-5, cos, sin), reference(k, wk, 1e-5, cos, sin)


def main():
    from jointattn.kernels.rms_norm_rope import rms_norm_rope

    torch.manual_seed(0)
    dev = "cuda"
    q, k = (torch.randn(1, N, HEADS, DH, device=dev, dtype=torch.bfloat16) for _ in range(2))
    wq, wk = (1 + 0.1 * torch.randn(DH, device=dev, dtype=torch.bfloat16) for _ in range(2))
    pos = torch.rand(N, 3, device=dev) * 50
    frequencies = 0.1 * torch.randn(3, HEADS, DH // 2, device=dev, dtype=torch.bfloat16)
    cos, sin = tables(pos, frequencies)
    expected = prologue_tables_given(q, k, wq, wk, cos, sin)

    inside = torch.compile(prologue_tables_inside)
    given = torch.compile(prologue_tables_given)
    variants = {
        "eager": lambda: prologue_tables_given(q, k, wq, wk, cos, sin),
        "one graph, tables inside": lambda: inside(q, k, wq, wk, pos, frequencies),
        "tables as inputs": lambda: given(q, k, wq, wk, cos, sin),
        "triton kernel": lambda: (rms_norm_rope(q, wq, 1e-5, cos, sin), rms_norm_rope(k, wk, 1e-5, cos, sin)),
    }
    moved = 2 * (2 * q.numel() * 2) + 2 * cos.numel() * 4  # q,k read+written (bf16), cos/sin read (fp32)
    rows = []
    for name, fn in variants.items():
        got = fn()
        err = max((g.float() - e.float()).abs().max().item() for g, e in zip(got, expected, strict=True))
        ms = triton.testing.do_bench(fn, warmup=25, rep=200)
        rows.append(dict(variant=name, ms=round(ms, 4), gb_per_s=round(moved / ms / 1e6, 1), max_abs_err=err))
        print(f"{name:28s} {ms:8.3f} ms  {moved / ms / 1e6:7.1f} GB/s  max|err| {err:.3g}", flush=True)
    result = dict(
        device=torch.cuda.get_device_name(),
        torch=torch.__version__,
        triton=triton.__version__,
        shape=[1, N, HEADS, DH],
        bytes_moved=moved,
        rows=rows,
    )
    out = pathlib.Path(os.environ.get("OUT", "benchmarks/results"), "prologue-mochi.json")
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
