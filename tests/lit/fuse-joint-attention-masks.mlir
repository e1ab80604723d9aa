// RUN: %jointattn-opt %s --split-input-file -p fuse-joint-attention | %filecheck %s
// RUN: %jointattn-opt %s --split-input-file -p 'fuse-joint-attention{emit=operator}' | %filecheck %s --check-prefix=OPERATOR
// RUN: %jointattn-opt %s --split-input-file -p 'fuse-joint-attention{emit=operator}' | %torch-mlir-opt --split-input-file | %filecheck %s --check-prefix=TORCH-MLIR
// RUN: %jointattn-opt %s --split-input-file -p 'fuse-joint-attention{remarks=true}' 2>&1 >/dev/null | %filecheck %s --check-prefix=REMARK

// fuse-joint-attention with key-padding masks that cannot be proven to be prefixes at compile time (masks that
// arrive as arguments, bool or additive, [b,1,1,S] or broadcastable): the mask is cut per token set, checked
// once at run time (`key_padding_lengths`: valid lengths and whether it is prefix padding) and the attention
// becomes `masked_joint_attention` (the length-based op for prefix masks, the exact path otherwise), as the FX
// pass does. Masks proven to be prefixes are in fuse-joint-attention.mlir; a mask varying over queries is
// refused and left untouched (last case).

// A boolean key-padding mask that arrives as an argument: sliced at the token-set boundary, checked at run time.
func.func @bool_mask_argument(%q: !torch.vtensor<[2,2,5,8],f32>, %k: !torch.vtensor<[2,2,5,8],f32>, %v: !torch.vtensor<[2,2,5,8],f32>, %jq: !torch.vtensor<[2,2,3,8],f32>, %jk: !torch.vtensor<[2,2,3,8],f32>, %jv: !torch.vtensor<[2,2,3,8],f32>, %mask: !torch.vtensor<[2,1,1,8],i1>) -> (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>) {
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
  %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %mask, %float0.000000e00, %false, %none, %false : !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,1,1,8],i1>, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[2,2,8,8],f32>
  %a = torch.aten.slice.Tensor %o, %int2, %int0, %int5, %int1 : !torch.vtensor<[2,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[2,2,5,8],f32>
  %b = torch.aten.slice.Tensor %o, %int2, %int5, %int8, %int1 : !torch.vtensor<[2,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[2,2,3,8],f32>
  return %a, %b : !torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>
}

// CHECK-LABEL: func.func @bool_mask_argument(
// CHECK:         %[[KM:.+]] = torch.aten.slice.Tensor %mask, %int3, %int0, %int5, %int1 : !torch.vtensor<[2,1,1,8],i1>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[2,1,1,5],i1>
// CHECK-NEXT:    %[[JM:.+]] = torch.aten.slice.Tensor %mask, %int3, %int5, %int8, %int1 : !torch.vtensor<[2,1,1,8],i1>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[2,1,1,3],i1>
// CHECK-NEXT:    %[[LN:[^,]+]], %[[LL:[^,]+]], %[[OK:[^ ]+]] = jointattn.key_padding_lengths %[[KM]], %[[JM]] {n = 5 : i64, l = 3 : i64} : !torch.vtensor<[2,1,1,5],i1>, !torch.vtensor<[2,1,1,3],i1> -> !torch.vtensor<[2],si64>, !torch.vtensor<[2],si64>, !torch.vtensor<[],i1>
// CHECK-NEXT:    %a, %b, %{{[^ ]+}} = jointattn.masked_joint_attention %q, %k, %v, %jq, %jk, %jv masks(%[[KM]], %[[JM]] : !torch.vtensor<[2,1,1,5],i1>, !torch.vtensor<[2,1,1,3],i1>) check(%[[LN]], %[[LL]], %[[OK]] : !torch.vtensor<[2],si64>) {scale = 0.35355339059327379 : f64} : !torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32> -> !torch.vtensor<[2,2,8],f32>
// CHECK-NEXT:    func.return %a, %b
// CHECK-NOT:     torch.aten.scaled_dot_product_attention

// torch-mlir's own spelling of the two torch.library ops (what importing a module that calls them gives).
// OPERATOR-LABEL: func.func @bool_mask_argument(
// OPERATOR:         %[[KM:.+]] = torch.aten.slice.Tensor %mask, %int3, %int0, %int5, %int1
// OPERATOR-NEXT:    %[[JM:.+]] = torch.aten.slice.Tensor %mask, %int3, %int5, %int8, %int1
// OPERATOR-NEXT:    %[[LN:[^,]+]], %[[LL:[^,]+]], %[[OK:[^ ]+]] = torch.operator "torch.jointattn.key_padding_lengths"(%[[KM]], %[[JM]], %int2, %int5, %int3) : (!torch.vtensor<[2,1,1,5],i1>, !torch.vtensor<[2,1,1,3],i1>, !torch.int, !torch.int, !torch.int) -> (!torch.vtensor<[2],si64>, !torch.vtensor<[2],si64>, !torch.vtensor<[],i1>)
// OPERATOR-NEXT:    %[[AUTO:.+]] = torch.constant.str "auto"
// OPERATOR-NEXT:    %a, %b, %{{[^ ]+}} = torch.operator "torch.jointattn.masked_joint_attention"(%q, %k, %v, %jq, %jk, %jv, %[[KM]], %[[JM]], %[[LN]], %[[LL]], %[[OK]], %none, %[[AUTO]]) : (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>, !torch.vtensor<[2,2,3,8],f32>, !torch.vtensor<[2,2,3,8],f32>, !torch.vtensor<[2,1,1,5],i1>, !torch.vtensor<[2,1,1,3],i1>, !torch.vtensor<[2],si64>, !torch.vtensor<[2],si64>, !torch.vtensor<[],i1>, !torch.none, !torch.str) -> (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>, !torch.vtensor<[2,2,8],f32>)
// OPERATOR-NEXT:    func.return %a, %b

// TORCH-MLIR-LABEL: func.func @bool_mask_argument(
// TORCH-MLIR:         torch.operator "torch.jointattn.key_padding_lengths"
// TORCH-MLIR:         torch.operator "torch.jointattn.masked_joint_attention"

// REMARK: remark: fuse-joint-attention: @bool_mask_argument SDPA #0: fused: token sets [5, 3] (spatial-first), key-padding mask checked at run time (exact path if it is not a prefix), both outputs used

// -----

// An additive mask [1, S] (broadcast over batch, heads, queries), text first: the longer image set is the op's
// spatial side, so key_mask is the mask's second piece.
func.func @additive_mask_text_first(%q: !torch.vtensor<[2,2,5,8],f32>, %k: !torch.vtensor<[2,2,5,8],f32>, %v: !torch.vtensor<[2,2,5,8],f32>, %jq: !torch.vtensor<[2,2,3,8],f32>, %jk: !torch.vtensor<[2,2,3,8],f32>, %jv: !torch.vtensor<[2,2,3,8],f32>, %mask: !torch.vtensor<[1,8],f32>) -> (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>) {
  %int0 = torch.constant.int 0
  %int1 = torch.constant.int 1
  %int2 = torch.constant.int 2
  %int3 = torch.constant.int 3
  %int5 = torch.constant.int 5
  %int8 = torch.constant.int 8
  %none = torch.constant.none
  %false = torch.constant.bool false
  %float0.000000e00 = torch.constant.float 0.000000e+00
  %l0 = torch.prim.ListConstruct %jq, %q : (!torch.vtensor<[2,2,3,8],f32>, !torch.vtensor<[2,2,5,8],f32>) -> !torch.list<vtensor>
  %c0 = torch.aten.cat %l0, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[2,2,8,8],f32>
  %l1 = torch.prim.ListConstruct %jk, %k : (!torch.vtensor<[2,2,3,8],f32>, !torch.vtensor<[2,2,5,8],f32>) -> !torch.list<vtensor>
  %c1 = torch.aten.cat %l1, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[2,2,8,8],f32>
  %l2 = torch.prim.ListConstruct %jv, %v : (!torch.vtensor<[2,2,3,8],f32>, !torch.vtensor<[2,2,5,8],f32>) -> !torch.list<vtensor>
  %c2 = torch.aten.cat %l2, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[2,2,8,8],f32>
  %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %mask, %float0.000000e00, %false, %none, %false : !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[1,8],f32>, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[2,2,8,8],f32>
  %t = torch.aten.slice.Tensor %o, %int2, %int0, %int3, %int1 : !torch.vtensor<[2,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[2,2,3,8],f32>
  %i = torch.aten.slice.Tensor %o, %int2, %int3, %int8, %int1 : !torch.vtensor<[2,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[2,2,5,8],f32>
  return %i, %t : !torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>
}

// CHECK-LABEL: func.func @additive_mask_text_first(
// CHECK:         %[[TEXT:.+]] = torch.aten.slice.Tensor %mask, %int1, %int0, %int3, %int1 : !torch.vtensor<[1,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,3],f32>
// CHECK-NEXT:    %[[IMAGE:.+]] = torch.aten.slice.Tensor %mask, %int1, %int3, %int8, %int1 : !torch.vtensor<[1,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,5],f32>
// CHECK-NEXT:    %[[LN:[^,]+]], %[[LL:[^,]+]], %[[OK:[^ ]+]] = jointattn.key_padding_lengths %[[IMAGE]], %[[TEXT]] {n = 5 : i64, l = 3 : i64} : !torch.vtensor<[1,5],f32>, !torch.vtensor<[1,3],f32> -> !torch.vtensor<[2],si64>, !torch.vtensor<[2],si64>, !torch.vtensor<[],i1>
// CHECK-NEXT:    %i, %t, %{{[^ ]+}} = jointattn.masked_joint_attention %q, %k, %v, %jq, %jk, %jv masks(%[[IMAGE]], %[[TEXT]] : !torch.vtensor<[1,5],f32>, !torch.vtensor<[1,3],f32>) check(%[[LN]], %[[LL]], %[[OK]] : !torch.vtensor<[2],si64>)
// CHECK-NEXT:    func.return %i, %t

// OPERATOR-LABEL: func.func @additive_mask_text_first(
// OPERATOR:         %[[TEXT:.+]] = torch.aten.slice.Tensor %mask, %int1, %int0, %int3, %int1
// OPERATOR-NEXT:    %[[IMAGE:.+]] = torch.aten.slice.Tensor %mask, %int1, %int3, %int8, %int1
// OPERATOR-NEXT:    torch.operator "torch.jointattn.key_padding_lengths"(%[[IMAGE]], %[[TEXT]], %int2, %int5, %int3) : (!torch.vtensor<[1,5],f32>, !torch.vtensor<[1,3],f32>, !torch.int, !torch.int, !torch.int)
// OPERATOR:         %i, %t, %{{[^ ]+}} = torch.operator "torch.jointattn.masked_joint_attention"(%q, %k, %v, %jq, %jk, %jv, %[[IMAGE]], %[[TEXT]],

// TORCH-MLIR-LABEL: func.func @additive_mask_text_first(
// TORCH-MLIR:         torch.operator "torch.jointattn.masked_joint_attention"

// REMARK: remark: fuse-joint-attention: @additive_mask_text_first SDPA #0: fused: token sets [3, 5] (text-first), key-padding mask checked at run time (exact path if it is not a prefix), both outputs used

// -----

// Two attentions share one mask: one check (one host sync) serves both.
func.func @shared_mask(%q: !torch.vtensor<[2,2,5,8],f32>, %k: !torch.vtensor<[2,2,5,8],f32>, %v: !torch.vtensor<[2,2,5,8],f32>, %jq: !torch.vtensor<[2,2,3,8],f32>, %jk: !torch.vtensor<[2,2,3,8],f32>, %jv: !torch.vtensor<[2,2,3,8],f32>, %mask: !torch.vtensor<[2,1,1,8],i1>) -> (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>, !torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>) {
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
  %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %mask, %float0.000000e00, %false, %none, %false : !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,1,1,8],i1>, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[2,2,8,8],f32>
  %a = torch.aten.slice.Tensor %o, %int2, %int0, %int5, %int1 : !torch.vtensor<[2,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[2,2,5,8],f32>
  %b = torch.aten.slice.Tensor %o, %int2, %int5, %int8, %int1 : !torch.vtensor<[2,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[2,2,3,8],f32>
  %l0b = torch.prim.ListConstruct %a, %b : (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>) -> !torch.list<vtensor>
  %c0b = torch.aten.cat %l0b, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[2,2,8,8],f32>
  %c1b = torch.aten.add.Tensor %c0b, %c1, %int1 : !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32>, !torch.int -> !torch.vtensor<[2,2,8,8],f32>
  %c2b = torch.aten.mul.Tensor %c2, %c2 : !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32> -> !torch.vtensor<[2,2,8,8],f32>
  %o2 = torch.aten.scaled_dot_product_attention %c0b, %c1b, %c2b, %mask, %float0.000000e00, %false, %none, %false : !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,1,1,8],i1>, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[2,2,8,8],f32>
  %a2 = torch.aten.slice.Tensor %o2, %int2, %int0, %int5, %int1 : !torch.vtensor<[2,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[2,2,5,8],f32>
  %b2 = torch.aten.slice.Tensor %o2, %int2, %int5, %int8, %int1 : !torch.vtensor<[2,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[2,2,3,8],f32>
  return %a, %b, %a2, %b2 : !torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>, !torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>
}

// CHECK-LABEL: func.func @shared_mask(
// CHECK:         %[[LN:[^,]+]], %[[LL:[^,]+]], %[[OK:[^ ]+]] = jointattn.key_padding_lengths
// CHECK-NOT:     jointattn.key_padding_lengths
// CHECK:         %a, %b, %{{[^ ]+}} = jointattn.masked_joint_attention %q, %k, %v, %jq, %jk, %jv masks({{.+}}) check(%[[LN]], %[[LL]], %[[OK]] : !torch.vtensor<[2],si64>)
// CHECK-NOT:     jointattn.key_padding_lengths
// CHECK:         %a2, %b2, %{{[^ ]+}} = jointattn.masked_joint_attention %a, {{.+}} check(%[[LN]], %[[LL]], %[[OK]] : !torch.vtensor<[2],si64>)

// OPERATOR-LABEL: func.func @shared_mask(
// OPERATOR:         torch.operator "torch.jointattn.key_padding_lengths"
// OPERATOR-NOT:     torch.operator "torch.jointattn.key_padding_lengths"
// OPERATOR:         torch.operator "torch.jointattn.masked_joint_attention"
// OPERATOR-NOT:     torch.operator "torch.jointattn.key_padding_lengths"
// OPERATOR:         torch.operator "torch.jointattn.masked_joint_attention"

// REMARK: remark: fuse-joint-attention: @shared_mask SDPA #0: fused: token sets [5, 3] (spatial-first), key-padding mask checked at run time
// REMARK: remark: fuse-joint-attention: @shared_mask SDPA #1: fused: token sets [5, 3] (spatial-first), key-padding mask checked at run time

// -----

// A mask concatenated from per-set validities that the pass cannot prove to be prefixes (they are arguments):
// the check takes the per-set pieces themselves (broadcast per set), and the concat disappears.
func.func @mask_from_parts(%q: !torch.vtensor<[2,2,5,8],f32>, %k: !torch.vtensor<[2,2,5,8],f32>, %v: !torch.vtensor<[2,2,5,8],f32>, %jq: !torch.vtensor<[2,2,3,8],f32>, %jk: !torch.vtensor<[2,2,3,8],f32>, %jv: !torch.vtensor<[2,2,3,8],f32>, %image_valid: !torch.vtensor<[2,5],i1>, %text_valid: !torch.vtensor<[2,3],i1>) -> (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>) {
  %int0 = torch.constant.int 0
  %int1 = torch.constant.int 1
  %int2 = torch.constant.int 2
  %int3 = torch.constant.int 3
  %int5 = torch.constant.int 5
  %int8 = torch.constant.int 8
  %none = torch.constant.none
  %false = torch.constant.bool false
  %float0.000000e00 = torch.constant.float 0.000000e+00
  %vl = torch.prim.ListConstruct %image_valid, %text_valid : (!torch.vtensor<[2,5],i1>, !torch.vtensor<[2,3],i1>) -> !torch.list<vtensor>
  %valid = torch.aten.cat %vl, %int1 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[2,8],i1>
  %m1 = torch.aten.unsqueeze %valid, %int1 : !torch.vtensor<[2,8],i1>, !torch.int -> !torch.vtensor<[2,1,8],i1>
  %mask = torch.aten.unsqueeze %m1, %int2 : !torch.vtensor<[2,1,8],i1>, !torch.int -> !torch.vtensor<[2,1,1,8],i1>
  %l0 = torch.prim.ListConstruct %q, %jq : (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>) -> !torch.list<vtensor>
  %c0 = torch.aten.cat %l0, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[2,2,8,8],f32>
  %l1 = torch.prim.ListConstruct %k, %jk : (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>) -> !torch.list<vtensor>
  %c1 = torch.aten.cat %l1, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[2,2,8,8],f32>
  %l2 = torch.prim.ListConstruct %v, %jv : (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>) -> !torch.list<vtensor>
  %c2 = torch.aten.cat %l2, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[2,2,8,8],f32>
  %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %mask, %float0.000000e00, %false, %none, %false : !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,1,1,8],i1>, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[2,2,8,8],f32>
  %a = torch.aten.slice.Tensor %o, %int2, %int0, %int5, %int1 : !torch.vtensor<[2,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[2,2,5,8],f32>
  %b = torch.aten.slice.Tensor %o, %int2, %int5, %int8, %int1 : !torch.vtensor<[2,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[2,2,3,8],f32>
  return %a, %b : !torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>
}

// CHECK-LABEL: func.func @mask_from_parts(
// CHECK-NOT:     torch.aten.cat
// CHECK:         %[[I1:.+]] = torch.aten.unsqueeze %image_valid, %int1 : !torch.vtensor<[2,5],i1>, !torch.int -> !torch.vtensor<[2,1,5],i1>
// CHECK-NEXT:    %[[T1:.+]] = torch.aten.unsqueeze %text_valid, %int1 : !torch.vtensor<[2,3],i1>, !torch.int -> !torch.vtensor<[2,1,3],i1>
// CHECK-NEXT:    %[[KM:.+]] = torch.aten.unsqueeze %[[I1]], %int2 : !torch.vtensor<[2,1,5],i1>, !torch.int -> !torch.vtensor<[2,1,1,5],i1>
// CHECK-NEXT:    %[[JM:.+]] = torch.aten.unsqueeze %[[T1]], %int2 : !torch.vtensor<[2,1,3],i1>, !torch.int -> !torch.vtensor<[2,1,1,3],i1>
// CHECK-NEXT:    jointattn.key_padding_lengths %[[KM]], %[[JM]] {n = 5 : i64, l = 3 : i64}
// CHECK-NEXT:    jointattn.masked_joint_attention %q, %k, %v, %jq, %jk, %jv masks(%[[KM]], %[[JM]] :
// CHECK-NOT:     torch.aten.cat
// CHECK-NOT:     torch.aten.slice.Tensor

// REMARK: remark: fuse-joint-attention: @mask_from_parts SDPA #0: fused: token sets [5, 3] (spatial-first), key-padding mask checked at run time

// -----

// Near miss, refused: the mask argument varies over queries (not a key-padding mask); nothing may change.
func.func @refuse_mask_over_queries(%q: !torch.vtensor<[2,2,5,8],f32>, %k: !torch.vtensor<[2,2,5,8],f32>, %v: !torch.vtensor<[2,2,5,8],f32>, %jq: !torch.vtensor<[2,2,3,8],f32>, %jk: !torch.vtensor<[2,2,3,8],f32>, %jv: !torch.vtensor<[2,2,3,8],f32>, %mask: !torch.vtensor<[2,1,8,8],i1>) -> (!torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>) {
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
  %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %mask, %float0.000000e00, %false, %none, %false : !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,1,8,8],i1>, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[2,2,8,8],f32>
  %a = torch.aten.slice.Tensor %o, %int2, %int0, %int5, %int1 : !torch.vtensor<[2,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[2,2,5,8],f32>
  %b = torch.aten.slice.Tensor %o, %int2, %int5, %int8, %int1 : !torch.vtensor<[2,2,8,8],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[2,2,3,8],f32>
  return %a, %b : !torch.vtensor<[2,2,5,8],f32>, !torch.vtensor<[2,2,3,8],f32>
}

// CHECK-LABEL: func.func @refuse_mask_over_queries(
// CHECK-NOT:     jointattn.
// CHECK:         %o = torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %mask, %float0.000000e00, %false, %none, %false : !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,2,8,8],f32>, !torch.vtensor<[2,1,8,8],i1>, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[2,2,8,8],f32>
// CHECK-NEXT:    %a = torch.aten.slice.Tensor %o, %int2, %int0, %int5, %int1
// CHECK-NEXT:    %b = torch.aten.slice.Tensor %o, %int2, %int5, %int8, %int1
// CHECK-NEXT:    func.return %a, %b

// OPERATOR-LABEL: func.func @refuse_mask_over_queries(
// OPERATOR-NOT:     torch.operator
// OPERATOR:         torch.aten.scaled_dot_product_attention %c0, %c1, %c2, %mask,

// REMARK: remark: fuse-joint-attention: @refuse_mask_over_queries SDPA #0: not fused: attn_mask varies over queries (not a key-padding mask)
