// RUN: %jointattn-opt %s --split-input-file -p fuse-joint-attention | %filecheck %s
// RUN: %jointattn-opt %s --split-input-file -p 'fuse-joint-attention{emit=operator}' | %filecheck %s --check-prefix=OPERATOR
// RUN: %jointattn-opt %s --split-input-file -p 'fuse-joint-attention{remarks=true}' 2>&1 >/dev/null | %filecheck %s --check-prefix=REMARK

// fuse-joint-attention: cat -> scaled_dot_product_attention -> cut, in torch-mlir's syntax, into one op.
// Positive cases first, then refusals, which must leave the IR as it was.

// Spatial-first [B, H, S, D] concat; the open-ended slice comes from torch-mlir as end = INT64_MAX.
func.func @cat_sdpa_slice(%q: !torch.vtensor<[1,2,5,8],f32>, %k: !torch.vtensor<[1,2,5,8],f32>, %v: !torch.vtensor<[1,2,5,8],f32>, %jq: !torch.vtensor<[1,2,3,8],f32>, %jk: !torch.vtensor<[1,2,3,8],f32>, %jv: !torch.vtensor<[1,2,3,8],f32>) -> (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) {
  %int0 = torch.constant.int 0
  %int1 = torch.constant.int 1
  %int2 = torch.constant.int 2
  %int5 = torch.constant.int 5
  %int9223372036854775807 = torch.constant.int 9223372036854775807
  %none = torch.constant.none
  %false = torch.constant.bool false
  %float0.000000e00 = torch.constant.float 0.000000e+00
  %l0 = torch.prim.ListConstruct %q, %jq : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c0 = torch.aten.cat %l0, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %l1 = torch.prim.ListConstruct %k, %jk : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c1 = torch.aten.cat %l1, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %l2 = torch.prim.ListConstruct %v, %jv : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c2 = torch.aten.cat %l2, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %none, %float0.000000e00, %false, %none, %false : !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.none, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[1,2,8,8],f32>
  %a = torch.aten.slice.Tensor %o, %int2, %int0, %int5, %int1 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,5,8],f32>
  %b = torch.aten.slice.Tensor %o, %int2, %int5, %int9223372036854775807, %int1 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,3,8],f32>
  return %a, %b : !torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>
}

// CHECK-LABEL: func.func @cat_sdpa_slice(
// CHECK-NOT:     torch.aten.cat
// CHECK:         %[[OUT:[^,]+]], %[[JOINT:[^,]+]], %{{[^ ]+}} = jointattn.joint_attention %q, %k, %v, %jq, %jk, %jv {scale = 0.35355339059327379 : f64} : !torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32> -> !torch.vtensor<[1,2,8],f32>
// CHECK-NEXT:    func.return %[[OUT]], %[[JOINT]]

// OPERATOR-LABEL: func.func @cat_sdpa_slice(
// OPERATOR-DAG:     %[[NONE:.+]] = torch.constant.none
// OPERATOR-DAG:     %[[REAR:.+]] = torch.constant.str "rear"
// OPERATOR-DAG:     %[[AUTO:.+]] = torch.constant.str "auto"
// OPERATOR:         %[[OUT:[^,]+]], %[[JOINT:[^,]+]], %{{[^ ]+}} = torch.operator "torch.jointattn.joint_attention"(%q, %k, %v, %jq, %jk, %jv, %[[REAR]], %[[NONE]], %[[NONE]], %[[NONE]], %[[AUTO]])
// OPERATOR-SAME:    -> (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>, !torch.vtensor<[1,2,8],f32>)
// OPERATOR-NEXT:    func.return %[[OUT]], %[[JOINT]]

// REMARK: remark: fuse-joint-attention: @cat_sdpa_slice SDPA #0: fused: token sets [5, 3] (spatial-first), no padding, both outputs used

// -----

// Negative dims, an explicit scale, the joint part taken with a negative start, the spatial one after a contiguous.
func.func @negative_dims_scale(%q: !torch.vtensor<[1,2,5,8],f32>, %k: !torch.vtensor<[1,2,5,8],f32>, %v: !torch.vtensor<[1,2,5,8],f32>, %jq: !torch.vtensor<[1,2,3,8],f32>, %jk: !torch.vtensor<[1,2,3,8],f32>, %jv: !torch.vtensor<[1,2,3,8],f32>) -> (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) {
  %int0 = torch.constant.int 0
  %int1 = torch.constant.int 1
  %int2 = torch.constant.int 2
  %int5 = torch.constant.int 5
  %int-2 = torch.constant.int -2
  %int9223372036854775807 = torch.constant.int 9223372036854775807
  %none = torch.constant.none
  %false = torch.constant.bool false
  %float0.000000e00 = torch.constant.float 0.000000e+00
  %l0 = torch.prim.ListConstruct %q, %jq : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c0 = torch.aten.cat %l0, %int-2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %l1 = torch.prim.ListConstruct %k, %jk : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c1 = torch.aten.cat %l1, %int-2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %l2 = torch.prim.ListConstruct %v, %jv : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c2 = torch.aten.cat %l2, %int-2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %scale = torch.constant.float 2.500000e-01
  %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %none, %float0.000000e00, %false, %scale, %false : !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.none, !torch.float, !torch.bool, !torch.float, !torch.bool -> !torch.vtensor<[1,2,8,8],f32>
  %oc = torch.aten.contiguous %o, %int0 : !torch.vtensor<[1,2,8,8],f32>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %a = torch.aten.slice.Tensor %oc, %int-2, %int0, %int5, %int1 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,5,8],f32>
  %int-3 = torch.constant.int -3
  %b = torch.aten.slice.Tensor %o, %int2, %int-3, %int9223372036854775807, %int1 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,3,8],f32>
  return %a, %b : !torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>
}

// CHECK-LABEL: func.func @negative_dims_scale(
// CHECK:         %[[OUT:[^,]+]], %[[JOINT:[^,]+]], %{{[^ ]+}} = jointattn.joint_attention %q, %k, %v, %jq, %jk, %jv {scale = 2.500000e-01 : f64}
// CHECK-NEXT:    %[[A:.+]] = torch.aten.contiguous %[[OUT]], %int0 : !torch.vtensor<[1,2,5,8],f32>, !torch.int -> !torch.vtensor<[1,2,5,8],f32>
// CHECK-NEXT:    func.return %[[A]], %[[JOINT]]

// OPERATOR-LABEL: func.func @negative_dims_scale(
// OPERATOR:         %scale = torch.constant.float 2.500000e-01
// OPERATOR:         torch.operator "torch.jointattn.joint_attention"(%q, %k, %v, %jq, %jk, %jv, %{{[^,]+}}, %scale, %none, %none, %{{[^)]+}})

// REMARK: remark: fuse-joint-attention: @negative_dims_scale SDPA #0: fused: token sets [5, 3] (spatial-first), no padding, both outputs used

// -----

// Text first, [B, S, H, D] concat then permute (Flux's layout), transpose + view + split_with_sizes after.
func.func @text_first_seq_first(%x: !torch.vtensor<[1,5,2,8],f32>, %t: !torch.vtensor<[1,3,2,8],f32>) -> (!torch.vtensor<[1,3,16],f32>, !torch.vtensor<[1,5,16],f32>) {
  %int0 = torch.constant.int 0
  %int1 = torch.constant.int 1
  %int2 = torch.constant.int 2
  %int3 = torch.constant.int 3
  %int5 = torch.constant.int 5
  %int8 = torch.constant.int 8
  %int16 = torch.constant.int 16
  %none = torch.constant.none
  %false = torch.constant.bool false
  %float0.000000e00 = torch.constant.float 0.000000e+00
  %l0 = torch.prim.ListConstruct %t, %x : (!torch.vtensor<[1,3,2,8],f32>, !torch.vtensor<[1,5,2,8],f32>) -> !torch.list<vtensor>
  %c0 = torch.aten.cat %l0, %int1 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,8,2,8],f32>
  %d0 = torch.prim.ListConstruct %int0, %int2, %int1, %int3 : (!torch.int, !torch.int, !torch.int, !torch.int) -> !torch.list<int>
  %p0 = torch.aten.permute %c0, %d0 : !torch.vtensor<[1,8,2,8],f32>, !torch.list<int> -> !torch.vtensor<[1,2,8,8],f32>
  %l1 = torch.prim.ListConstruct %t, %x : (!torch.vtensor<[1,3,2,8],f32>, !torch.vtensor<[1,5,2,8],f32>) -> !torch.list<vtensor>
  %c1 = torch.aten.cat %l1, %int1 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,8,2,8],f32>
  %d1 = torch.prim.ListConstruct %int0, %int2, %int1, %int3 : (!torch.int, !torch.int, !torch.int, !torch.int) -> !torch.list<int>
  %p1 = torch.aten.permute %c1, %d1 : !torch.vtensor<[1,8,2,8],f32>, !torch.list<int> -> !torch.vtensor<[1,2,8,8],f32>
  %l2 = torch.prim.ListConstruct %t, %x : (!torch.vtensor<[1,3,2,8],f32>, !torch.vtensor<[1,5,2,8],f32>) -> !torch.list<vtensor>
  %c2 = torch.aten.cat %l2, %int1 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,8,2,8],f32>
  %d2 = torch.prim.ListConstruct %int0, %int2, %int1, %int3 : (!torch.int, !torch.int, !torch.int, !torch.int) -> !torch.list<int>
  %p2 = torch.aten.permute %c2, %d2 : !torch.vtensor<[1,8,2,8],f32>, !torch.list<int> -> !torch.vtensor<[1,2,8,8],f32>
  %o = torch.aten.scaled_dot_product_attention %p0, %p1, %p2, %none, %float0.000000e00, %false, %none, %false : !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.none, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[1,2,8,8],f32>
  %ob = torch.aten.transpose.int %o, %int1, %int2 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int -> !torch.vtensor<[1,8,2,8],f32>
  %sz = torch.prim.ListConstruct %int1, %int8, %int16 : (!torch.int, !torch.int, !torch.int) -> !torch.list<int>
  %of = torch.aten.view %ob, %sz : !torch.vtensor<[1,8,2,8],f32>, !torch.list<int> -> !torch.vtensor<[1,8,16],f32>
  %sizes = torch.prim.ListConstruct %int3, %int5 : (!torch.int, !torch.int) -> !torch.list<int>
  %parts = torch.aten.split_with_sizes %of, %sizes, %int1 : !torch.vtensor<[1,8,16],f32>, !torch.list<int>, !torch.int -> !torch.list<vtensor>
  %txt, %img = torch.prim.ListUnpack %parts : !torch.list<vtensor> -> !torch.vtensor<[1,3,16],f32>, !torch.vtensor<[1,5,16],f32>
  return %txt, %img : !torch.vtensor<[1,3,16],f32>, !torch.vtensor<[1,5,16],f32>
}

// The longer token set (x, 5 tokens) becomes the spatial side: outputs are swapped back for the text-first graph.
// CHECK-LABEL: func.func @text_first_seq_first(
// CHECK:         %d0 = torch.prim.ListConstruct %int0, %int2, %int1, %int3
// CHECK-NEXT:    %[[X:.+]] = torch.aten.permute %x, %d0 : !torch.vtensor<[1,5,2,8],f32>, !torch.list<int> -> !torch.vtensor<[1,2,5,8],f32>
// CHECK-NEXT:    %[[T:.+]] = torch.aten.permute %t, %d0 : !torch.vtensor<[1,3,2,8],f32>, !torch.list<int> -> !torch.vtensor<[1,2,3,8],f32>
// CHECK:         %[[OUT:[^,]+]], %[[JOINT:[^,]+]], %{{[^ ]+}} = jointattn.joint_attention %[[X]], %{{[^,]+}}, %{{[^,]+}}, %[[T]], %{{[^,]+}}, %{{[^ ]+}} {scale = 0.35355339059327379 : f64} : !torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32> -> !torch.vtensor<[1,2,8],f32>
// CHECK-NEXT:    %[[JT:.+]] = torch.aten.transpose.int %[[JOINT]], %int1, %int2 : !torch.vtensor<[1,2,3,8],f32>, !torch.int, !torch.int -> !torch.vtensor<[1,3,2,8],f32>
// CHECK-NEXT:    %[[OT:.+]] = torch.aten.transpose.int %[[OUT]], %int1, %int2 : !torch.vtensor<[1,2,5,8],f32>, !torch.int, !torch.int -> !torch.vtensor<[1,5,2,8],f32>
// CHECK-NEXT:    %[[S3:.+]] = torch.prim.ListConstruct %int1, %int3, %int16
// CHECK-NEXT:    %txt = torch.aten.view %[[JT]], %[[S3]] : !torch.vtensor<[1,3,2,8],f32>, !torch.list<int> -> !torch.vtensor<[1,3,16],f32>
// CHECK-NEXT:    %[[S5:.+]] = torch.prim.ListConstruct %int1, %int5, %int16
// CHECK-NEXT:    %img = torch.aten.view %[[OT]], %[[S5]] : !torch.vtensor<[1,5,2,8],f32>, !torch.list<int> -> !torch.vtensor<[1,5,16],f32>
// CHECK-NEXT:    func.return %txt, %img

// REMARK: remark: fuse-joint-attention: @text_first_seq_first SDPA #0: fused: token sets [3, 5] (text-first), no padding, both outputs used

// -----

// Only the spatial part is used (SD3's last block); a sub-range of it is taken with narrow.
func.func @one_part_narrow(%q: !torch.vtensor<[1,2,5,8],f32>, %k: !torch.vtensor<[1,2,5,8],f32>, %v: !torch.vtensor<[1,2,5,8],f32>, %jq: !torch.vtensor<[1,2,3,8],f32>, %jk: !torch.vtensor<[1,2,3,8],f32>, %jv: !torch.vtensor<[1,2,3,8],f32>) -> (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,2,8],f32>) {
  %int0 = torch.constant.int 0
  %int1 = torch.constant.int 1
  %int2 = torch.constant.int 2
  %int5 = torch.constant.int 5
  %none = torch.constant.none
  %false = torch.constant.bool false
  %float0.000000e00 = torch.constant.float 0.000000e+00
  %l0 = torch.prim.ListConstruct %q, %jq : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c0 = torch.aten.cat %l0, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %l1 = torch.prim.ListConstruct %k, %jk : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c1 = torch.aten.cat %l1, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %l2 = torch.prim.ListConstruct %v, %jv : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c2 = torch.aten.cat %l2, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %none, %float0.000000e00, %false, %none, %false : !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.none, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[1,2,8,8],f32>
  %a = torch.aten.slice.Tensor %o, %int2, %int0, %int5, %int1 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,5,8],f32>
  %b = torch.aten.narrow %o, %int2, %int1, %int2 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,2,8],f32>
  return %a, %b : !torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,2,8],f32>
}

// CHECK-LABEL: func.func @one_part_narrow(
// CHECK:         %[[OUT:[^,]+]], %{{[^,]+}}, %{{[^ ]+}} = jointattn.joint_attention %q, %k, %v, %jq, %jk, %jv
// CHECK:         %[[B:.+]] = torch.aten.slice.Tensor %[[OUT]], %int2, %int1, %int3, %int1 : !torch.vtensor<[1,2,5,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,2,8],f32>
// CHECK-NEXT:    func.return %[[OUT]], %[[B]]

// REMARK: remark: fuse-joint-attention: @one_part_narrow SDPA #0: fused: token sets [5, 3] (spatial-first), no padding, only the first token set used

// -----

// A use of the whole output gets the two op outputs concatenated back; the q concat has another user and stays.
func.func @whole_use_and_shared_cat(%q: !torch.vtensor<[1,2,5,8],f32>, %k: !torch.vtensor<[1,2,5,8],f32>, %v: !torch.vtensor<[1,2,5,8],f32>, %jq: !torch.vtensor<[1,2,3,8],f32>, %jk: !torch.vtensor<[1,2,3,8],f32>, %jv: !torch.vtensor<[1,2,3,8],f32>) -> (!torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,3,8],f32>) {
  %int1 = torch.constant.int 1
  %int2 = torch.constant.int 2
  %int5 = torch.constant.int 5
  %int8 = torch.constant.int 8
  %none = torch.constant.none
  %false = torch.constant.bool false
  %float0.000000e00 = torch.constant.float 0.000000e+00
  %l0 = torch.prim.ListConstruct %q, %jq : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c0 = torch.aten.cat %l0, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %l1 = torch.prim.ListConstruct %k, %jk : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c1 = torch.aten.cat %l1, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %l2 = torch.prim.ListConstruct %v, %jv : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c2 = torch.aten.cat %l2, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %none, %float0.000000e00, %false, %none, %false : !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.none, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[1,2,8,8],f32>
  %b = torch.aten.slice.Tensor %o, %int2, %int5, %int8, %int1 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,3,8],f32>
  return %o, %c0, %b : !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,3,8],f32>
}

// CHECK-LABEL: func.func @whole_use_and_shared_cat(
// CHECK:         %[[KEPT:.+]] = torch.aten.cat %l0, %int2
// CHECK-NEXT:    %[[OUT:[^,]+]], %[[JOINT:[^,]+]], %{{[^ ]+}} = jointattn.joint_attention %q, %k, %v, %jq, %jk, %jv
// CHECK-NEXT:    %[[L:.+]] = torch.prim.ListConstruct %[[OUT]], %[[JOINT]]
// CHECK-NEXT:    %[[WHOLE:.+]] = torch.aten.cat %[[L]], %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
// CHECK-NEXT:    func.return %[[WHOLE]], %[[KEPT]], %[[JOINT]]

// REMARK: remark: fuse-joint-attention: @whole_use_and_shared_cat SDPA #0: fused: token sets [5, 3] (spatial-first), no padding, only the second token set used; re-joined for 1 whole-sequence consumer(s)

// -----

// An additive key-padding mask proven to be a prefix: where(cat(all valid, arange(3) < lengths), 0, -inf).
func.func @key_padding_lengths(%q: !torch.vtensor<[2,2,5,8],f32>, %k: !torch.vtensor<[2,2,5,8],f32>, %v: !torch.vtensor<[2,2,5,8],f32>, %jq: !torch.vtensor<[2,2,3,8],f32>, %jk: !torch.vtensor<[2,2,3,8],f32>, %jv: !torch.vtensor<[2,2,3,8],f32>, %lengths: !torch.vtensor<[2],si64>) -> (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>) {
  %int0 = torch.constant.int 0
  %int1 = torch.constant.int 1
  %int2 = torch.constant.int 2
  %int3 = torch.constant.int 3
  %int5 = torch.constant.int 5
  %int8 = torch.constant.int 8
  %none = torch.constant.none
  %false = torch.constant.bool false
  %float0.000000e00 = torch.constant.float 0.000000e+00
  %l0 = torch.prim.ListConstruct %q, %jq : (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>) -> !torch.list<vtensor>
  %c0 = torch.aten.cat %l0, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[2,2,8,8],f32>
  %l1 = torch.prim.ListConstruct %k, %jk : (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>) -> !torch.list<vtensor>
  %c1 = torch.aten.cat %l1, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[2,2,8,8],f32>
  %l2 = torch.prim.ListConstruct %v, %jv : (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>) -> !torch.list<vtensor>
  %c2 = torch.aten.cat %l2, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[2,2,8,8],f32>
  %cpu = torch.constant.device "cpu"
  %ar = torch.aten.arange.start_step %int0, %int3, %int1, %none, %int0, %cpu, %false : !torch.int, !torch.int, !torch.int, !torch.none, !torch.int, !torch.Device, !torch.bool -> !torch.vtensor<[3],si64>
  %ar1 = torch.aten.unsqueeze %ar, %int0 : !torch.vtensor<[3],si64>, !torch.int -> !torch.vtensor<[1,3],si64>
  %len1 = torch.aten.unsqueeze %lengths, %int1 : !torch.vtensor<[2],si64>, !torch.int -> !torch.vtensor<[2,1],si64>
  %tv = torch.aten.lt.Tensor %ar1, %len1 : !torch.vtensor<[1,3],si64>, !torch.vtensor<[2,1],si64> -> !torch.vtensor<[2,3],i1>
  %iv = torch.vtensor.literal(dense<true> : tensor<2x5xi1>) : !torch.vtensor<[2,5],i1>
  %vl = torch.prim.ListConstruct %iv, %tv : (!torch.vtensor<[2,5],i1>, !torch.vtensor<[2,3],i1>) -> !torch.list<vtensor>
  %valid = torch.aten.cat %vl, %int1 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[2,8],i1>
  %m1 = torch.aten.unsqueeze %valid, %int1 : !torch.vtensor<[2,8],i1>, !torch.int -> !torch.vtensor<[2,1,8],i1>
  %mask = torch.aten.unsqueeze %m1, %int2 : !torch.vtensor<[2,1,8],i1>, !torch.int -> !torch.vtensor<[2,1,1,8],i1>
  %zero = torch.vtensor.literal(dense<0.000000e+00> : tensor<f32>) : !torch.vtensor<[],f32>
  %ninf = torch.vtensor.literal(dense<0xFF800000> : tensor<f32>) : !torch.vtensor<[],f32>
  %bias = torch.aten.where.self %mask, %zero, %ninf : !torch.vtensor<[2,1,1,8],i1>, !torch.vtensor<[],f32>, !torch.vtensor<[],f32> -> !torch.vtensor<[2,1,1,8],f32>
  %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %bias, %float0.000000e00, %false, %none, %false : !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,1,1,8],f32>, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[2,2,8,8],f32>
  %a = torch.aten.slice.Tensor %o, %int2, %int0, %int5, %int1 : !torch.vtensor<[2,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[2,2,5,8],f32>
  %b = torch.aten.slice.Tensor %o, %int2, %int5, %int8, %int1 : !torch.vtensor<[2,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[2,2,3,8],f32>
  return %a, %b : !torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>
}

// CHECK-LABEL: func.func @key_padding_lengths(
// CHECK-NOT:     torch.aten.where
// CHECK:         %[[LEN:.+]] = torch.aten.clamp %lengths, %int0, %int3 : !torch.vtensor<[2],si64>, !torch.int, !torch.int -> !torch.vtensor<[2],si64>
// CHECK-NEXT:    %[[OUT:[^,]+]], %[[JOINT:[^,]+]], %{{[^ ]+}} = jointattn.joint_attention %q, %k, %v, %jq, %jk, %jv logical_l(%[[LEN]] : !torch.vtensor<[2],si64>) {scale = 0.35355339059327379 : f64}
// CHECK-NEXT:    func.return %[[OUT]], %[[JOINT]]

// OPERATOR-LABEL: func.func @key_padding_lengths(
// OPERATOR:         %[[LEN:.+]] = torch.aten.clamp %lengths, %int0, %int3
// OPERATOR:         torch.operator "torch.jointattn.joint_attention"(%q, %k, %v, %jq, %jk, %jv, %{{[^,]+}}, %none, %none, %[[LEN]], %{{[^)]+}})

// REMARK: remark: fuse-joint-attention: @key_padding_lengths SDPA #0: fused: token sets [5, 3] (spatial-first), padding as valid lengths proven from the mask, both outputs used

// -----

// Refused: causal.
func.func @refuse_causal(%q: !torch.vtensor<[1,2,5,8],f32>, %k: !torch.vtensor<[1,2,5,8],f32>, %v: !torch.vtensor<[1,2,5,8],f32>, %jq: !torch.vtensor<[1,2,3,8],f32>, %jk: !torch.vtensor<[1,2,3,8],f32>, %jv: !torch.vtensor<[1,2,3,8],f32>) -> (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) {
  %int0 = torch.constant.int 0
  %int1 = torch.constant.int 1
  %int2 = torch.constant.int 2
  %int5 = torch.constant.int 5
  %int8 = torch.constant.int 8
  %none = torch.constant.none
  %false = torch.constant.bool false
  %true = torch.constant.bool true
  %float0.000000e00 = torch.constant.float 0.000000e+00
  %l0 = torch.prim.ListConstruct %q, %jq : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c0 = torch.aten.cat %l0, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %l1 = torch.prim.ListConstruct %k, %jk : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c1 = torch.aten.cat %l1, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %l2 = torch.prim.ListConstruct %v, %jv : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c2 = torch.aten.cat %l2, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %none, %float0.000000e00, %true, %none, %false : !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.none, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[1,2,8,8],f32>
  %a = torch.aten.slice.Tensor %o, %int2, %int0, %int5, %int1 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,5,8],f32>
  %b = torch.aten.slice.Tensor %o, %int2, %int5, %int8, %int1 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,3,8],f32>
  return %a, %b : !torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>
}

// CHECK-LABEL: func.func @refuse_causal(
// CHECK:         %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %none, %float0.000000e00, %true, %none, %false
// CHECK-NOT:     jointattn

// OPERATOR-LABEL: func.func @refuse_causal(
// OPERATOR-NOT:     torch.operator

// REMARK: remark: fuse-joint-attention: @refuse_causal SDPA #0: not fused: is_causal=True (the op is non-causal; key order would matter)

// -----

// Refused: dropout.
func.func @refuse_dropout(%q: !torch.vtensor<[1,2,5,8],f32>, %k: !torch.vtensor<[1,2,5,8],f32>, %v: !torch.vtensor<[1,2,5,8],f32>, %jq: !torch.vtensor<[1,2,3,8],f32>, %jk: !torch.vtensor<[1,2,3,8],f32>, %jv: !torch.vtensor<[1,2,3,8],f32>) -> (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) {
  %int0 = torch.constant.int 0
  %int1 = torch.constant.int 1
  %int2 = torch.constant.int 2
  %int5 = torch.constant.int 5
  %int8 = torch.constant.int 8
  %none = torch.constant.none
  %false = torch.constant.bool false
  %l0 = torch.prim.ListConstruct %q, %jq : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c0 = torch.aten.cat %l0, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %l1 = torch.prim.ListConstruct %k, %jk : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c1 = torch.aten.cat %l1, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %l2 = torch.prim.ListConstruct %v, %jv : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c2 = torch.aten.cat %l2, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %p = torch.constant.float 1.000000e-01
  %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %none, %p, %false, %none, %false : !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.none, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[1,2,8,8],f32>
  %a = torch.aten.slice.Tensor %o, %int2, %int0, %int5, %int1 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,5,8],f32>
  %b = torch.aten.slice.Tensor %o, %int2, %int5, %int8, %int1 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,3,8],f32>
  return %a, %b : !torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>
}

// CHECK-LABEL: func.func @refuse_dropout(
// CHECK:         %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %none, %p, %false, %none, %false
// CHECK-NOT:     jointattn

// OPERATOR-LABEL: func.func @refuse_dropout(
// OPERATOR-NOT:     torch.operator

// REMARK: remark: fuse-joint-attention: @refuse_dropout SDPA #0: not fused: dropout_p=0.1 (the op has no dropout)

// -----

// Refused: GQA (one key/value head for two query heads).
func.func @refuse_gqa(%q: !torch.vtensor<[1,2,5,8],f32>, %k: !torch.vtensor<[1,2,5,8],f32>, %v: !torch.vtensor<[1,2,5,8],f32>, %jq: !torch.vtensor<[1,2,3,8],f32>, %jk: !torch.vtensor<[1,2,3,8],f32>, %jv: !torch.vtensor<[1,2,3,8],f32>, %k1: !torch.vtensor<[1,1,5,8],f32>, %jk1: !torch.vtensor<[1,1,3,8],f32>) -> (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) {
  %int0 = torch.constant.int 0
  %int1 = torch.constant.int 1
  %int2 = torch.constant.int 2
  %int5 = torch.constant.int 5
  %int8 = torch.constant.int 8
  %none = torch.constant.none
  %false = torch.constant.bool false
  %true = torch.constant.bool true
  %float0.000000e00 = torch.constant.float 0.000000e+00
  %l0 = torch.prim.ListConstruct %q, %jq : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c0 = torch.aten.cat %l0, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %l1 = torch.prim.ListConstruct %k1, %jk1 : (!torch.vtensor<[1,1,5,8],f32>, !torch.vtensor<[1,1,3,8],f32>) -> !torch.list<vtensor>
  %c1 = torch.aten.cat %l1, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,1,8,8],f32>
  %l2 = torch.prim.ListConstruct %v, %jv : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c2 = torch.aten.cat %l2, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %none, %float0.000000e00, %false, %none, %true : !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,1,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.none, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[1,2,8,8],f32>
  %a = torch.aten.slice.Tensor %o, %int2, %int0, %int5, %int1 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,5,8],f32>
  %b = torch.aten.slice.Tensor %o, %int2, %int5, %int8, %int1 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,3,8],f32>
  return %a, %b : !torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>
}

// CHECK-LABEL: func.func @refuse_gqa(
// CHECK:         %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %none, %float0.000000e00, %false, %none, %true
// CHECK-NOT:     jointattn

// OPERATOR-LABEL: func.func @refuse_gqa(
// OPERATOR-NOT:     torch.operator

// REMARK: remark: fuse-joint-attention: @refuse_gqa SDPA #0: not fused: enable_gqa=True (the op needs as many key/value heads as query heads)

// -----

// Refused: a mask argument that varies over heads (not key padding). Key-padding masks that arrive as arguments
// are fused with a run-time check: fuse-joint-attention-masks.mlir.
func.func @refuse_mask_over_heads(%q: !torch.vtensor<[1,2,5,8],f32>, %k: !torch.vtensor<[1,2,5,8],f32>, %v: !torch.vtensor<[1,2,5,8],f32>, %jq: !torch.vtensor<[1,2,3,8],f32>, %jk: !torch.vtensor<[1,2,3,8],f32>, %jv: !torch.vtensor<[1,2,3,8],f32>, %mask: !torch.vtensor<[1,2,1,8],i1>) -> (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) {
  %int0 = torch.constant.int 0
  %int1 = torch.constant.int 1
  %int2 = torch.constant.int 2
  %int5 = torch.constant.int 5
  %int8 = torch.constant.int 8
  %none = torch.constant.none
  %false = torch.constant.bool false
  %float0.000000e00 = torch.constant.float 0.000000e+00
  %l0 = torch.prim.ListConstruct %q, %jq : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c0 = torch.aten.cat %l0, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %l1 = torch.prim.ListConstruct %k, %jk : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c1 = torch.aten.cat %l1, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %l2 = torch.prim.ListConstruct %v, %jv : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c2 = torch.aten.cat %l2, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %mask, %float0.000000e00, %false, %none, %false : !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,1,8],i1>, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[1,2,8,8],f32>
  %a = torch.aten.slice.Tensor %o, %int2, %int0, %int5, %int1 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,5,8],f32>
  %b = torch.aten.slice.Tensor %o, %int2, %int5, %int8, %int1 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,3,8],f32>
  return %a, %b : !torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>
}

// CHECK-LABEL: func.func @refuse_mask_over_heads(
// CHECK:         %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %mask,
// CHECK-NOT:     jointattn

// OPERATOR-LABEL: func.func @refuse_mask_over_heads(
// OPERATOR-NOT:     torch.operator

// REMARK: remark: fuse-joint-attention: @refuse_mask_over_heads SDPA #0: not fused: attn_mask varies over heads (not a key-padding mask)

// -----

// Refused: the output is split at 4 while the concat boundary is at 5.
func.func @refuse_misaligned_split(%q: !torch.vtensor<[1,2,5,8],f32>, %k: !torch.vtensor<[1,2,5,8],f32>, %v: !torch.vtensor<[1,2,5,8],f32>, %jq: !torch.vtensor<[1,2,3,8],f32>, %jk: !torch.vtensor<[1,2,3,8],f32>, %jv: !torch.vtensor<[1,2,3,8],f32>) -> (!torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,4,8],f32>) {
  %int2 = torch.constant.int 2
  %none = torch.constant.none
  %false = torch.constant.bool false
  %float0.000000e00 = torch.constant.float 0.000000e+00
  %l0 = torch.prim.ListConstruct %q, %jq : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c0 = torch.aten.cat %l0, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %l1 = torch.prim.ListConstruct %k, %jk : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c1 = torch.aten.cat %l1, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %l2 = torch.prim.ListConstruct %v, %jv : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c2 = torch.aten.cat %l2, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %none, %float0.000000e00, %false, %none, %false : !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.none, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[1,2,8,8],f32>
  %int4 = torch.constant.int 4
  %halves = torch.aten.split.Tensor %o, %int4, %int2 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int -> !torch.list<vtensor>
  %a, %b = torch.prim.ListUnpack %halves : !torch.list<vtensor> -> !torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,4,8],f32>
  return %a, %b : !torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,4,8],f32>
}

// CHECK-LABEL: func.func @refuse_misaligned_split(
// CHECK:         %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2,
// CHECK-NOT:     jointattn

// OPERATOR-LABEL: func.func @refuse_misaligned_split(
// OPERATOR-NOT:     torch.operator

// REMARK: remark: fuse-joint-attention: @refuse_misaligned_split SDPA #0: not fused: slice [4, 8) crosses the concat boundary at 5
// CHECK:         %halves = torch.aten.split.Tensor %o, %int4, %int2

// -----

// Near miss, refused: k joins token sets of other lengths (4 + 4) than q and v (5 + 3).
func.func @refuse_different_token_sets(%q: !torch.vtensor<[1,2,5,8],f32>, %k: !torch.vtensor<[1,2,5,8],f32>, %v: !torch.vtensor<[1,2,5,8],f32>, %jq: !torch.vtensor<[1,2,3,8],f32>, %jk: !torch.vtensor<[1,2,3,8],f32>, %jv: !torch.vtensor<[1,2,3,8],f32>, %k4: !torch.vtensor<[1,2,4,8],f32>, %jk4: !torch.vtensor<[1,2,4,8],f32>) -> (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) {
  %int0 = torch.constant.int 0
  %int1 = torch.constant.int 1
  %int2 = torch.constant.int 2
  %int5 = torch.constant.int 5
  %int8 = torch.constant.int 8
  %none = torch.constant.none
  %false = torch.constant.bool false
  %float0.000000e00 = torch.constant.float 0.000000e+00
  %l0 = torch.prim.ListConstruct %q, %jq : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c0 = torch.aten.cat %l0, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %l1 = torch.prim.ListConstruct %k4, %jk4 : (!torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,4,8],f32>) -> !torch.list<vtensor>
  %c1 = torch.aten.cat %l1, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %l2 = torch.prim.ListConstruct %v, %jv : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
  %c2 = torch.aten.cat %l2, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
  %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %none, %float0.000000e00, %false, %none, %false : !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.none, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[1,2,8,8],f32>
  %a = torch.aten.slice.Tensor %o, %int2, %int0, %int5, %int1 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,5,8],f32>
  %b = torch.aten.slice.Tensor %o, %int2, %int5, %int8, %int1 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,3,8],f32>
  return %a, %b : !torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>
}

// The near miss: nothing may change, line for line (xDSL prints `return` as `func.return`).
// CHECK-LABEL: func.func @refuse_different_token_sets(%q: !torch.vtensor<[1,2,5,8],f32>, %k: !torch.vtensor<[1,2,5,8],f32>, %v: !torch.vtensor<[1,2,5,8],f32>, %jq: !torch.vtensor<[1,2,3,8],f32>, %jk: !torch.vtensor<[1,2,3,8],f32>, %jv: !torch.vtensor<[1,2,3,8],f32>, %k4: !torch.vtensor<[1,2,4,8],f32>, %jk4: !torch.vtensor<[1,2,4,8],f32>) -> (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) {
// CHECK-NEXT:  %int0 = torch.constant.int 0
// CHECK-NEXT:  %int1 = torch.constant.int 1
// CHECK-NEXT:  %int2 = torch.constant.int 2
// CHECK-NEXT:  %int5 = torch.constant.int 5
// CHECK-NEXT:  %int8 = torch.constant.int 8
// CHECK-NEXT:  %none = torch.constant.none
// CHECK-NEXT:  %false = torch.constant.bool false
// CHECK-NEXT:  %float0.000000e00 = torch.constant.float 0.000000e+00
// CHECK-NEXT:  %l0 = torch.prim.ListConstruct %q, %jq : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
// CHECK-NEXT:  %c0 = torch.aten.cat %l0, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
// CHECK-NEXT:  %l1 = torch.prim.ListConstruct %k4, %jk4 : (!torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,4,8],f32>) -> !torch.list<vtensor>
// CHECK-NEXT:  %c1 = torch.aten.cat %l1, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
// CHECK-NEXT:  %l2 = torch.prim.ListConstruct %v, %jv : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> !torch.list<vtensor>
// CHECK-NEXT:  %c2 = torch.aten.cat %l2, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,8,8],f32>
// CHECK-NEXT:  %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %none, %float0.000000e00, %false, %none, %false : !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.vtensor<[1,2,8,8],f32>, !torch.none, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[1,2,8,8],f32>
// CHECK-NEXT:  %a = torch.aten.slice.Tensor %o, %int2, %int0, %int5, %int1 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,5,8],f32>
// CHECK-NEXT:  %b = torch.aten.slice.Tensor %o, %int2, %int5, %int8, %int1 : !torch.vtensor<[1,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,2,3,8],f32>
// CHECK-NEXT:  func.return %a, %b : !torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,3,8],f32>

// REMARK: remark: fuse-joint-attention: @refuse_different_token_sets SDPA #0: not fused: q, k, v token sets differ in length or order: [5, 3], [4, 4], [5, 3]

// -----

// Near miss, refused: the concat is along the head dim, not the sequence.
func.func @refuse_head_dim_concat(%q: !torch.vtensor<[1,2,5,8],f32>, %k: !torch.vtensor<[1,2,5,8],f32>, %v: !torch.vtensor<[1,2,5,8],f32>, %jq: !torch.vtensor<[1,2,3,8],f32>, %jk: !torch.vtensor<[1,2,3,8],f32>, %jv: !torch.vtensor<[1,2,3,8],f32>) -> (!torch.vtensor<[1,2,5,16],f32>) {
  %int3 = torch.constant.int 3
  %none = torch.constant.none
  %false = torch.constant.bool false
  %float0.000000e00 = torch.constant.float 0.000000e+00
  %l0 = torch.prim.ListConstruct %q, %q : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,5,8],f32>) -> !torch.list<vtensor>
  %c0 = torch.aten.cat %l0, %int3 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,5,16],f32>
  %l1 = torch.prim.ListConstruct %k, %k : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,5,8],f32>) -> !torch.list<vtensor>
  %c1 = torch.aten.cat %l1, %int3 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,5,16],f32>
  %l2 = torch.prim.ListConstruct %v, %v : (!torch.vtensor<[1,2,5,8],f32>, !torch.vtensor<[1,2,5,8],f32>) -> !torch.list<vtensor>
  %c2 = torch.aten.cat %l2, %int3 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,2,5,16],f32>
  %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %none, %float0.000000e00, %false, %none, %false : !torch.vtensor<[1,2,5,16],f32>, !torch.vtensor<[1,2,5,16],f32>, !torch.vtensor<[1,2,5,16],f32>, !torch.none, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[1,2,5,16],f32>
  return %o : !torch.vtensor<[1,2,5,16],f32>
}

// CHECK-LABEL: func.func @refuse_head_dim_concat(
// CHECK:         %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2,
// CHECK-NOT:     jointattn

// OPERATOR-LABEL: func.func @refuse_head_dim_concat(
// OPERATOR-NOT:     torch.operator

// REMARK: remark: fuse-joint-attention: @refuse_head_dim_concat SDPA #0: not fused: q is a concat along dim 3, not along the sequence dim 2
