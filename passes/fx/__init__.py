"""The FX fusion pass (see `fuse.py`): finds joint attention in FX graphs and replaces it with the op.

Its decisions are `passes/decisions.py`'s, shared with the MLIR pass; they are re-exported here."""

from ..decisions import Decision, FusionReport
from .fuse import fuse_joint_attention

__all__ = ["fuse_joint_attention", "Decision", "FusionReport"]
