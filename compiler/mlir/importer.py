"""Imports a PyTorch module into torch-dialect MLIR text through torch-mlir's FX importer.

Entry point: `import_module(model, *example_inputs, output_type="torch") -> str`, the first step of the MLIR
path (import -> `jointattn-opt` passes -> `emit.py`). The text parses with
`jointattn.passes.mlir.dialects.parse_module` and with `torch-mlir-opt`.

Internals, and why:
- torch-mlir's default decomposition table turns `aten.scaled_dot_product_attention` into matmuls and softmax,
  which would leave nothing to fuse; the table used here is the default one without SDPA, and for
  `output_type="torch"` SDPA is also declared backend-legal so the backend pipeline keeps it.
- torch-mlir's backend pipeline refuses every `torch.operator` (its ReduceOpVariants pass marks them all
  illegal, whatever `backend_legal_ops` says), so a module that already calls `jointattn::joint_attention`
  is imported raw and cleaned with the pipeline's own simplifications (canonicalize, the same decompositions,
  CSE) instead; the op comes out as `torch.operator "torch.jointattn.joint_attention"`.
- Open-ended slices come out with end = INT64_MAX; the fusion pass reads that as "to the end".
"""

from __future__ import annotations

import functools
import warnings
from typing import Literal

import torch

SDPA_OP = "aten.scaled_dot_product_attention"
# The backend pipeline without ReduceOpVariants (which rejects every torch.operator), for modules that call
# jointattn ops.
_OPERATOR_SAFE_PIPELINE = (
    "builtin.module(func.func(torch-match-quantized-custom-ops, canonicalize, "
    f"torch-decompose-complex-ops{{legal-ops={SDPA_OP}}}, canonicalize, cse))"
)


@functools.cache
def decomposition_table() -> dict:
    """torch-mlir's default decompositions, minus the one of scaled_dot_product_attention."""
    from torch_mlir.extras.fx_decomp_util import get_decomposition_table

    keep = {torch.ops.aten.scaled_dot_product_attention.default, torch.ops.aten.scaled_dot_product_attention}
    return {op: fn for op, fn in get_decomposition_table().items() if op not in keep}


def import_module(
    model: torch.nn.Module,
    *example_inputs: torch.Tensor,
    output_type: Literal["torch", "raw"] = "torch",
    func_name: str = "main",
) -> str:
    """torch-dialect MLIR of `model` called on `example_inputs` (shapes are specialized to them).

    Args:
        model: an `nn.Module` (a plain function can be wrapped in one); it is exported with `torch.export`.
        example_inputs: the tensors it is called with.
        output_type: "torch" (torch-mlir's backend form: value-semantic `!torch.vtensor`s, constants hoisted,
            complex ops decomposed, SDPA kept) or "raw" (the importer's direct output).
        func_name: name of the `func.func` to create.

    Returns:
        The module as MLIR text.
    """
    if output_type not in ("torch", "raw"):
        raise ValueError(f"import_module: output_type must be 'torch' or 'raw'; got {output_type!r}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"import_module: model must be a torch.nn.Module; got {type(model).__name__}")
    from torch_mlir import fx
    from torch_mlir.compiler_utils import run_pipeline_with_repro_report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pytree deprecations inside torch.export
        program = torch.export.export(model, tuple(example_inputs))
        calls_jointattn = _calls_jointattn(program)
        raw = output_type == "raw" or calls_jointattn
        module = fx.export_and_import(
            program,
            output_type="raw" if raw else "torch",
            decomposition_table=decomposition_table(),
            func_name=func_name,
            **({} if raw else {"backend_legal_ops": [SDPA_OP]}),
        )
    if output_type == "torch" and calls_jointattn:
        run_pipeline_with_repro_report(
            module, _OPERATOR_SAFE_PIPELINE, "Simplifying torch IR with jointattn ops"
        )
    return str(module)


def _calls_jointattn(program: torch.export.ExportedProgram) -> bool:
    return any(
        node.op == "call_function" and getattr(node.target, "namespace", None) == "jointattn"
        for node in program.graph.nodes
    )
