# RUN: %python %s > %t.mlir
# RUN: %jointattn-opt %t.mlir -p fuse-joint-attention | %filecheck %s
# RUN: %jointattn-opt %t.mlir -p 'fuse-joint-attention{remarks=true}' 2>&1 >/dev/null | %filecheck %s --check-prefix=REMARK
# RUN: %jointattn-opt %t.mlir -p 'fuse-joint-attention{emit=operator},lower-joint-attention{target=ttnn}' | %filecheck %s --check-prefix=TTNN

# A Python module -> torch-mlir import -> jointattn-opt. The block is written the way diffusers' SD3 attention
# processor writes it: per-stream projections, per-head RMS norm, cat on the sequence dim of [B, H, S, D], SDPA,
# transpose + reshape, then the two token sets sliced back with `[:, :n]` / `[:, n:]`.

import torch
import torch.nn.functional as F
from jointattn.compiler.mlir.importer import import_module

HEADS, HEAD_DIM = 2, 8


class JointBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        width = HEADS * HEAD_DIM
        self.to_qkv = torch.nn.Linear(width, 3 * width)
        self.add_qkv = torch.nn.Linear(width, 3 * width)
        self.norm_q = torch.nn.RMSNorm(HEAD_DIM)
        self.norm_added_q = torch.nn.RMSNorm(HEAD_DIM)

    def heads(self, x):
        b = x.shape[0]
        return x.view(b, -1, HEADS, HEAD_DIM).transpose(1, 2)

    def forward(self, hidden, context):
        q, k, v = (self.heads(t) for t in self.to_qkv(hidden).chunk(3, dim=-1))
        cq, ck, cv = (self.heads(t) for t in self.add_qkv(context).chunk(3, dim=-1))
        q, cq = self.norm_q(q), self.norm_added_q(cq)
        query = torch.cat([q, cq], dim=2)
        key = torch.cat([k, ck], dim=2)
        value = torch.cat([v, cv], dim=2)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(hidden.shape[0], -1, HEADS * HEAD_DIM)
        return out[:, : hidden.shape[1]], out[:, hidden.shape[1] :]


torch.manual_seed(0)
print(import_module(JointBlock().eval(), torch.randn(2, 20, 16), torch.randn(2, 7, 16)))

# CHECK-LABEL: func.func @main(
# CHECK-NOT:     torch.aten.scaled_dot_product_attention
# CHECK:         %[[OUT:[^,]+]], %[[JOINT:[^,]+]], %{{[^ ]+}} = jointattn.joint_attention
# CHECK-SAME:    {scale = 0.35355339059327379 : f64} : !torch.vtensor<[2,2,20,8],f32>, !torch.vtensor<[2,2,7,8],f32> -> !torch.vtensor<[2,2,27],f32>
# CHECK-DAG:     torch.aten.permute %[[OUT]]
# CHECK-DAG:     torch.aten.permute %[[JOINT]]
# CHECK-NOT:     torch.aten.scaled_dot_product_attention
# CHECK:         func.return
# The weights torch-mlir stored as resources survive the pass.
# CHECK:         dialect_resources

# REMARK: remark: fuse-joint-attention: @main SDPA #0: fused: token sets [20, 7] (spatial-first), no padding, both outputs used

# TTNN:          ttnn.joint_scaled_dot_product_attention
# TTNN-SAME:     joint_strategy = "rear", scale = 0.35355339059327379 : f64, program_config = #ttnn.sdpa_program_config<q_chunk_size = 32, k_chunk_size = 32
