// RUN: not %jointattn-opt %s -p 'lower-joint-attention{target=triton}' 2>&1 | %filecheck %s
// RUN: %jointattn-opt %s -p 'lower-joint-attention{target=ttnn}' | %filecheck %s --check-prefix=TTNN

// What the Triton kernels do not take (`runtime/triton_runtime.py`: SUPPORTED_DTYPES, MAX_HEAD_DIM) fails the
// Triton lowering with the reason, before anything is rewritten; ttnn lowers it. (The head-dim limit:
// tests/test_mlir_e2e.py.)

func.func @float64(%q: !torch.vtensor<[1,2,5,8],f64>, %jq: !torch.vtensor<[1,2,3,8],f64>) -> !torch.vtensor<[1,2,5,8],f64> {
  %out, %joint_out, %lse = jointattn.joint_attention %q, %q, %q, %jq, %jq, %jq {scale = 1.250000e-01 : f64} : !torch.vtensor<[1,2,5,8],f64>, !torch.vtensor<[1,2,3,8],f64> -> !torch.vtensor<[1,2,8],f32>
  return %out : !torch.vtensor<[1,2,5,8],f64>
}

// CHECK: lower-joint-attention: jointattn.joint_attention: the Triton kernels take float16, bfloat16 or float32; got torch.float64
// TTNN-LABEL: func.func @float64(
// TTNN: ttnn.joint_scaled_dot_product_attention

