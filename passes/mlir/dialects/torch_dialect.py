"""The `torch` dialect object (types from `torch_types`, ops from `torch_ops`)."""

from xdsl.ir import Dialect

from .torch_ops import TORCH_OPS
from .torch_types import TORCH_TYPES

Torch = Dialect("torch", list(TORCH_OPS), list(TORCH_TYPES))
