// RUN: not %jointattn-opt %s -p 'lower-joint-attention{target=ttnn}' 2>&1 | %filecheck %s

// An op the lowering cannot configure fails the pass with the reason, before anything is rewritten.

func.func @runtime_scale(%q: !torch.vtensor<[1,2,5,8],f32>, %jq: !torch.vtensor<[1,2,3,8],f32>, %scale: !torch.float) -> !torch.vtensor<[1,2,5,8],f32> {
  %str = torch.constant.str "rear"
  %none = torch.constant.none
  %str_0 = torch.constant.str "auto"
  %0:3 = torch.operator "torch.jointattn.joint_attention"(%q, %q, %q, %jq, %jq, %jq, %str, %scale, %none, %none, %str_0) : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>, !torch.vtensor<[1,2,3,8],f32>, !torch.vtensor<[1,2,3,8],f32>, !torch.str, !torch.float, !torch.none, !torch.none, !torch.str) -> (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>, !torch.vtensor<[1,2,8],f32>)
  return %0#0 : !torch.vtensor<[1,2,5,8],f32>
}

// CHECK: jointattn-opt: error: lower-joint-attention: torch.operator: scale is computed at run time (the lowering needs a constant)
