"""Offline sm_90a build of the Gluon Hopper backward (no GPU needed): prints one JSON line with what its speed
rests on. Run by tests/test_hopper_backward.py in a fresh interpreter; by hand:
python tests/hopper_backward_build_report.py 128 [block_m keys_per_wg num_stages [split_dq]]

Fields: num_warps and shared bytes of the build, raised_regs (setmaxnreg.inc values and how often), spill_free
and the ptxas report, wgmma_serialized (ptxas's C7512: a wait after every wgmma, for lack of registers),
loop_spills (per consumer query loop), wgmma (HGMMA instructions in the SASS), atomics (RED/ATOM instructions)
and tma_reduces (the dQ reduce-adds).
"""

from __future__ import annotations

import collections
import json
import re
import sys

import triton
from hopper_build_report import ptxas_and_sass
from jointattn.kernels.configs import HopperBackwardConfig, hopper_backward_config
from jointattn.kernels.joint_attention_bwd_hopper import joint_attention_bwd_hopper_kernel
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource


def compile_for_sm90(dh: int, config=None):
    config = config or hopper_backward_config(dh)

    def desc(rows):
        layout = gl.NVMMASharedLayout.get_default_for([1, 1, rows, dh], gl.bfloat16)
        return f"tensordesc<bf16[1, 1, {rows}, {dh}],{layout!r}>"

    bm, bk = config.block_m, config.keys_per_wg
    names = ("desc_q", "desc_k", "desc_v", "desc_jq", "desc_jk", "desc_jv", "desc_do", "desc_djo")
    signature = dict(zip(names, map(desc, (bm, bk, bk, bm, bk, bk, bm, bm))))
    cols = config.dq_cols(dh)
    accumulator = gl.NVMMASharedLayout.get_default_for([1, 1, bm, cols], gl.float32)
    signature |= dict.fromkeys(
        ("desc_dqa", "desc_djqa"), f"tensordesc<fp32[1, 1, {bm}, {cols}],{accumulator!r}>"
    )
    signature |= {"M": "*fp32", "DELTA": "*fp32"}
    signature |= dict.fromkeys(("DK", "DV", "DJK", "DJV"), "*bf16")
    signature |= {"N_LEN": "*i32", "L_LEN": "*i32"}
    for name in ("dk", "dv", "djk", "djv"):
        signature |= {f"stride_{name}{axis}": "i64" for axis in "bhsd"}
    signature |= {"qk_scale": "fp32", "scale": "fp32", "N": "i32", "L": "i32", "H": "i32"}
    constexprs = dict(BLOCK_M=bm, KEYS_PER_WG=bk, HEAD_DIM=dh, NUM_STAGES=config.num_stages, HAS_N_LEN=True,
                      HAS_L_LEN=True, CONSUMER_REGS=config.consumer_regs)  # fmt: skip
    signature |= dict.fromkeys(constexprs, "constexpr")
    source = GluonASTSource(joint_attention_bwd_hopper_kernel, signature, constexprs=constexprs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})


def loop_spills(sass: str) -> list[tuple[int, int]]:
    """(spill stores, spill loads) per iteration of each consumer's query loop: the innermost backward branches
    whose body issues wgmma (HGMMA). Spills outside the loops run once per CTA."""
    code = [(int(a, 16), text) for a, text in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    loops = []  # (first address, last address) of each backward branch's body that issues wgmma
    for address, text in code:
        target = re.search(r"\bBRA\s+(?:`\(\.L_x_\d+\)\s*)?(0x[0-9a-f]+)", text)
        if target and int(target.group(1), 16) < address:
            start = int(target.group(1), 16)
            if any("HGMMA" in t for a, t in code if start <= a <= address):
                loops.append((start, address))
    inner = [
        (s, e) for s, e in loops if not any(s <= s2 and e2 <= e and (s2, e2) != (s, e) for s2, e2 in loops)
    ]
    body = [[t for a, t in code if s <= a <= e] for s, e in inner]
    # Out-of-line retry blocks of mbarrier waits, placed after the function's end, branch back across most of
    # it: not loops of the kernel. A query loop's body is a few hundred instructions.
    return [(sum("STL" in t for t in b), sum("LDL" in t for t in b)) for b in body if len(b) < 1500]


def main(dh: int, config=None) -> dict:
    compiled = compile_for_sm90(dh, config)
    ptx = compiled.asm["ptx"]
    report, sass = ptxas_and_sass(compiled)
    return dict(
        dh=dh,
        num_warps=compiled.metadata.num_warps,
        shared=compiled.metadata.shared,
        raised_regs=collections.Counter(re.findall(r"setmaxnreg\.inc\.sync\.aligned\.u32\s+(\d+)", ptx)),
        spill_free="0 bytes spill stores, 0 bytes spill loads" in report,
        # ptxas C7512: too few registers to keep wgmmas in flight, so it waits after each one.
        wgmma_serialized="C7512" in report,
        loop_spills=loop_spills(sass),
        ptxas=report,
        wgmma=sass.count("HGMMA."),
        atomics=len(re.findall(r"\b(?:REDG?|ATOMG?)\.", sass)),
        tma_reduces=len(re.findall(r"UTMAREDG", sass)),
    )


if __name__ == "__main__":  # dh [block_m keys_per_wg num_stages [split_dq 0/1]]: another config
    extra = [int(x) for x in sys.argv[2:]]
    candidate = (
        HopperBackwardConfig(*extra[:3], 240, split_dq=bool(extra[3:4] and extra[3])) if extra else None
    )
    print(json.dumps(main(int(sys.argv[1]), candidate)))
