# RUN: %python %s > %t.mlir
# RUN: %jointattn-opt %t.mlir -p fuse-joint-attention | %filecheck %s
# RUN: %jointattn-opt %t.mlir -p 'fuse-joint-attention{emit=operator},lower-joint-attention{target=triton}' | %filecheck %s --check-prefix=TRITON

# Flux's layout without RoPE: [B, S, H, D] tensors, text first, the concat transposed to [B, H, S, D] for SDPA,
# `flatten(2, 3)` and `split_with_sizes` after; the text is padded, with a key-padding mask built from its
# valid lengths (`arange(L) < lengths`), which the pass turns into the op's logical_l.

import torch
import torch.nn.functional as F
from jointattn.compiler.mlir.importer import import_module


class PaddedTextFirst(torch.nn.Module):
    def forward(self, img_q, img_k, img_v, txt_q, txt_k, txt_v, txt_lengths):
        b, n, length = img_q.shape[0], img_q.shape[1], txt_q.shape[1]
        q = torch.cat([txt_q, img_q], dim=1).transpose(1, 2)
        k = torch.cat([txt_k, img_k], dim=1).transpose(1, 2)
        v = torch.cat([txt_v, img_v], dim=1).transpose(1, 2)
        txt_valid = torch.arange(length)[None, :] < txt_lengths[:, None]
        img_valid = torch.ones(b, n, dtype=torch.bool)
        mask = torch.cat([txt_valid, img_valid], dim=1)[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).flatten(2, 3)
        txt, img = out.split_with_sizes([length, n], dim=1)
        return img, txt


torch.manual_seed(0)
img = [torch.randn(2, 19, 3, 8) for _ in range(3)]
txt = [torch.randn(2, 6, 3, 8) for _ in range(3)]
print(import_module(PaddedTextFirst(), *img, *txt, torch.tensor([4, 6])))

# CHECK-LABEL: func.func @main(
# CHECK:         %[[LEN:.+]] = torch.aten.clamp %arg6, %int0, %int6 : !torch.vtensor<[2],si64>, !torch.int, !torch.int -> !torch.vtensor<[2],si64>
# CHECK:         %[[OUT:[^,]+]], %[[JOINT:[^,]+]], %{{[^ ]+}} = jointattn.joint_attention %{{[^,]+}}, %{{[^,]+}}, %{{[^,]+}}, %{{[^,]+}}, %{{[^,]+}}, %{{[^ ]+}} logical_l(%[[LEN]] : !torch.vtensor<[2],si64>)
# CHECK-SAME:    : !torch.vtensor<[2,3,19,8],f32>, !torch.vtensor<[2,3,6,8],f32> -> !torch.vtensor<[2,3,25],f32>
# CHECK-NOT:     torch.aten.scaled_dot_product_attention
# CHECK-NOT:     torch.aten.split_with_sizes

# TRITON:        jointattn_triton.launch_forward
# TRITON-SAME:   logical_l(
