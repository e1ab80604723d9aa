"""The MLIR path's passes (xDSL), over torch-mlir's torch dialect; `jointattn-opt` runs them.

- `fuse.py`: `fuse-joint-attention{emit=jointattn|operator remarks=true}`, the MLIR twin of the FX pass
  (`passes/fx/fuse.py`; matching in `joint_match.py`, with the twins of the FX modules of the same names:
  `parts.py`, `axes.py`, `ranges.py`, `masks.py`; masks checked at run time in `padding_check.py`; the
  shared vocabulary in `passes/`: see `passes/__init__.py`).
- `lower_joint_attention.py`: `lower-joint-attention{target=ttnn|triton}` (device calls in `target_calls.py`,
  the masked form's `scf.if` in `lower_masked.py`).
- `dialects/`: torch (torch-mlir's syntax), jointattn (with its masked forms), ttnn, jointattn_triton, a sliver of
  torch_c, and the parsing context.
Import -> passes -> emitted Python: `compiler/mlir/` (importer.py, then opt_main.py runs these passes, then emit.py).
"""

from .fuse import Decision, FuseJointAttentionPass, fuse_joint_attention, remark
from .lower_joint_attention import LowerJointAttentionPass, lower_joint_attention

__all__ = [
    "FuseJointAttentionPass",
    "Decision",
    "fuse_joint_attention",
    "remark",
    "LowerJointAttentionPass",
    "lower_joint_attention",
]
