"""Offline sm_90a build of the Gluon Hopper forward (no GPU needed): prints one JSON line with what its speed
rests on. Run by tests/test_hopper_kernel.py in a fresh interpreter; by hand: python tests/hopper_build_report.py 128

Fields: num_warps and shared bytes of the build, raised_regs (setmaxnreg.inc values and how often), spill_free
and the ptxas report, exp2_between_waits (per consumer: MUFU.EX2 between the S_j wait and the P V wait).

`python tests/hopper_build_report.py fingerprints [--write]`: per config (dh 64/128 x bf16/fp16, and dh 128
with its integer arguments equal to 1) the sha256 of the PTX without its debug locations and labels, its
shared memory, and the cubin's registers and spills; --write stores them in hopper_fwd_fingerprints.json (only
after checking that a codegen change is intended: a pure refactor of the kernel leaves them as they are).
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import triton
from jointattn.kernels.configs import hopper_forward_config
from jointattn.kernels.joint_attention_fwd_hopper import joint_attention_fwd_hopper_kernel
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource

FINGERPRINTS = pathlib.Path(__file__).with_name("hopper_fwd_fingerprints.json")
DTYPES = {"bf16": gl.bfloat16, "fp16": gl.float16}


def compile_for_sm90(dh: int, dtype: str = "bf16", ones: bool = False):
    """The kernel for sm_90a; `ones`: as a launch with N, L, H and lse's row stride equal to 1 and no lengths
    compiles it (Triton's binder turns an integer argument equal to 1 into a constexpr)."""
    config = hopper_forward_config(dh)

    def desc(rows):
        layout = gl.NVMMASharedLayout.get_default_for([1, 1, rows, dh], DTYPES[dtype])
        return f"tensordesc<{dtype}[1, 1, {rows}, {dh}],{layout!r}>"

    bm, bn = config.block_m, config.block_n
    names = ("desc_q", "desc_k", "desc_v", "desc_jq", "desc_jk", "desc_jv", "desc_o", "desc_jo")
    signature = dict(zip(names, map(desc, (bm, bn, bn, bm, bn, bn, bm, bm))))
    signature |= {"LSE": "*fp32", "N_LEN": "*i32", "L_LEN": "*i32", "stride_lb": "i32", "stride_lh": "i32",
                  "stride_ls": "i32", "qk_scale": "fp32", "N": "i32", "L": "i32", "H": "i32"}  # fmt: skip
    constexprs = dict(BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=dh, NUM_STAGES=config.num_stages, HAS_N_LEN=True,
                      HAS_L_LEN=True, CONSUMER_REGS=config.consumer_regs)  # fmt: skip
    if ones:
        signature |= {"N_LEN": "*fp32", "L_LEN": "*fp32"}  # lse stands in for absent lengths
        constexprs |= dict(HAS_N_LEN=False, HAS_L_LEN=False, stride_ls=1, N=1, L=1, H=1)
    signature |= dict.fromkeys(constexprs, "constexpr")
    source = GluonASTSource(joint_attention_fwd_hopper_kernel, signature, constexprs=constexprs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})


def ptxas_and_sass(compiled) -> tuple[str, str]:
    """ptxas -v's report on the kernel's PTX, and the SASS of its cubin (the wheel's own tools)."""
    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.TemporaryDirectory() as tmp:
        ptx, cubin = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"])
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        ptxas = [os.path.join(tools, "ptxas"), "-arch=sm_90a", "-v", ptx, "-o", ptx + ".cubin"]
        report = subprocess.run(ptxas, capture_output=True, text=True, check=True)
        dump = [os.path.join(tools, "cuobjdump"), "-sass", cubin]
        sass = subprocess.run(dump, capture_output=True, text=True, check=True).stdout
        return report.stdout + report.stderr, sass


def code_lines(ptx: str) -> list[str]:
    """The PTX's instructions and directives without comments, source locations, debug sections or the
    numbering of debug labels: what stays the same when only the kernel's source layout changes."""
    lines = []
    for line in ptx.splitlines():
        if ".section" in line and ".debug" in line:
            break
        line = re.sub(r"//.*", "", line).strip()
        if not line or line.startswith((".loc", ".file")) or re.fullmatch(r"\$L__tmp\d+:", line):
            continue
        lines.append(re.sub(r"\$L__tmp\d+", "$L__tmp", line))
    return lines


def resource_usage(compiled) -> dict:
    """Registers, stack and local memory of the cubin Triton built (`cuobjdump -res-usage`, milliseconds)."""
    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        dump = [os.path.join(tools, "cuobjdump"), "-res-usage", cubin]
        usage = subprocess.run(dump, capture_output=True, text=True, check=True).stdout
    return {name: int(value) for name, value in re.findall(r"\b(REG|STACK|LOCAL):(\d+)", usage)}


def fingerprint(dh: int, dtype: str, ones: bool = False) -> dict:
    compiled = compile_for_sm90(dh, dtype, ones)
    usage = resource_usage(compiled)
    code = code_lines(compiled.asm["ptx"])
    return dict(
        ptx_sha256=hashlib.sha256("\n".join(code).encode()).hexdigest(),
        ptx_lines=len(code),
        shared=compiled.metadata.shared,
        registers=usage["REG"],
        spill_free=usage["STACK"] == 0 and usage["LOCAL"] == 0,
    )


def fingerprints() -> dict:
    """Every config's fingerprint, keyed "dh_dtype", with the Triton version that produced them;
    "128_bf16_ones": the build with integer arguments equal to 1 (constexprs where the kernel expects
    tensors)."""
    configs = {f"{dh}_{dtype}": fingerprint(dh, dtype) for dh in (64, 128) for dtype in DTYPES}
    configs["128_bf16_ones"] = fingerprint(128, "bf16", ones=True)
    return dict(triton=triton.__version__, configs=configs)


def exp2_between_waits(sass: str) -> list[int]:
    """Per `WARPGROUP.DEPBAR.LE gsb0, 0x1` (S_j done, P V in flight): the MUFU.EX2 before the 0x0 wait."""
    return [
        body.split("WARPGROUP.DEPBAR.LE gsb0, 0x0")[0].count("MUFU.EX2")
        for body in sass.split("WARPGROUP.DEPBAR.LE gsb0, 0x1")[1:]
    ]


def main(dh: int) -> dict:
    compiled = compile_for_sm90(dh)
    ptx = compiled.asm["ptx"]
    report, sass = ptxas_and_sass(compiled)
    return dict(
        dh=dh,
        num_warps=compiled.metadata.num_warps,
        shared=compiled.metadata.shared,
        raised_regs=collections.Counter(re.findall(r"setmaxnreg\.inc\.sync\.aligned\.u32\s+(\d+)", ptx)),
        spill_free="0 bytes spill stores, 0 bytes spill loads" in report,
        ptxas=report,
        exp2_between_waits=exp2_between_waits(sass),
    )


if __name__ == "__main__":
    if sys.argv[1] == "fingerprints":
        found = fingerprints()
        if "--write" in sys.argv[2:]:
            FINGERPRINTS.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
        print(json.dumps(found))
    else:
        print(json.dumps(main(int(sys.argv[1]))))
