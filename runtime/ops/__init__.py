"""The ops the passes emit and users call, defined in one place: their schemas, argument checks, fake kernels
and autograd. Importing this package registers them with torch; which implementation runs a call is decided
below them, in `jointattn.runtime.registry` and `dispatch.py`.

- `joint_attention` (`jointattn::joint_attention`, `jointattn::joint_attention_backward`): joint.py;
- `key_padding_lengths` and `masked_joint_attention` (a key mask checked at run time): masked.py;
- `block_sparse_joint_attention` (a BlockMask over the spatial tokens) and
  `estimate_kv_blocks` (its mask estimated from q and k at run time; `estimate_kv_blocks_reused`: re-estimated
  every few calls of a layer) and `dense_calls_flag` (a layer's first calls dense): sparse.py and
  sparse_schedule.py;
- `rms_norm_rope` (the attention's QK-norm + RoPE prologue): rms_norm_rope.py;
- `compact_valid_rows` (Mochi's unpad bookkeeping, which the FX pass writes into graphs): padding.py;
- contract.py: what they share (checks, the validated `JointCall`, output layouts).
"""

import torch

from . import masked, rms_norm_rope, sparse, sparse_schedule  # noqa: F401  (each registers its ops)
from .joint import BACKWARD_OP_NAME, OP_NAME, joint_attention
from .masked import key_padding_lengths, masked_joint_attention
from .padding import compact_valid_rows

# The overloads graphs call (what the FX pass inserts and what inductor and torch.export see).
JOINT_ATTENTION = torch.ops.jointattn.joint_attention.default
MASKED_JOINT_ATTENTION = torch.ops.jointattn.masked_joint_attention.default
KEY_PADDING_LENGTHS = torch.ops.jointattn.key_padding_lengths.default
RMS_NORM_ROPE = torch.ops.jointattn.rms_norm_rope.default
BLOCK_SPARSE_JOINT_ATTENTION = torch.ops.jointattn.block_sparse_joint_attention.default
ESTIMATE_KV_BLOCKS = torch.ops.jointattn.estimate_kv_blocks.default
ESTIMATE_KV_BLOCKS_REUSED = torch.ops.jointattn.estimate_kv_blocks_reused.default
DENSE_CALLS_FLAG = torch.ops.jointattn.dense_calls_flag.default
LAYOUT_CONSTANT = torch.ops.jointattn.layout_constant.default
PREFIX_LENGTHS = torch.ops.jointattn.prefix_lengths.default

__all__ = [
    "JOINT_ATTENTION",
    "MASKED_JOINT_ATTENTION",
    "KEY_PADDING_LENGTHS",
    "RMS_NORM_ROPE",
    "BLOCK_SPARSE_JOINT_ATTENTION",
    "ESTIMATE_KV_BLOCKS",
    "ESTIMATE_KV_BLOCKS_REUSED",
    "DENSE_CALLS_FLAG",
    "LAYOUT_CONSTANT",
    "PREFIX_LENGTHS",
    "OP_NAME",
    "BACKWARD_OP_NAME",
    "joint_attention",
    "key_padding_lengths",
    "masked_joint_attention",
    "masked",
    "sparse",
    "rms_norm_rope",
    "compact_valid_rows",
]
