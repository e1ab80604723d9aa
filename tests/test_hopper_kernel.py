"""The Gluon Hopper forward kernel (`kernels/joint_attention_fwd_hopper.py`).

Gluon has no CPU interpreter, so the suite has two halves:
- Everywhere (CI included): the kernel compiled offline for sm_90a with the wheel's own ptxas. Asserts the
  properties its speed rests on, each of which an innocent-looking edit can lose: registers raised to the
  config's budget with no spills, shared memory within Hopper's 227 KB, and the softmax scheduled between the
  two wgmma waits (the overlap). Plus the launcher's envelope (what it refuses, and why).
- On a CUDA device of compute capability 9.x (`gpu` marker): outputs against a float64 cat -> masked softmax
  -> slice reference, on fresh random inputs, lengths that are not multiples of the 128-row tiles, padding on
  both token sets (different per batch element), empty sets, rows with no valid key, and strided layouts.
  Tolerance: relative error 1e-2 in bf16 / 5e-3 in fp16 (both products take 16-bit operands), lse absolute
  2e-3. Outputs are poisoned with NaN first, so an unwritten element fails.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess

import pytest
import torch
from helpers import unfused_float64
from jointattn.kernels.configs import SHARED_MEMORY_BYTES, hopper_forward_config
from jointattn.runtime.hopper_launch import hopper_unsupported
from jointattn.runtime.triton_runtime import launch_forward

HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9


def _offline_compile(dh: int):
    import triton
    from jointattn.kernels.joint_attention_fwd_hopper import joint_attention_fwd_hopper_kernel
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    config = hopper_forward_config(dh)

    def desc(rows):
        layout = gl.NVMMASharedLayout.get_default_for([1, 1, rows, dh], gl.bfloat16)
        return f"tensordesc<bf16[1, 1, {rows}, {dh}],{layout!r}>"

    bm, bn = config.block_m, config.block_n
    signature = dict(zip(("desc_q", "desc_k", "desc_v", "desc_jq", "desc_jk", "desc_jv", "desc_o", "desc_jo"),
                         map(desc, (bm, bn, bn, bm, bn, bn, bm, bm))))  # fmt: skip
    signature |= {"LSE": "*fp32", "N_LEN": "*i32", "L_LEN": "*i32", "stride_lb": "i32", "stride_lh": "i32",
                  "stride_ls": "i32", "qk_scale": "fp32", "N": "i32", "L": "i32", "H": "i32"}  # fmt: skip
    constexprs = dict(BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=dh, NUM_STAGES=config.num_stages, HAS_N_LEN=True,
                      HAS_L_LEN=True, CONSUMER_REGS=config.consumer_regs)  # fmt: skip
    signature |= dict.fromkeys(constexprs, "constexpr")
    source = GluonASTSource(joint_attention_fwd_hopper_kernel, signature, constexprs=constexprs)
    return config, triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})


def _ptxas_and_sass(compiled) -> tuple[str, str]:
    """ptxas -v's report on the kernel's PTX, and the SASS of the compiled cubin (the wheel's own tools)."""
    import tempfile

    import triton

    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.TemporaryDirectory() as tmp:
        ptx, cubin = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"])
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        ptxas = [os.path.join(tools, "ptxas"), "-arch=sm_90a", "-v", ptx, "-o", ptx + ".cubin"]
        report = subprocess.run(ptxas, capture_output=True, text=True, check=True)
        sass = subprocess.run([os.path.join(tools, "cuobjdump"), "-sass", cubin], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip
        return report.stdout + report.stderr, sass


def _softmax_inside_overlap(sass: str) -> list[int]:
    """Per `WARPGROUP.DEPBAR.LE gsb0, 0x1` (S_j done, P V in flight): the exp2s (MUFU) before the 0x0 wait."""
    counts = []
    for body in sass.split("WARPGROUP.DEPBAR.LE gsb0, 0x1")[1:]:
        counts.append(body.split("WARPGROUP.DEPBAR.LE gsb0, 0x0")[0].count("MUFU.EX2"))
    return counts


@pytest.mark.parametrize("dh", [64, 128])
def test_offline_build_keeps_the_schedule(dh):
    config, compiled = _offline_compile(dh)
    ptx = compiled.asm["ptx"]
    raised = collections.Counter(re.findall(r"setmaxnreg\.inc\.sync\.aligned\.u32\s+(\d+)", ptx))
    assert raised[str(config.consumer_regs)] == 2, f"consumers not raised to {config.consumer_regs}: {raised}"
    assert compiled.metadata.num_warps == 12  # producer warpgroup + two consumer warpgroups
    assert compiled.metadata.shared <= SHARED_MEMORY_BYTES
    report, sass = _ptxas_and_sass(compiled)
    assert "0 bytes spill stores, 0 bytes spill loads" in report, report
    # The overlap, in the machine code ptxas produced (it hoists waits when it can): in each consumer the
    # softmax's exp2s (one per score a thread holds: 64 x BLOCK_N / 128 threads, plus the rescale factors) sit
    # between the wait for S_j and the wait for P V.
    inside = _softmax_inside_overlap(sass)
    assert len(inside) == 2 and min(inside) >= config.block_m * config.block_n // 128, inside


def test_envelope_refuses_with_reasons():
    q = torch.zeros(1, 1, 8, 64)
    reason = hopper_unsupported((q,) * 8, 0.125)
    assert reason is not None and "CUDA" in reason
    assert hopper_forward_config(64) and hopper_forward_config(128)
    assert hopper_forward_config(96) is None and hopper_forward_config(256) is None


# (b, nh, N, L, dh, logical_n, logical_l)
CASES = {
    "flux_like_tail": (1, 3, 300, 77, 128, None, None),
    "pad_both_per_batch": (3, 2, 333, 150, 128, [333, 129, 1], [150, 0, 77]),
    "boundary_on_block": (2, 2, 512, 256, 128, [256, 384], [128, 255]),
    "dh64_sd3_like": (2, 3, 259, 154, 64, [259, 200], [154, 100]),
    "n_empty": (2, 2, 0, 200, 128, None, [200, 3]),
    "l_empty": (1, 2, 200, 0, 64, [150], None),
    "no_valid_key": (2, 1, 130, 40, 128, [0, 130], [0, 40]),
    "short": (1, 1, 5, 3, 64, None, None),
}


def _inputs(case, dtype, layout, seed):
    b, nh, n, l, dh, logical_n, logical_l = CASES[case]  # noqa: E741
    gen = torch.Generator().manual_seed(seed)

    def make(s):
        if layout == "bshd":  # [b, S, nh, dh] memory, the model layout
            t = torch.randn(b, s, nh, dh, generator=gen).transpose(1, 2)
        elif layout == "wide_rows":  # rows 16-byte aligned but wider than dh: TMA strides, not a view of dh
            t = torch.randn(b, nh, s, dh + 8, generator=gen)[..., :dh]
        else:
            t = torch.randn(b, nh, s, dh, generator=gen)
        return t.to("cuda", dtype)

    def lengths(value):
        return torch.tensor(value, device="cuda", dtype=torch.int64) if isinstance(value, list) else value

    return tuple(make(s) for s in (n, n, n, l, l, l)), lengths(logical_n), lengths(logical_l)


def _check(name, got, ref, tol):
    assert not torch.isnan(got).any(), f"{name}: NaN (unwritten element or 0/0)"
    if ref.numel():
        err = ((got.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()
        assert err <= tol, f"{name}: relative error {err:.3e} > {tol}"


@pytest.mark.gpu
@pytest.mark.skipif(not HOPPER, reason="the Hopper kernel needs compute capability 9.x")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("layout", ["bshd", "bhsd", "wide_rows"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_float64(case, layout, dtype):
    (q, k, v, jq, jk, jv), logical_n, logical_l = _inputs(case, dtype, layout, seed=len(case))
    b, nh, n, dh = q.shape
    l = jq.shape[2]  # noqa: E741
    scale = dh**-0.5
    out = torch.full((b, n, nh, dh), float("nan"), dtype=dtype, device="cuda").transpose(1, 2)
    joint_out = torch.full((b, nh, l, dh), float("nan"), dtype=dtype, device="cuda")
    lse = torch.full((b, nh, n + l), float("nan"), device="cuda")
    launch_forward(q, k, v, jq, jk, jv, out, joint_out, lse, scale, logical_n, logical_l, hopper=True)
    ref_out, ref_joint, ref_lse = unfused_float64(q, k, v, jq, jk, jv, scale=scale, logical_n=logical_n,
                                                  logical_l=logical_l)  # fmt: skip
    tol = 1e-2 if dtype == torch.bfloat16 else 5e-3
    _check("out", out, ref_out, tol)
    _check("joint_out", joint_out, ref_joint, tol)
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse)), "lse: -inf exactly where a row sees no key"
    finite = torch.isfinite(ref_lse)
    if finite.any():
        assert (lse[finite].double() - ref_lse[finite]).abs().max().item() <= 2e-3


@pytest.mark.gpu
@pytest.mark.skipif(not HOPPER, reason="the Hopper kernel needs compute capability 9.x")
def test_outside_envelope_runs_triton_and_insisting_raises():
    (q, k, v, jq, jk, jv), _, _ = _inputs("short", torch.bfloat16, "bhsd", seed=1)
    out, joint_out = torch.empty_like(q), torch.empty_like(jq)
    lse = torch.empty(1, 1, 8, device="cuda")
    with pytest.raises(ValueError, match="positive scale"):
        launch_forward(q, k, v, jq, jk, jv, out, joint_out, lse, -0.5, hopper=True)
    launch_forward(q, k, v, jq, jk, jv, out, joint_out, lse, -0.5)  # the Triton kernel takes it
    ref_out, _, _ = unfused_float64(q, k, v, jq, jk, jv, scale=-0.5)
    _check("out", out, ref_out, 1e-2)
    with pytest.raises(ValueError, match="dh 64 and 128"):
        (q, k, v, jq, jk, jv) = (t[..., :32].contiguous() for t in (q, k, v, jq, jk, jv))
        launch_forward(q, k, v, jq, jk, jv, out[..., :32], joint_out[..., :32], lse, 0.2, hopper=True)
