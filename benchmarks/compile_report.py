"""Compiles the forward kernel for Hopper (sm_90a) on a machine without a GPU and reports what it became.

    python benchmarks/compile_report.py                 # the default dh=128 bf16 config, TMA on
    python benchmarks/compile_report.py --dh 64 --block-m 128 --block-n 64 --warps 8 --stages 3 --no-tma

Triton's wheel carries ptxas and cuobjdump, so registers, spills, shared memory and the SASS instruction mix
(HGMMA = Hopper wgmma tensor-core path, UTMALDG = TMA loads, LDL/STL = local-memory spills, layout conversions
in the TTGIR) can be read here before spending device time. Shapes follow a model's [b, S, nh, dh] layout.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

import triton
from jointattn.kernels.configs import head_block
from jointattn.kernels.joint_attention_fwd import joint_attention_fwd_kernel
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource


def compile_forward(
    dh: int,
    block_m: int,
    block_n: int,
    warps: int,
    stages: int,
    use_tma: bool,
    padded: bool,
    warp_specialize: bool = False,
):
    fn = joint_attention_fwd_kernel
    block_d = head_block(dh)
    desc = lambda rows: f"tensordesc<bf16[1, 1, {rows}, {block_d}]>"
    sig, constants = {}, {}
    for name in ("Q", "K", "V", "JQ", "JK", "JV", "Out", "JointOut"):
        sig[name] = "*bf16"
    sig["LSE"] = "*fp32"
    rows = dict(q=block_m, k=block_n, v=block_n, jq=block_m, jk=block_n, jv=block_n, o=block_m, jo=block_m)
    for name, r in rows.items():
        sig[f"{name}_desc"] = desc(r) if use_tma else "constexpr"
        if not use_tma:
            constants[f"{name}_desc"] = None
    sig["N_LEN"] = "*i32" if padded else "constexpr"
    sig["L_LEN"] = "*i32" if padded else "constexpr"
    if not padded:
        constants["N_LEN"] = constants["L_LEN"] = None
    for arg in fn.arg_names:
        if arg.startswith("stride_"):
            if arg.endswith("d") and not arg.startswith("stride_l"):
                sig[arg], constants[arg] = (
                    "constexpr",
                    1,
                )  # unit stride along dh: specialized like a real launch
            elif arg == "stride_ls":
                sig[arg], constants[arg] = "constexpr", 1
            else:
                sig[arg] = "i32"
    sig["qk_scale"] = "fp32"
    for name in ("N", "L", "H"):
        sig[name] = "i32"
    meta = dict(HEAD_DIM=dh, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, HAS_N_LEN=padded, HAS_L_LEN=padded,
                POSITIVE_SCALE=True, DOT_PRECISION="tf32", USE_TMA=use_tma, WARP_SPECIALIZE=warp_specialize)  # fmt: skip
    for k, v in meta.items():
        sig[k], constants[k] = "constexpr", v
    signature = {name: sig[name] for name in fn.arg_names}
    attrs = {
        (fn.arg_names.index(n),): [["tt.divisibility", 16]] for n, t in signature.items() if t.startswith("*")
    }
    for n, t in signature.items():
        if t == "i32" and n.startswith("stride_"):
            attrs[(fn.arg_names.index(n),)] = [["tt.divisibility", 16]]
    src = ASTSource(fn, signature, {(fn.arg_names.index(k),): v for k, v in constants.items()}, attrs)
    target = GPUTarget("cuda", 90, 32)
    return triton.compile(src, target=target, options=dict(num_warps=warps, num_stages=stages))


def report(compiled) -> dict:
    ptx = compiled.asm["ptx"]
    ttgir = compiled.asm["ttgir"]
    bin_dir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        sass = subprocess.run(
            [os.path.join(bin_dir, "cuobjdump"), "--dump-sass", cubin], capture_output=True, text=True
        ).stdout
        res = subprocess.run(
            [os.path.join(bin_dir, "cuobjdump"), "--dump-resource-usage", cubin],
            capture_output=True,
            text=True,
        ).stdout
    regs = re.search(r"REG:(\d+)", res)
    stack = re.search(r"STACK:(\d+)", res)
    return dict(
        regs=int(regs.group(1)) if regs else None,
        stack=int(stack.group(1)) if stack else None,
        shared=compiled.metadata.shared,
        hgmma=sass.count("HGMMA"),
        utmaldg=sass.count("UTMALDG"),
        ldgsts=sass.count("LDGSTS"),
        ldl=sass.count("LDL"),
        stl=sass.count("STL"),
        mufu_ex2=sass.count("MUFU.EX2"),
        sass_lines=sass.count("\n"),
        convert_layout=ttgir.count("ttg.convert_layout"),
        local_alloc=ttgir.count("ttg.local_alloc"),
        ptx_wgmma=ptx.count("wgmma.mma_async"),
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dh", type=int, default=128)
    p.add_argument("--block-m", type=int, default=128)
    p.add_argument("--block-n", type=int, default=128)
    p.add_argument("--warps", type=int, default=8)
    p.add_argument("--stages", type=int, default=3)
    p.add_argument("--no-tma", action="store_true")
    p.add_argument("--padded", action="store_true")
    p.add_argument("--warp-specialize", action="store_true")
    p.add_argument("--dump", help="write ttgir/ptx/sass next to this path prefix")
    a = p.parse_args(argv)
    compiled = compile_forward(
        a.dh, a.block_m, a.block_n, a.warps, a.stages, not a.no_tma, a.padded, a.warp_specialize
    )
    print(report(compiled))
    if a.dump:
        for ext in ("ttgir", "ptx", "llir"):
            with open(f"{a.dump}.{ext}", "w") as f:
                f.write(compiled.asm[ext])
    return 0


if __name__ == "__main__":
    sys.exit(main())
