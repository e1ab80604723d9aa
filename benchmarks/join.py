"""The sdpa path's joins: one Triton launch (`runtime/join.py`) against torch.cat, on the model's layout
([b, S, nh, dh] transposed), at the sizes of the never-slower table. Prints a table, writes
`results/join-<device>.json` (and a copy under $OUT) and a bar plot of the speedup.

    python benchmarks/join.py              # on the GPU machine
    python benchmarks/join.py --quick      # one shape (a smoke run)

Each row: `pairs` joins of (spatial, text) pairs, the five of the sdpa backward (q, k, v, out, dO) or the three of
its forward; ms is the median of triton.testing.do_bench; GB/s counts each joined byte read once and written once.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from models import _versions  # noqa: E402

SHAPES = [  # b, nh, N, L, dh
    (2, 24, 1024, 333, 64),
    (2, 38, 4096, 333, 64),
    (1, 24, 4096, 512, 128),
    (1, 24, 44520, 256, 128),
]


def _model_layout(b, nh, s, dh):
    return torch.randn(b, s, nh, dh, device="cuda", dtype=torch.bfloat16).transpose(1, 2)


def measure(shape, pairs: int) -> dict:
    from jointattn.runtime import join
    from triton.testing import do_bench

    b, nh, n, l, dh = shape  # noqa: E741
    sets = [(_model_layout(b, nh, n, dh), _model_layout(b, nh, l, dh), n, l) for _ in range(pairs)]
    for got, (a, c, _, _) in zip(join.launch_join(sets), sets, strict=True):
        assert torch.equal(got, torch.cat([a, c], dim=2)), "the kernel's join differs from torch.cat"
    cat_ms = do_bench(lambda: [torch.cat([a, c], dim=2) for a, c, _, _ in sets], return_mode="median")
    kernel_ms = do_bench(lambda: join.launch_join(sets), return_mode="median")
    moved = 2 * pairs * b * nh * (n + l) * dh * 2
    return dict(
        shape=list(shape), pairs=pairs, cat_ms=round(cat_ms, 4), kernel_ms=round(kernel_ms, 4),
        cat_gbps=round(moved / cat_ms / 1e6, 1), kernel_gbps=round(moved / kernel_ms / 1e6, 1),
        speedup=round(cat_ms / kernel_ms, 2), taken_by_join_pairs=join.kernel_takes(sets),
    )  # fmt: skip


def _plot(rows, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    labels = [f"{tuple(r['shape'])}\n{r['pairs']} pairs" for r in rows]
    ax.bar(range(len(rows)), [r["speedup"] for r in rows])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(rows)), labels, fontsize=6)
    ax.set_ylabel("torch.cat ms / join kernel ms")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one shape")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="also copy the results here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("join.py: needs a CUDA device (the kernel's CPU check is tests/test_join.py)", file=sys.stderr)
        return 2
    rows = [measure(s, p) for s in (SHAPES[2:3] if args.quick else SHAPES) for p in (3, 5)]
    print(
        f"{'shape':>26} {'pairs':>5} {'cat ms':>8} {'kernel ms':>9} {'cat GB/s':>8} {'kern GB/s':>9} {'x':>5}"
    )
    for r in rows:
        print(f"{str(tuple(r['shape'])):>26} {r['pairs']:>5} {r['cat_ms']:>8.4f} {r['kernel_ms']:>9.4f} "
              f"{r['cat_gbps']:>8.0f} {r['kernel_gbps']:>9.0f} {r['speedup']:>5.2f}")  # fmt: skip
    device = torch.device("cuda")
    result = dict(env=_versions(device), rows=rows)
    name = "join-" + torch.cuda.get_device_name().split()[-1].lower()
    outs = [HERE / "results"] + ([pathlib.Path(args.out)] if args.out else [])
    for out in outs:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(result, indent=1))
        _plot(rows, out / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
