"""Host side of one launch: tensors to and from the device, and the operation call.

Entry points (`ttnn` is the real module or tt-lang-sim's, `device` what it opened):
- `upload(ttnn, device, tensor, dtype)`: a 2-D host tensor to a tiled DRAM tensor of dtype "bfloat16"/"float32";
- `output_tensors(ttnn, device, plan, dtype)`: out, joint_out (0) and lse, joint_lse (-inf) for `plan`, all in
  `dtype` (the compiler's elementwise operations need one dtype for every block of a kernel);
- `run(plan, scale, inputs, outputs)`: each launch of `plan` (the operation of `joint_attention.py`) on the seven
  input device tensors (q, k, v, joint_q, joint_k, joint_v, mask_tiles), writing the four outputs in place. A plan
  without launches (no valid key) leaves the outputs as they are: 0 and lse -inf, or what a ring step carried.
Host tensors come in the device layout already (`jointattn.runtime.ttlang.layout` makes them).
"""

from __future__ import annotations

import torch

from .joint_attention import make_joint_attention
from .schedule import JOINT, SPATIAL, TILE, JointPlan


def upload(ttnn, device, tensor: torch.Tensor, dtype: str):
    return ttnn.from_torch(
        tensor,
        dtype=getattr(ttnn, dtype),
        layout=ttnn.TILE_LAYOUT,
        device=device,
        memory_config=ttnn.DRAM_MEMORY_CONFIG,
    )


def output_tensors(ttnn, device, plan: JointPlan, dtype: str) -> list:
    """A token set with no rows still gets one tile (never read or written): TT-NN has no empty tiled tensor. Rows no
    launch writes (batches with no valid key) keep these values."""
    rows = [max(1, plan.b * plan.nh * plan.set_tiles(s)) * TILE for s in (SPATIAL, JOINT)]
    outs = [upload(ttnn, device, torch.zeros(r, plan.d_tiles * TILE), dtype) for r in rows]
    lses = [upload(ttnn, device, torch.full((r, TILE), float("-inf")), dtype) for r in rows]
    return outs + lses


def run(plan: JointPlan, scale: float, inputs: list, outputs: list) -> None:
    for launch in plan.launches:
        make_joint_attention(launch, float(scale))(*inputs, *outputs)
