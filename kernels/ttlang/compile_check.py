"""Compiles the joint-attention kernel with the TT-Lang compiler (PyPI `tt-lang` 1.1.1) down to its C++ kernels,
without a device: a standalone script, not part of the package.

    python3.12 -m venv /tmp/ttl312 && /tmp/ttl312/bin/pip install --no-deps tt-lang==1.1.1 \
        && /tmp/ttl312/bin/pip install numpy greenlet pyyaml
    /tmp/ttl312/bin/python kernels/ttlang/compile_check.py [--out DIR]

The compiler's wheel is CPython 3.12 only and depends on ttnn (tt-metal). Compiling needs neither a device nor
ttnn's runtime: `TTLANG_COMPILE_ONLY=1` stops after the C++ is written, and the compiler reads only the tensors'
shape, dtype and memory layout. So this script puts small stand-ins for `torch` (dtypes) and `ttnn` (a tensor with
those three, and the program-descriptor types, which it accepts and ignores) on the path, loads `schedule.py`,
`spelling.py` and `joint_attention.py` from this folder as a package of their own (the `jointattn` package needs the
real torch), and compiles every launch of a few plans, in bfloat16 and float32: the front end (Python syntax tree ->
TTL MLIR), the TTL pass pipeline and the C++ emission (`ttkernel_to_cpp_by_name`), for the two data-movement kernels
and the compute kernel. Not run: tt-metal's JIT compile of that C++ and the kernel on a device.

Exit status 0 when every launch compiled; the C++ goes to --out (default /tmp/ttlang-compile-check).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

TORCH_STUB = """
class dtype:
    def __init__(self, name): self.name = name
    def __repr__(self): return f"torch.{self.name}"
for _n in ["float32", "float16", "bfloat16", "int32", "uint32", "uint16", "uint8", "int64", "float64", "int8", "int16"]:
    globals()[_n] = dtype(_n)
bool = dtype("bool")
class Tensor: pass
class _Any:
    def __call__(self, *a, **k): return _Any()
    def __getattr__(self, n): return _Any()
nn = _Any()
def __getattr__(name): return _Any()
"""

TTNN_STUB = """
import types
class DataType:
    FLOAT32 = "FLOAT32"; BFLOAT16 = "BFLOAT16"
class Tensor:
    layout = "Layout.TILE"
    def __init__(self, rows, cols, dtype):
        self.shape = (rows, cols); self.dtype = dtype
    def memory_config(self):
        return types.SimpleNamespace(memory_layout="TensorMemoryLayout.INTERLEAVED", buffer_type="BufferType.DRAM")
    def device(self): return None
class _Anything:
    def __init__(self, *a, **k): pass
    def __call__(self, *a, **k): return _Anything()
    def __getattr__(self, n): return _Anything()
    def __iter__(self): return iter(())
def __getattr__(name): return _Anything
"""

# (b, nh, N, L, dh, valid_n, valid_l, q_chunk, k_chunk, grid, carry): tails of both sets, boundary tiles, a ring
# step that carries, a joint-only call, chunks of 1 tile, SD3.5's and Flux's sizes with the chunks the runtime
# would choose for them (Flux's do not fit L1 in float32: refused, as the runtime refuses them).
CASES = [
    (2, 3, 100, 19, 64, 37, 5, 3, 5, (2, 3), False),
    (1, 1, 3001, 77, 64, 2990, 70, 4, 4, (8, 8), True),
    (1, 2, 0, 19, 64, 0, 19, 2, 8, (1, 1), False),
    (2, 2, 15, 19, 40, 7, 3, 1, 1, (2, 2), False),
    (2, 38, 4096, 333, 64, 4096, 77, 4, 8, (8, 8), False),
    (1, 24, 4096, 512, 128, 4096, 77, 4, 8, (8, 8), False),
]
# A ring of 3 (N = 101 in shards of 34, 90 valid; L = 33, 7 valid): every (step, device) plan.
RING = dict(
    b=1, nh=2, shard_rows=34, l=33, dh=40, ring=3, valid_n=90, valid_l=7, q_chunk=2, k_chunk=3, grid=(2, 2)
)


def _load_kernels():
    package = "ttlang_kernels"
    spec = importlib.util.spec_from_file_location(
        package, HERE / "__init__.py", submodule_search_locations=[str(HERE)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    for name in ("schedule", "spelling", "joint_attention"):
        sub = importlib.util.spec_from_file_location(f"{package}.{name}", HERE / f"{name}.py")
        loaded = importlib.util.module_from_spec(sub)
        sys.modules[f"{package}.{name}"] = loaded
        sub.loader.exec_module(loaded)
    return sys.modules[f"{package}.schedule"], sys.modules[f"{package}.joint_attention"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default="/tmp/ttlang-compile-check", help="where the compiler writes the C++"
    )
    parser.add_argument("--verbose", action="store_true", help="show the compiler's own output")
    args = parser.parse_args()
    if sys.version_info[:2] != (3, 12):
        print(f"compile_check: needs CPython 3.12 (the tt-lang wheel's); this is {sys.version.split()[0]}")
        return 2
    stubs = Path(tempfile.mkdtemp(prefix="ttlang-stubs-"))
    for name, text in (("torch", TORCH_STUB), ("ttnn", TTNN_STUB)):
        (stubs / name).mkdir()
        (stubs / name / "__init__.py").write_text(text)
    sys.path.insert(0, str(stubs))
    out = Path(args.out).resolve()
    os.environ["TTLANG_COMPILE_ONLY"] = "1"
    os.environ["USER"] = os.path.relpath(out, "/tmp")  # the compiler writes /tmp/$USER/ttlang_kernel_*.cpp
    import torch
    import ttl
    import ttnn

    schedule, kernel = _load_kernels()
    assert kernel.ttl is ttl, "the spelling shim must pass the compiler's ttl through"
    plans = []
    for b, nh, n, l, dh, vn, vl, qc, kc, grid, carry in CASES:  # noqa: E741
        plans.append(
            schedule.plan_joint_attention(
                b, nh, n, l, dh, valid_n=vn, valid_l=vl, q_chunk=qc, k_chunk=kc, grid=grid, carry=carry
            )
        )
    plans += [plan for step in schedule.ring_plans(**RING) for plan in step]
    failures = compiled = refused = 0
    seen = set()  # ring plans repeat launches; each is compiled once per dtype
    for plan in plans:
        b, nh, n, l, dh, qc, kc, grid, vn, vl = (  # noqa: E741
            plan.b,
            plan.nh,
            plan.n,
            plan.l,
            plan.dh,
            plan.q_chunk,
            plan.k_chunk,
            plan.grid,
            plan.valid_n,
            plan.valid_l,
        )
        carry = plan.carry
        rows = [max(1, b * nh * schedule.tiles(s)) * 32 for s in (n, l)]
        width = plan.d_tiles * 32
        mask = (max(qc, kc) * 32, max(32, kc, plan.d_tiles) * 32)
        for dtype in (torch.bfloat16, torch.float32):
            try:
                schedule.check_l1(qc, kc, dh, "bfloat16" if dtype is torch.bfloat16 else "float32")
            except ValueError as error:
                refused += len(plan.launches)
                print(f"refused   {error}")
                continue
            for launch in plan.launches:
                if (launch, str(dtype)) in seen:
                    continue
                seen.add((launch, str(dtype)))
                shapes = [(rows[0], width)] * 3 + [(rows[1], width)] * 3 + [mask]
                shapes += [(rows[0], width), (rows[1], width), (rows[0], 32), (rows[1], 32)]
                tensors = [ttnn.Tensor(r, c, dtype) for r, c in shapes]
                label = f"N={n} L={l} dh={dh} valid {vn}/{vl} chunks {qc}/{kc} grid {grid} q_tiles {launch.q_tiles}"
                label += f" carry={int(carry)} {dtype}"
                log = io.StringIO()
                try:
                    with contextlib.redirect_stdout(log):
                        kernel.make_joint_attention(launch, 0.125)(*tensors)
                except Exception as error:  # noqa: BLE001 - every failure is reported, with the compiler's message
                    failures += 1
                    print(f"FAILED    {label}\n{error}")
                    continue
                finally:
                    if args.verbose:
                        print(log.getvalue())
                written = [line.split(" written to ")[1].rstrip(" =") for line in log.getvalue().splitlines()
                           if " kernel written to " in line]  # fmt: skip
                compiled += 1
                print(f"compiled  {label}: {len(written)} C++ kernels")
    print(
        f"{compiled} launches compiled, {failures} failed, {refused} refused before compiling; C++ in {out}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
