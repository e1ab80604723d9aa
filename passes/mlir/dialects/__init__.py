"""xDSL dialects of the MLIR path: a typed minimal `torch` (torch-mlir's syntax), `jointattn` (with the masked
forms of `jointattn_masked.py`), `ttnn`, `jointattn_triton`, `jointattn_ttlang` and `torch_c.to_i1`, and the context that parses them
(`make_context`, `parse_module`)."""

from .context import DIALECTS, TorchContext, load_dialects, make_context, parse_module
from .jointattn import JointAttentionOp, JointAttn
from .jointattn_masked import KeyPaddingLengthsOp, MaskedJointAttentionOp, MaskedReferenceOp
from .jointattn_triton import JointAttnTriton, LaunchConfigAttr, LaunchForwardOp
from .jointattn_ttlang import JointAttnTtlang, TtlangConfigAttr, TtlangJointAttentionOp
from .torch_dialect import Torch
from .ttnn import TTNN, ComputeKernelConfigAttr, JointSDPAOp, SDPAProgramConfigAttr

__all__ = [
    "DIALECTS",
    "TorchContext",
    "load_dialects",
    "make_context",
    "parse_module",
    "JointAttentionOp",
    "JointAttn",
    "KeyPaddingLengthsOp",
    "MaskedJointAttentionOp",
    "MaskedReferenceOp",
    "JointAttnTriton",
    "LaunchConfigAttr",
    "LaunchForwardOp",
    "JointAttnTtlang",
    "TtlangConfigAttr",
    "TtlangJointAttentionOp",
    "Torch",
    "TTNN",
    "ComputeKernelConfigAttr",
    "JointSDPAOp",
    "SDPAProgramConfigAttr",
]
