"""Correctness against torch SDPA and timing of the Gluon FA3 experiment's variants (H100/H200 only):
cd benchmarks/gluon_fa3 && python bench_fa3.py        # results-h100.txt is one such run"""

import torch
import triton
from fa3_hopper_gluon import attention_fwd

torch.manual_seed(0)
Z, H, N, D = 1, 24, 4608, 128  # Flux-like: 4096 + 512 tokens, dh 128
q, k, v = (torch.randn(Z, H, N, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
sm_scale = D**-0.5
ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=sm_scale)
flops = 4 * Z * H * N * N * D
for overlap, pingpong, fence in [
    (True, True, True),
    (True, True, False),
    (True, False, True),
    (False, True, True),
    (False, False, True),
]:
    kw = dict(OVERLAP=overlap, PINGPONG=pingpong, FENCE_BRANCH=fence)
    out = attention_fwd(q, k, v, sm_scale, **kw)
    err = (out.float() - ref.float()).abs().max().item()
    ms = triton.testing.do_bench(lambda kw=kw: attention_fwd(q, k, v, sm_scale, **kw))
    print(f"{kw}: max|err|={err:.3e}  {ms:.3f} ms  {flops / ms * 1e-9:.0f} TFLOP/s")
ms = triton.testing.do_bench(
    lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=sm_scale)
)
print(f"torch SDPA (cuDNN/flash): {ms:.3f} ms  {flops / ms * 1e-9:.0f} TFLOP/s")
