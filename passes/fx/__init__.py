"""The FX fusion pass (see `fuse.py`): finds joint attention in FX graphs and replaces it with the op."""

from .fuse import fuse_joint_attention
from .report import Decision, FusionReport

__all__ = ["fuse_joint_attention", "Decision", "FusionReport"]
