// RUN: %jointattn-opt %s -p 'fuse-joint-attention' -t python | %filecheck %s --check-prefix=FUSED
// RUN: %jointattn-opt %s -p 'fuse-joint-attention{emit=operator},lower-joint-attention{target=ttnn}' -t python | %filecheck %s --check-prefix=TTNN
// RUN: %jointattn-opt %s -p 'fuse-joint-attention,lower-joint-attention{target=triton}' -t python | %filecheck %s --check-prefix=TRITON
// RUN: %jointattn-opt %s -t python | %filecheck %s --check-prefix=UNFUSED

// `-t python` prints the function `compiler.mlir.emit.compile_module` runs: the MLIR path is executed, not only
// printed (tests/test_mlir_e2e.py runs it against eager). Constants become literals, ATen ops calls bound to
// their schema, the joint-attention ops calls of the op, of the ttnn lowering entry or of the Triton launcher,
// and the masked form's scf.if a Python if/else.

func.func @main(%q: !torch.vtensor<[2,2,5,8],f32>, %jq: !torch.vtensor<[2,2,3,8],f32>, %lengths: !torch.vtensor<[2],si64>) -> (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>) {
  %int0 = torch.constant.int 0
  %int1 = torch.constant.int 1
  %int2 = torch.constant.int 2
  %int3 = torch.constant.int 3
  %int5 = torch.constant.int 5
  %int8 = torch.constant.int 8
  %none = torch.constant.none
  %false = torch.constant.bool false
  %float0.000000e00 = torch.constant.float 0.000000e+00
  %cpu = torch.constant.device "cpu"
  %l = torch.prim.ListConstruct %q, %jq : (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>) -> !torch.list<vtensor>
  %c = torch.aten.cat %l, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[2,2,8,8],f32>
  %ar = torch.aten.arange.start_step %int0, %int3, %int1, %none, %int0, %cpu, %false : !torch.int, !torch.int, !torch.int, !torch.none, !torch.int, !torch.Device, !torch.bool -> !torch.vtensor<[3],si64>
  %ar1 = torch.aten.unsqueeze %ar, %int0 : !torch.vtensor<[3],si64>, !torch.int -> !torch.vtensor<[1,3],si64>
  %len1 = torch.aten.unsqueeze %lengths, %int1 : !torch.vtensor<[2],si64>, !torch.int -> !torch.vtensor<[2,1],si64>
  %tv = torch.aten.lt.Tensor %ar1, %len1 : !torch.vtensor<[1,3],si64>, !torch.vtensor<[2,1],si64> -> !torch.vtensor<[2,3],i1>
  %iv = torch.vtensor.literal(dense<true> : tensor<2x5xi1>) : !torch.vtensor<[2,5],i1>
  %vl = torch.prim.ListConstruct %iv, %tv : (!torch.vtensor<[2,5],i1>, !torch.vtensor<[2,3],i1>) -> !torch.list<vtensor>
  %valid = torch.aten.cat %vl, %int1 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[2,8],i1>
  %m1 = torch.aten.unsqueeze %valid, %int1 : !torch.vtensor<[2,8],i1>, !torch.int -> !torch.vtensor<[2,1,8],i1>
  %mask = torch.aten.unsqueeze %m1, %int2 : !torch.vtensor<[2,1,8],i1>, !torch.int -> !torch.vtensor<[2,1,1,8],i1>
  %o = torch.aten.scaled_dot_product_attention %c, %c, %c, %mask, %float0.000000e00, %false, %none, %false : !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,1,1,8],i1>, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[2,2,8,8],f32>
  %a = torch.aten.slice.Tensor %o, %int2, %int0, %int5, %int1 : !torch.vtensor<[2,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[2,2,5,8],f32>
  %b = torch.aten.slice.Tensor %o, %int2, %int5, %int8, %int1 : !torch.vtensor<[2,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[2,2,3,8],f32>
  return %a, %b : !torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>
}

// A mask checked at run time (already fused, typed form): unlowered it runs the torch.library ops; lowered, the
// scf.if becomes a Python if on the check's host-side flag.
func.func @masked(%q: !torch.vtensor<[2,2,5,8],f32>, %jq: !torch.vtensor<[2,2,3,8],f32>, %km: !torch.vtensor<[2,1,1,5],i1>, %jm: !torch.vtensor<[2,1,1,3],i1>) -> (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>) {
  %ln, %ll, %ok = jointattn.key_padding_lengths %km, %jm {n = 5 : i64, l = 3 : i64} : !torch.vtensor<[2,1,1,5],i1>, !torch.vtensor<[2,1,1,3],i1> -> !torch.vtensor<[2],si64>, !torch.vtensor<[2],si64>, !torch.vtensor<[],i1>
  %out, %joint_out, %lse = jointattn.masked_joint_attention %q, %q, %q, %jq, %jq, %jq masks(%km, %jm : !torch.vtensor<[2,1,1,5],i1>, !torch.vtensor<[2,1,1,3],i1>) check(%ln, %ll, %ok : !torch.vtensor<[2],si64>) {scale = 2.500000e-01 : f64} : !torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32> -> !torch.vtensor<[2,2,8],f32>
  return %out, %joint_out : !torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>
}

// FUSED:      def main(arg0, arg1, arg2):
// FUSED-NEXT:     v0 = torch.ops.aten.clamp.default(arg2, 0, 3)
// FUSED-NEXT:     v1, v2, v3 = jointattn.joint_attention(arg0, arg0, arg0, arg1, arg1, arg1, scale=0.3535533905932738, logical_n=None, logical_l=v0)
// FUSED-NEXT:     return v1, v2

// TTNN:      def main(arg0, arg1, arg2):
// TTNN-NEXT:     v0 = torch.ops.aten.clamp.default(arg2, 0, 3)
// TTNN-NEXT:     with ttnn_config.overrides(math_fidelity='HiFi2', math_approx_mode=False, fp32_dest_acc_en=False, packer_l1_acc=False, exp_approx_mode=False):
// TTNN-NEXT:         v1, v2, v3 = ttnn_lowering.joint_sdpa(arg0, arg0, arg0, arg1, arg1, arg1, scale=0.3535533905932738, logical_n=None, logical_l=v0, q_chunk_size=32, k_chunk_size=32)
// TTNN-NEXT:     return v1, v2

// TRITON:      def main(arg0, arg1, arg2):
// TRITON-NEXT:     v0 = torch.ops.aten.clamp.default(arg2, 0, 3)
// TRITON-NEXT:     v1, v2, v3 = joint_outputs(arg0, arg1)
// TRITON-NEXT:     triton_runtime.launch_forward(JointCall.of(arg0, arg0, arg0, arg1, arg1, arg1, 0.3535533905932738, None, v0), v1, v2, v3, config=LaunchConfig(block_m={{[0-9]+}}, block_n={{[0-9]+}}, num_warps={{[0-9]+}}, num_stages={{[0-9]+}}))
// TRITON-NEXT:     return v1, v2

// UNFUSED:      def main(arg0, arg1, arg2):
// UNFUSED-NEXT:     v0 = torch.ops.aten.cat.default([arg0, arg1], 2)
// UNFUSED-NEXT:     v1 = torch.ops.aten.arange.start_step(0, 3, 1, dtype=None, layout=0, device=torch.device('cpu'), pin_memory=False)
// The constant validity literal is decoded at compile time and passed in as `_const0`.
// UNFUSED:          v5 = torch.ops.aten.cat.default([_const0, v4], 1)
// UNFUSED:          v8 = torch.ops.aten.scaled_dot_product_attention.default(v0, v0, v0, v7, 0.0, False, scale=None, enable_gqa=False)
// UNFUSED-NEXT:     v9 = torch.ops.aten.slice.Tensor(v8, 2, 0, 5, 1)
// UNFUSED-NEXT:     v10 = torch.ops.aten.slice.Tensor(v8, 2, 5, 8, 1)
// UNFUSED-NEXT:     return v9, v10

// FUSED:      def masked(arg0, arg1, arg2, arg3):
// FUSED-NEXT:     [[LN:v[0-9]+]], [[LL:v[0-9]+]], [[OK:v[0-9]+]] = torch.ops.jointattn.key_padding_lengths.default(arg2, arg3, 2, 5, 3)
// FUSED-NEXT:     [[O:v[0-9]+]], [[JO:v[0-9]+]], {{v[0-9]+}} = torch.ops.jointattn.masked_joint_attention.default(arg0, arg0, arg0, arg1, arg1, arg1, arg2, arg3, [[LN]], [[LL]], [[OK]], 0.25, 'auto')
// FUSED-NEXT:     return [[O]], [[JO]]

// TTNN:      def masked(arg0, arg1, arg2, arg3):
// TTNN-NEXT:     [[LN:v[0-9]+]], [[LL:v[0-9]+]], [[OK:v[0-9]+]] = torch.ops.jointattn.key_padding_lengths.default(arg2, arg3, 2, 5, 3)
// TTNN-NEXT:     [[FLAG:v[0-9]+]] = torch.ops.aten.Bool.Tensor([[OK]])
// TTNN-NEXT:     if [[FLAG]]:
// TTNN-NEXT:         with ttnn_config.overrides(math_fidelity='HiFi2', math_approx_mode=False, fp32_dest_acc_en=False, packer_l1_acc=False, exp_approx_mode=False):
// TTNN-NEXT:             [[P:v[0-9]+, v[0-9]+, v[0-9]+]] = ttnn_lowering.joint_sdpa(arg0, arg0, arg0, arg1, arg1, arg1, scale=0.25, logical_n=[[LN]], logical_l=[[LL]], q_chunk_size=32, k_chunk_size=32)
// TTNN-NEXT:         [[R:v[0-9]+, v[0-9]+, v[0-9]+]] = [[P]]
// TTNN-NEXT:     else:
// TTNN-NEXT:         [[E:v[0-9]+, v[0-9]+, v[0-9]+]] = masked_reference(arg0, arg0, arg0, arg1, arg1, arg1, arg2, arg3, scale=0.25)
// TTNN-NEXT:         [[R]] = [[E]]
// TTNN-NEXT:     return

// TRITON:      def masked(arg0, arg1, arg2, arg3):
// TRITON-NEXT:     [[LN:v[0-9]+]], [[LL:v[0-9]+]], [[OK:v[0-9]+]] = torch.ops.jointattn.key_padding_lengths.default(arg2, arg3, 2, 5, 3)
// TRITON-NEXT:     [[FLAG:v[0-9]+]] = torch.ops.aten.Bool.Tensor([[OK]])
// TRITON-NEXT:     if [[FLAG]]:
// TRITON-NEXT:         [[P:v[0-9]+, v[0-9]+, v[0-9]+]] = joint_outputs(arg0, arg1)
// TRITON-NEXT:         triton_runtime.launch_forward(JointCall.of(arg0, arg0, arg0, arg1, arg1, arg1, 0.25, [[LN]], [[LL]]), [[P]], config=LaunchConfig(
// TRITON-NEXT:         [[R:v[0-9]+, v[0-9]+, v[0-9]+]] = [[P]]
// TRITON-NEXT:     else:
// TRITON-NEXT:         [[E:v[0-9]+, v[0-9]+, v[0-9]+]] = masked_reference(arg0, arg0, arg0, arg1, arg1, arg1, arg2, arg3, scale=0.25)
// TRITON-NEXT:         [[R]] = [[E]]
// TRITON-NEXT:     return
