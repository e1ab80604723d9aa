// RUN: %torch-mlir-opt %s > %t.reference.mlir
// RUN: %jointattn-opt %s | %torch-mlir-opt > %t.through-xdsl.mlir
// RUN: diff %t.reference.mlir %t.through-xdsl.mlir
// RUN: %jointattn-opt %s -p 'fuse-joint-attention{emit=operator}' | %torch-mlir-opt | %filecheck %s

// IR goes through jointattn-opt and back into torch-mlir-opt unchanged: torch-mlir's syntax for its types, its
// generated ops (here `aten.mm`, kept opaque), constants, a `dense_resource` literal with its blob and a hex
// -inf splat. After fusion with emit=operator the module is still valid torch-mlir IR.

func.func @main(%x: !torch.vtensor<[1,5,4],f32>, %t: !torch.vtensor<[1,3,4],f32>) -> (!torch.vtensor<[1,5,4],f32>, !torch.vtensor<[1,1,1,8],f32>) {
  %int0 = torch.constant.int 0
  %int1 = torch.constant.int 1
  %int2 = torch.constant.int 2
  %int4 = torch.constant.int 4
  %int5 = torch.constant.int 5
  %int8 = torch.constant.int 8
  %false = torch.constant.bool false
  %none = torch.constant.none
  %float0.000000e00 = torch.constant.float 0.000000e+00
  %w = torch.vtensor.literal(dense_resource<torch_tensor_4_4_torch.float32> : tensor<4x4xf32>) : !torch.vtensor<[4,4],f32>
  %ninf = torch.vtensor.literal(dense<0xFF800000> : tensor<f32>) : !torch.vtensor<[],f32>
  %zero = torch.vtensor.literal(dense<0.000000e+00> : tensor<1x1x1x8xf32>) : !torch.vtensor<[1,1,1,8],f32>
  %s0 = torch.prim.ListConstruct %int5, %int4 : (!torch.int, !torch.int) -> !torch.list<int>
  %x2 = torch.aten.view %x, %s0 : !torch.vtensor<[1,5,4],f32>, !torch.list<int> -> !torch.vtensor<[5,4],f32>
  %xw = torch.aten.mm %x2, %w : !torch.vtensor<[5,4],f32>, !torch.vtensor<[4,4],f32> -> !torch.vtensor<[5,4],f32>
  %s1 = torch.prim.ListConstruct %int1, %int1, %int5, %int4 : (!torch.int, !torch.int, !torch.int, !torch.int) -> !torch.list<int>
  %q = torch.aten.view %xw, %s1 : !torch.vtensor<[5,4],f32>, !torch.list<int> -> !torch.vtensor<[1,1,5,4],f32>
  %s2 = torch.prim.ListConstruct %int1, %int1, %int2, %int4 : (!torch.int, !torch.int, !torch.int, !torch.int) -> !torch.list<int>
  %j = torch.aten.unsqueeze %t, %int1 : !torch.vtensor<[1,3,4],f32>, !torch.int -> !torch.vtensor<[1,1,3,4],f32>
  %l = torch.prim.ListConstruct %q, %j : (!torch.vtensor<[1,1,5,4],f32>, !torch.vtensor<[1,1,3,4],f32>) -> !torch.list<vtensor>
  %c = torch.aten.cat %l, %int2 : !torch.list<vtensor>, !torch.int -> !torch.vtensor<[1,1,8,4],f32>
  %o = torch.aten.scaled_dot_product_attention %c, %c, %c, %none, %float0.000000e00, %false, %none, %false : !torch.vtensor<[1,1,8,4],f32>, !torch.vtensor<[1,1,8,4],f32>, !torch.vtensor<[1,1,8,4],f32>, !torch.none, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[1,1,8,4],f32>
  %img = torch.aten.slice.Tensor %o, %int2, %int0, %int5, %int1 : !torch.vtensor<[1,1,8,4],f32>, !torch.int, !torch.int, !torch.int, !torch.int -> !torch.vtensor<[1,1,5,4],f32>
  %s3 = torch.prim.ListConstruct %int1, %int5, %int4 : (!torch.int, !torch.int, !torch.int) -> !torch.list<int>
  %r = torch.aten.view %img, %s3 : !torch.vtensor<[1,1,5,4],f32>, !torch.list<int> -> !torch.vtensor<[1,5,4],f32>
  %bias = torch.aten.add.Tensor %zero, %ninf, %int1 : !torch.vtensor<[1,1,1,8],f32>, !torch.vtensor<[],f32>, !torch.int -> !torch.vtensor<[1,1,1,8],f32>
  return %r, %bias : !torch.vtensor<[1,5,4],f32>, !torch.vtensor<[1,1,1,8],f32>
}

{-#
  dialect_resources: {
    builtin: {
      torch_tensor_4_4_torch.float32: "0x040000000000803F000000000000000000000000000000000000803F000000000000000000000000000000000000803F000000000000000000000000000000000000803F"
    }
  }
#-}

// CHECK-LABEL: func.func @main(
// CHECK:         %[[RES:.+]]:3 = torch.operator "torch.jointattn.joint_attention"(%{{.+}}) : (!torch.vtensor<[1,1,5,4],f32>, !torch.vtensor<[1,1,5,4],f32>, !torch.vtensor<[1,1,5,4],f32>, !torch.vtensor<[1,1,3,4],f32>, !torch.vtensor<[1,1,3,4],f32>, !torch.vtensor<[1,1,3,4],f32>, !torch.str, !torch.none, !torch.none, !torch.none, !torch.str) -> (!torch.vtensor<[1,1,5,4],f32>, !torch.vtensor<[1,1,3,4],f32>, !torch.vtensor<[1,1,8],f32>)
// CHECK:         torch.aten.view %[[RES]]#0
// CHECK-NOT:     torch.aten.scaled_dot_product_attention
// CHECK:         torch_tensor_4_4_torch.float32: "0x040000000000803F
