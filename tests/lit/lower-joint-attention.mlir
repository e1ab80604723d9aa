// RUN: %jointattn-opt %s --split-input-file -p 'lower-joint-attention{target=ttnn}' | %filecheck %s --check-prefix=TTNN
// RUN: %jointattn-opt %s --split-input-file -p 'lower-joint-attention{target=triton}' | %filecheck %s --check-prefix=TRITON
// RUN: %jointattn-opt %s --split-input-file -p 'lower-joint-attention{target=ttlang}' | %filecheck %s --check-prefix=TTLANG
// RUN: %jointattn-opt %s --split-input-file -p 'lower-joint-attention{target=triton remarks=true}' 2>&1 >/dev/null | %filecheck %s --check-prefix=REMARK
// RUN: not %jointattn-opt %s --split-input-file -p 'lower-joint-attention{target=triton gpu=hopper}' 2>&1 | %filecheck %s --check-prefix=BAD-GPU
// RUN: not %jointattn-opt %s --split-input-file -p 'lower-joint-attention{target=cuda}' 2>&1 | %filecheck %s --check-prefix=BAD-TARGET

// lower-joint-attention: the joint-attention op (typed or torch.operator form) to ttnn's joint SDPA, to a Triton
// launch or to the TT-Lang kernels, with the configuration the runtime would choose, printed into the IR. Exact
// values of the choice are checked against `runtime/ttnn/config.py`, `kernels/configs.py` and
// `runtime/ttlang/config.py` in tests/test_mlir_e2e.py.

// BAD-TARGET: jointattn-opt: error: lower-joint-attention: option target=cuda: expected one of ttnn, triton, ttlang

// The Triton target prints the kernel the dispatcher (runtime/dispatch.py) plans for the GPU it lowers for
// (`gpu`, default sm_90): float32 runs neither the Hopper kernel nor PyTorch's GPU SDPA, so the Triton kernel.
// REMARK: remark: lower-joint-attention: jointattn.joint_attention (1, 2, 5, 8 + 3): kernel triton on sm_90 (
// BAD-GPU: lower-joint-attention: gpu must be an architecture like sm_90; got 'hopper'

// The typed op, no padding.
func.func @typed(%q: !torch.vtensor<[1,2,5,8],f32>, %k: !torch.vtensor<[1,2,5,8],f32>, %v: !torch.vtensor<[1,2,5,8],f32>, %jq: !torch.vtensor<[1,2,3,8],f32>, %jk: !torch.vtensor<[1,2,3,8],f32>, %jv: !torch.vtensor<[1,2,3,8],f32>) -> (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) {
  %out, %joint_out, %lse = jointattn.joint_attention %q, %k, %v, %jq, %jk, %jv {scale = 3.000000e-01 : f64} : !torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32> -> !torch.vtensor<[1,2,8],f32>
  return %out, %joint_out : !torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>
}

// TTNN-LABEL: func.func @typed(
// TTNN-NEXT:    %out, %joint_out, %lse = ttnn.joint_scaled_dot_product_attention %q, %k, %v, %jq, %jk, %jv {joint_strategy = "rear", scale = 3.000000e-01 : f64, program_config = #ttnn.sdpa_program_config<q_chunk_size = 32, k_chunk_size = 32, exp_approx_mode = false>, compute_kernel_config = #ttnn.compute_kernel_config<math_fidelity = HiFi2, math_approx_mode = false, fp32_dest_acc_en = false, packer_l1_acc = false>} : !torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32> -> !torch.vtensor<[1,2,8],f32>
// TTNN-NEXT:    func.return %out, %joint_out

// TTLANG-LABEL: func.func @typed(
// TTLANG-NEXT:    %out, %joint_out, %lse = jointattn_ttlang.joint_attention %q, %k, %v, %jq, %jk, %jv {scale = 3.000000e-01 : f64, config = #jointattn_ttlang.config<q_chunk = 1, k_chunk = 1, grid_rows = 8, grid_cols = 8, ring_size = 1>} : !torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32> -> !torch.vtensor<[1,2,8],f32>
// TTLANG-NEXT:    func.return %out, %joint_out

// TRITON-LABEL: func.func @typed(
// TRITON-NEXT:    %out, %joint_out, %lse = jointattn_triton.launch_forward %q, %k, %v, %jq, %jk, %jv {scale = 3.000000e-01 : f64, config = #jointattn_triton.launch_config<block_m = {{[0-9]+}}, block_n = {{[0-9]+}}, num_warps = {{[0-9]+}}, num_stages = {{[0-9]+}}>, kernel = "triton"} : !torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32> -> !torch.vtensor<[1,2,8],f32>
// TRITON-NEXT:    func.return %out, %joint_out

// -----

// The torch.operator form (emit=operator, or a model that calls the op) with SDPA's default scale and per-batch
// valid lengths of the joint tokens; Mochi-like sizes, where the chunk sizes are no longer the minimum.
func.func @operator_form(%q: !torch.vtensor<[2,24,4096,64],bf16>, %k: !torch.vtensor<[2,24,4096,64],bf16>, %v: !torch.vtensor<[2,24,4096,64],bf16>, %jq: !torch.vtensor<[2,24,333,64],bf16>, %jk: !torch.vtensor<[2,24,333,64],bf16>, %jv: !torch.vtensor<[2,24,333,64],bf16>, %lengths: !torch.vtensor<[2],si64>) -> !torch.vtensor<[2,24,4096,64],bf16> {
  %str = torch.constant.str "rear"
  %none = torch.constant.none
  %str_0 = torch.constant.str "auto"
  %0:3 = torch.operator "torch.jointattn.joint_attention"(%q, %k, %v, %jq, %jk, %jv, %str, %none, %none, %lengths, %str_0) : (!torch.vtensor<[2,24,4096,64],bf16>, !torch.vtensor<[2,24,4096,64],bf16>, !torch.vtensor<[2,24,4096,64],bf16>, !torch.vtensor<[2,24,333,64],bf16>, !torch.vtensor<[2,24,333,64],bf16>, !torch.vtensor<[2,24,333,64],bf16>, !torch.str, !torch.none, !torch.none, !torch.vtensor<[2],si64>, !torch.str) -> (!torch.vtensor<[2,24,4096,64],bf16>, !torch.vtensor<[2,24,333,64],bf16>, !torch.vtensor<[2,24,4429],f32>)
  return %0#0 : !torch.vtensor<[2,24,4096,64],bf16>
}

// TTNN-LABEL: func.func @operator_form(
// TTNN-NOT:     torch.operator
// TTNN:         %[[OUT:[^,]+]], %{{[^,]+}}, %{{[^ ]+}} = ttnn.joint_scaled_dot_product_attention %q, %k, %v, %jq, %jk, %jv logical_l(%lengths : !torch.vtensor<[2],si64>) {joint_strategy = "rear", scale = 1.250000e-01 : f64, program_config = #ttnn.sdpa_program_config<q_chunk_size = {{[1-9][0-9]*}}, k_chunk_size = {{[1-9][0-9]*}}, exp_approx_mode = false>
// TTNN-SAME:    : !torch.vtensor<[2,24,4096,64],bf16>, !torch.vtensor<[2,24,333,64],bf16> -> !torch.vtensor<[2,24,4429],f32>
// TTNN-NEXT:    func.return %[[OUT]]

// TTLANG-LABEL: func.func @operator_form(
// TTLANG-NOT:     torch.operator
// TTLANG:         jointattn_ttlang.joint_attention %q, %k, %v, %jq, %jk, %jv logical_l(%lengths : !torch.vtensor<[2],si64>) {scale = 1.250000e-01 : f64, config = #jointattn_ttlang.config<q_chunk = {{[1-9][0-9]*}}, k_chunk = {{[1-9][0-9]*}}, grid_rows = 8, grid_cols = 8, ring_size = 1>}

// TRITON-LABEL: func.func @operator_form(
// TRITON:         jointattn_triton.launch_forward %q, %k, %v, %jq, %jk, %jv logical_l(%lengths : !torch.vtensor<[2],si64>) {scale = 1.250000e-01 : f64, config = #jointattn_triton.launch_config<

// -----

// A constant valid length of the spatial tokens stays a !torch.int operand.
func.func @int_length(%q: !torch.vtensor<[1,1,40,32],f16>, %jq: !torch.vtensor<[1,1,7,32],f16>) -> !torch.vtensor<[1,1,7,32],f16> {
  %int33 = torch.constant.int 33
  %out, %joint_out, %lse = jointattn.joint_attention %q, %q, %q, %jq, %jq, %jq logical_n(%int33 : !torch.int) {scale = 1.250000e-01 : f64} : !torch.vtensor<[1,1,40,32],f16>, !torch.vtensor<[1,1,7,32],f16> -> !torch.vtensor<[1,1,47],f32>
  return %joint_out : !torch.vtensor<[1,1,7,32],f16>
}

// TTNN-LABEL: func.func @int_length(
// TTNN:         ttnn.joint_scaled_dot_product_attention %q, %q, %q, %jq, %jq, %jq logical_n(%int33 : !torch.int) {joint_strategy = "rear", scale = 1.250000e-01 : f64

// TRITON-LABEL: func.func @int_length(
// TRITON:         jointattn_triton.launch_forward %q, %q, %q, %jq, %jq, %jq logical_n(%int33 : !torch.int) {scale = 1.250000e-01 : f64

// -----

// A key-padding mask checked at run time (typed form, as fuse-joint-attention writes it): the check stays, and the
// attention branches on its host-side flag: the target's call with the counted lengths, or the exact path.
func.func @masked(%q: !torch.vtensor<[2,2,5,8],f32>, %jq: !torch.vtensor<[2,2,3,8],f32>, %km: !torch.vtensor<[2,1,1,5],i1>, %jm: !torch.vtensor<[2,1,1,3],i1>) -> (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>) {
  %ln, %ll, %ok = jointattn.key_padding_lengths %km, %jm {n = 5 : i64, l = 3 : i64} : !torch.vtensor<[2,1,1,5],i1>, !torch.vtensor<[2,1,1,3],i1> -> !torch.vtensor<[2],si64>, !torch.vtensor<[2],si64>, !torch.vtensor<[],i1>
  %out, %joint_out, %lse = jointattn.masked_joint_attention %q, %q, %q, %jq, %jq, %jq masks(%km, %jm : !torch.vtensor<[2,1,1,5],i1>, !torch.vtensor<[2,1,1,3],i1>) check(%ln, %ll, %ok : !torch.vtensor<[2],si64>) {scale = 3.000000e-01 : f64} : !torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32> -> !torch.vtensor<[2,2,8],f32>
  return %out, %joint_out : !torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>
}

// TTNN-LABEL: func.func @masked(
// TTNN-NEXT:    %ln, %ll, %ok = jointattn.key_padding_lengths %km, %jm {n = 5 : i64, l = 3 : i64}
// TTNN-NEXT:    %[[FLAG:.+]] = torch.aten.Bool.Tensor %ok : !torch.vtensor<[],i1> -> !torch.bool
// TTNN-NEXT:    %[[COND:.+]] = torch_c.to_i1 %[[FLAG]]
// TTNN-NEXT:    %out, %joint_out, %lse = scf.if %[[COND]] -> (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>, !torch.vtensor<[2,2,8],f32>) {
// TTNN-NEXT:      %[[P:[^,]+]], %[[PJ:[^,]+]], %[[PL:[^ ]+]] = ttnn.joint_scaled_dot_product_attention %q, %q, %q, %jq, %jq, %jq logical_n(%ln : !torch.vtensor<[2],si64>) logical_l(%ll : !torch.vtensor<[2],si64>) {joint_strategy = "rear", scale = 3.000000e-01 : f64, program_config = #ttnn.sdpa_program_config<q_chunk_size = 32, k_chunk_size = 32, exp_approx_mode = false>
// TTNN-NEXT:      scf.yield %[[P]], %[[PJ]], %[[PL]]
// TTNN-NEXT:    } else {
// TTNN-NEXT:      %[[E:[^,]+]], %[[EJ:[^,]+]], %[[EL:[^ ]+]] = jointattn.masked_reference %q, %q, %q, %jq, %jq, %jq masks(%km, %jm : !torch.vtensor<[2,1,1,5],i1>, !torch.vtensor<[2,1,1,3],i1>) {scale = 3.000000e-01 : f64}
// TTNN-NEXT:      scf.yield %[[E]], %[[EJ]], %[[EL]]
// TTNN-NEXT:    }
// TTNN-NEXT:    func.return %out, %joint_out

// TTLANG-LABEL: func.func @masked(
// TTLANG:         scf.if
// TTLANG-NEXT:      jointattn_ttlang.joint_attention %q, %q, %q, %jq, %jq, %jq logical_n(%ln : !torch.vtensor<[2],si64>) logical_l(%ll : !torch.vtensor<[2],si64>) {scale = 3.000000e-01 : f64, config = #jointattn_ttlang.config<
// TTLANG:         } else {
// TTLANG-NEXT:      jointattn.masked_reference

// TRITON-LABEL: func.func @masked(
// TRITON:         %out, %joint_out, %lse = scf.if %{{.+}} -> (
// TRITON-NEXT:      jointattn_triton.launch_forward %q, %q, %q, %jq, %jq, %jq logical_n(%ln : !torch.vtensor<[2],si64>) logical_l(%ll : !torch.vtensor<[2],si64>) {scale = 3.000000e-01 : f64, config = #jointattn_triton.launch_config<
// TRITON:         } else {
// TRITON-NEXT:      jointattn.masked_reference %q, %q, %q, %jq, %jq, %jq masks(%km, %jm

// -----

// The torch.operator form of the masked pair (emit=operator, or a module that calls the torch.library ops): made
// typed first (SDPA's default scale resolved), then lowered the same way.
func.func @masked_operator_form(%q: !torch.vtensor<[1,2,40,16],bf16>, %jq: !torch.vtensor<[1,2,7,16],bf16>, %mask: !torch.vtensor<[1,47],bf16>) -> !torch.vtensor<[1,2,40,16],bf16> {
  %int0 = torch.constant.int 0
  %int1 = torch.constant.int 1
  %int7 = torch.constant.int 7
  %int40 = torch.constant.int 40
  %int47 = torch.constant.int 47
  %none = torch.constant.none
  %str = torch.constant.str "auto"
  %km = torch.aten.slice.Tensor %mask, %int1, %int0, %int40, %int1 : !torch.vtensor<[1,47],bf16>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,40],bf16>
  %jm = torch.aten.slice.Tensor %mask, %int1, %int40, %int47, %int1 : !torch.vtensor<[1,47],bf16>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,7],bf16>
  %0:3 = torch.operator "torch.jointattn.key_padding_lengths"(%km, %jm, %int1, %int40, %int7) : (!torch.vtensor<[1,40],bf16>, !torch.vtensor<[1,7],bf16>, !torch.int, !torch.int, !torch.int) -> (!torch.vtensor<[1],si64>, !torch.vtensor<[1],si64>, !torch.vtensor<[],i1>)
  %1:3 = torch.operator "torch.jointattn.masked_joint_attention"(%q, %q, %q, %jq, %jq, %jq, %km, %jm, %0#0, %0#1, %0#2, %none, %str) : (!torch.vtensor<[1,2,40,16],bf16>, !torch.vtensor<[1,2,40,16],bf16>, !torch.vtensor<[1,2,40,16],bf16>, !torch.vtensor<[1,2,7,16],bf16>, !torch.vtensor<[1,2,7,16],bf16>, !torch.vtensor<[1,2,7,16],bf16>, !torch.vtensor<[1,40],bf16>, !torch.vtensor<[1,7],bf16>, !torch.vtensor<[1],si64>, !torch.vtensor<[1],si64>, !torch.vtensor<[],i1>, !torch.none, !torch.str) -> (!torch.vtensor<[1,2,40,16],bf16>, !torch.vtensor<[1,2,7,16],bf16>, !torch.vtensor<[1,2,47],f32>)
  return %1#0 : !torch.vtensor<[1,2,40,16],bf16>
}

// TTNN-LABEL: func.func @masked_operator_form(
// TTNN-NOT:     torch.operator
// TTNN:         %[[LN:[^,]+]], %[[LL:[^,]+]], %[[OK:[^ ]+]] = jointattn.key_padding_lengths %km, %jm {n = 40 : i64, l = 7 : i64} : !torch.vtensor<[1,40],bf16>, !torch.vtensor<[1,7],bf16> -> !torch.vtensor<[1],si64>, !torch.vtensor<[1],si64>, !torch.vtensor<[],i1>
// TTNN:         scf.if
// TTNN-NEXT:      ttnn.joint_scaled_dot_product_attention %q, %q, %q, %jq, %jq, %jq logical_n(%[[LN]] : !torch.vtensor<[1],si64>) logical_l(%[[LL]] : !torch.vtensor<[1],si64>) {joint_strategy = "rear", scale = 2.500000e-01 : f64
// TTNN:         } else {
// TTNN-NEXT:      jointattn.masked_reference %q, %q, %q, %jq, %jq, %jq masks(%km, %jm : !torch.vtensor<[1,40],bf16>, !torch.vtensor<[1,7],bf16>) {scale = 2.500000e-01 : f64}
// TTNN-NOT:     torch.operator

// TRITON-LABEL: func.func @masked_operator_form(
// TRITON-NOT:     torch.operator
// TRITON:         jointattn_triton.launch_forward
// TRITON-SAME:    {scale = 2.500000e-01 : f64, config = #jointattn_triton.launch_config<
