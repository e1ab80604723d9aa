"""The `joint_attention` op, its exact reference and the runtimes it dispatches to."""

from . import (
    masked_op,  # noqa: F401  (registers jointattn::masked_joint_attention)
    rms_norm_rope,  # noqa: F401  (registers jointattn::rms_norm_rope)
)
from .op import BACKWARD_OP_NAME, OP_NAME, joint_attention
from .registry import RUNTIME_NAMES, forward_path, get_runtime, select_runtime

__all__ = [
    "OP_NAME",
    "BACKWARD_OP_NAME",
    "joint_attention",
    "RUNTIME_NAMES",
    "forward_path",
    "get_runtime",
    "select_runtime",
]
