"""Offline sm_90 build of the block-sparse Triton kernels at the configs the runtime launches (no GPU needed):
prints one JSON line, per kernel and config, with registers, spill bytes and shared memory. Run by
tests/test_sparse_build.py in a fresh interpreter (Triton's interpreter, which the test session turns on, cannot
compile); by hand: python tests/sparse_build_report.py

A launch specializes its arguments (Triton's binder: an integer equal to 1 becomes a constexpr, pointers and
integers divisible by 16 carry that fact); the build here does the same for the layout a model launches with
(unit dh stride, 16-aligned tensors and strides), so the registers it reports are the launch's.
"""

from __future__ import annotations

import json
import re
import sys

import torch
import triton
from hopper_build_report import ptxas_and_sass
from jointattn.kernels import sparse_joint_attention_bwd as bwd
from jointattn.kernels import sparse_joint_attention_fwd as fwd
from jointattn.runtime.sparse_triton_backward import gathered_key_tile
from jointattn.runtime.sparse_triton_runtime import sparse_config
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

FLOAT_ARGS = {"scale", "qk_scale", "share"}
INT_ARGS = {"N", "L", "H", "QBN", "KBN"}  # sizes; every other capitalised argument is a tensor
FLOAT32_POINTERS = {"M", "DELTA", "LSE", "QM", "KM", "SCRATCH"}
INT32_POINTERS = {
    "NUM",
    "IDX",
    "FNUM",
    "FIDX",
    "BITS",
    "N_LEN",
    "L_LEN",
    "TNUM",
    "TQB",
    "TSLOT",
    "COUNT",
    "INDICES",
    "VALID",
}
# Strides that are 1 in a model's layout ([b, S, nh, dh] memory, int32 block lists): constexprs at launch.
UNIT_STRIDES = ("d", "_ls", "_ik", "_fik", "_bw", "_tqq", "_tsq")


class Layout:
    """The fields of a SpatialLayout that `sparse_config` reads."""

    def __init__(self, q_block: int, kv_block: int):
        self.q_block, self.kv_block = q_block, kv_block


def compile_sm90(kernel, constexprs: dict, num_warps: int, num_stages: int):
    signature, attrs, constants = {}, {}, dict(constexprs)
    for name in kernel.arg_names:
        if name not in constants and name.startswith("stride_") and name.endswith(UNIT_STRIDES):
            constants[name] = 1
    for i, name in enumerate(kernel.arg_names):
        if name in constants:
            signature[name] = "constexpr"
        elif name in FLOAT_ARGS:
            signature[name] = "fp32"
        elif name[0].isupper() and name not in INT_ARGS:
            kind = "fp32" if name in FLOAT32_POINTERS else "i32" if name in INT32_POINTERS else "bf16"
            signature[name] = "*" + kind
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "i32"
            if name.startswith("stride_"):
                attrs[(i,)] = [["tt.divisibility", 16]]
    source = ASTSource(kernel, signature, constexprs=constants, attrs=attrs)
    return triton.compile(
        source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, "num_stages": num_stages}
    )


def usage(compiled) -> dict:
    report, _ = ptxas_and_sass(compiled)
    regs = re.search(r"Used (\d+) registers", report)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    return dict(
        registers=int(regs.group(1)) if regs else None,
        spill_stores=int(spills.group(1)) if spills else None,
        spill_loads=int(spills.group(2)) if spills else None,
        shared=compiled.metadata.shared,
        # ptxas C7512: too few registers to keep wgmmas in flight, so it waits after each one.
        wgmma_serialized="C7512" in report,
    )


def builds(dhs=(64, 128), kv_blocks=(64, 16, 256)):
    """Every sparse kernel at the config the runtime picks for bf16, 128-row query blocks and these key blocks."""
    found = {}
    for kv_block in kv_blocks:
        layout = Layout(128, kv_block)
        for dh in dhs:
            common = dict(HEAD_DIM=dh, BLOCK_D=dh, Q_BLOCK=128, KV_BLOCK=kv_block, HAS_N_LEN=False,
                          HAS_L_LEN=True, DOT_PRECISION="tf32")  # fmt: skip
            bm, bn, warps, stages = sparse_config(layout, dh, torch.bfloat16, backward=False)
            kernels = [("forward", fwd.sparse_joint_attention_fwd_kernel,
                        dict(common, BLOCK_M=bm, BLOCK_N=bn, POSITIVE_SCALE=True), warps, stages)]  # fmt: skip
            bm, bn, warps, stages = sparse_config(layout, dh, torch.bfloat16, backward=True)
            dq_n = gathered_key_tile(layout, dh, torch.bfloat16, bn)
            kernels += [
                ("dq", bwd.sparse_joint_attention_bwd_dq_kernel, dict(common, BLOCK_M=bm, BLOCK_N=dq_n), warps, stages),
                ("dkdv", bwd.sparse_joint_attention_bwd_dkdv_kernel, dict(common, BLOCK_M=bm, BLOCK_N=bn), warps, stages),
            ]  # fmt: skip
            for name, kernel, constexprs, warps_, stages_ in kernels:
                key = f"{name} dh{dh} mask 128x{kv_block} tile {constexprs['BLOCK_M']}x{constexprs['BLOCK_N']} w{warps_} s{stages_}"
                found[key] = usage(compile_sm90(kernel, constexprs, warps_, stages_))
    return found


def _compile_gluon_sm90(kernel, signature: dict, constexprs: dict):
    """A Gluon kernel built for sm_90 as a launch specializes it: strides named as unit (`UNIT_STRIDES`) are
    constexpr 1, the other strides i32."""
    from triton.experimental.gluon._runtime import GluonASTSource

    constexprs = dict(constexprs)
    for name in kernel.arg_names:
        if name.startswith("stride_"):
            unit = name.endswith(UNIT_STRIDES)
            signature[name] = "constexpr" if unit else "i32"
            if unit:
                constexprs[name] = 1
    signature |= dict.fromkeys(constexprs, "constexpr")
    signature = {name: signature[name] for name in kernel.arg_names}
    source = GluonASTSource(kernel, signature, constexprs=constexprs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})


def compile_hopper_sm90(dh: int, kv_block: int, q_block: int = 128):
    """The Gluon sparse forward as its launcher builds it for bf16 (`sparse_hopper_launch.py`): the spatial k/v
    descriptors box min(kv_block, BLOCK_N) rows; unit strides of the lists, bits and lse are constexprs."""
    from jointattn.kernels.configs import hopper_forward_config
    from jointattn.kernels.sparse_joint_attention_fwd_hopper import (
        sparse_joint_attention_fwd_hopper_kernel as kernel,
    )
    from triton.experimental.gluon import language as gl

    config = hopper_forward_config(dh)
    bm, bn = config.block_m, config.block_n
    box = min(kv_block, bn)

    def desc(rows):
        layout = gl.NVMMASharedLayout.get_default_for([1, 1, rows, dh], gl.bfloat16)
        return f"tensordesc<bf16[1, 1, {rows}, {dh}],{layout!r}>"

    names = ("desc_q", "desc_k", "desc_v", "desc_jq", "desc_jk", "desc_jv", "desc_o", "desc_jo")
    signature = dict(zip(names, map(desc, (bm, box, box, bm, bn, bn, bm, bm))))
    signature |= dict(LSE="*fp32", qk_scale="fp32", N="i32", L="i32", H="i32")
    signature |= {name: "*i32" for name in INT32_POINTERS if name in kernel.arg_names}
    constexprs = dict(BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=dh, NUM_STAGES=config.num_stages, Q_BLOCK=q_block,
                      KV_BLOCK=kv_block, HAS_L_LEN=True, CONSUMER_REGS=config.consumer_regs)  # fmt: skip
    return _compile_gluon_sm90(kernel, signature, constexprs)


def hopper_builds(dhs=(64, 128), kv_blocks=(16, 64, 128, 256)):
    """The Gluon sparse forward at each head size and key block (query blocks of 128 rows)."""
    return {
        f"hopper-forward dh{dh} mask 128x{kv_block}": usage(compile_hopper_sm90(dh, kv_block))
        for dh in dhs
        for kv_block in kv_blocks
    }


def compile_hopper_backward_sm90(dh: int, kv_block: int, q_block: int = 128, has_partial: bool = True):
    """The Gluon sparse backward as its launcher builds it for bf16 (`sparse_hopper_launch.py`): q/dO boxes of
    BLOCK_M rows, k/v boxes of 64, float32 dQ accumulators; unit strides are constexprs."""
    from jointattn.kernels.configs import hopper_sparse_backward_config
    from jointattn.kernels.sparse_joint_attention_bwd_hopper import (
        sparse_joint_attention_bwd_hopper_kernel as kernel,
    )
    from triton.experimental.gluon import language as gl

    config = hopper_sparse_backward_config(dh, kv_block)
    bm, bn = config.block_m, config.keys_per_wg

    def desc(rows, dtype="bf16", gl_dtype=gl.bfloat16):
        layout = gl.NVMMASharedLayout.get_default_for([1, 1, rows, dh], gl_dtype)
        return f"tensordesc<{dtype}[1, 1, {rows}, {dh}],{layout!r}>"

    names = ("desc_q", "desc_k", "desc_v", "desc_jq", "desc_jk", "desc_jv", "desc_do", "desc_djo")
    signature = dict(zip(names, map(desc, (bm, bn, bn, bm, bn, bn, bm, bm))))
    signature |= dict.fromkeys(("desc_dqa", "desc_djqa"), desc(bm, "fp32", gl.float32))
    signature |= dict(M="*fp32", DELTA="*fp32", qk_scale="fp32", scale="fp32", N="i32", L="i32", H="i32")
    signature |= dict.fromkeys(("DK", "DV", "DJK", "DJV"), "*bf16")
    signature |= {name: "*i32" for name in INT32_POINTERS if name in kernel.arg_names}
    constexprs = dict(BLOCK_M=bm, HEAD_DIM=dh, NUM_STAGES=config.num_stages, Q_BLOCK=q_block, KV_BLOCK=kv_block,
                      HAS_L_LEN=True, CONSUMER_REGS=config.consumer_regs,
                      SPLIT_KEYS=not config.alternate_steps, HAS_PARTIAL=has_partial)  # fmt: skip
    return _compile_gluon_sm90(kernel, signature, constexprs)


def hopper_backward_builds(dhs=(64, 128), kv_blocks=(64, 128)):
    """The Gluon sparse backward at each head size and key block (query blocks of 128 rows: CTAs of 64 keys,
    then of 128), with the partial path and without it (masks of full blocks only, as the estimator's)."""
    return {
        f"hopper-backward dh{dh} mask 128x{kv_block}{'' if partial else ' full blocks only'}": usage(
            compile_hopper_backward_sm90(dh, kv_block, has_partial=partial)
        )
        for dh in dhs
        for kv_block in kv_blocks
        for partial in (True, False)
    }


def estimator_builds():
    """The estimator's two kernels (`kernels/estimate_blocks.py`) at Mochi's and SD3.5's tiles (bf16 q, k)."""
    from jointattn.kernels import estimate_blocks as est

    found = {}
    for dh, n, q_block, kv_block in (
        (128, 44520, 128, 64), (64, 4096, 128, 64), (64, 4096, 128, 128), (128, 44520, 128, 16)
    ):  # fmt: skip
        qbn, kbn = -(-n // q_block), -(-n // kv_block)
        t = est.grid_and_tiles(qbn, kbn, 1, dh)
        means = dict(
            Q_BLOCK=q_block, KV_BLOCK=kv_block, ROWS=t.rows, BLOCK_D=t.block_d, HEAD_DIM=dh, HAS_VALID=True
        )
        select = dict(KV_BLOCK=kv_block, QT=t.qt, CHUNK=t.chunk, KBN_PAD=t.kbn_pad, BLOCK_D=t.block_d,
                      HAS_VALID=True, BY_MASS=True, SEL_ROWS=t.select_rows, SEARCH=t.search)  # fmt: skip
        tag = f"dh{dh} mask {q_block}x{kv_block} N {n}"
        found[f"estimator-means {tag}"] = usage(compile_sm90(est.block_means_kernel, means, t.pool_warps, 2))
        found[f"estimator-select {tag}"] = usage(
            compile_sm90(est.select_blocks_kernel, select, t.select_warps, 2)
        )
    return found


if __name__ == "__main__":
    found = builds() | hopper_builds() | hopper_backward_builds() | estimator_builds()
    print(json.dumps(dict(triton=triton.__version__, builds=found), sort_keys=True))
    sys.exit(0)
