"""The ops (`ops/`: what the passes emit and users call), their exact reference, the dispatcher and the runtimes
the ops run on (the registry, the launchers of our kernels, ttnn and TT-Lang)."""

from . import ops
from .ops import BACKWARD_OP_NAME, OP_NAME, joint_attention
from .registry import RUNTIME_NAMES, forward_path, get_runtime, select_runtime

__all__ = [
    "ops",
    "OP_NAME",
    "BACKWARD_OP_NAME",
    "joint_attention",
    "RUNTIME_NAMES",
    "forward_path",
    "get_runtime",
    "select_runtime",
]
