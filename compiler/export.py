"""`jointattn.export(model, args, kwargs)`: torch.export with joint attention fused.

Exports the model (ATen IR, SDPA kept whole), runs the same fusion pass on that graph, and exports the result
again. Returns a `FusedExport`: `.program` is an `ExportedProgram` that calls `jointattn::joint_attention` (save,
load, run or hand it to other tools like any exported program), `.report` says what was fused and why not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..passes.fx import FusionReport, fuse_joint_attention


@dataclass
class FusedExport:
    program: torch.export.ExportedProgram
    report: FusionReport


def export(
    model: torch.nn.Module, args: tuple = (), kwargs: dict | None = None, *, runtime: str = "auto"
) -> FusedExport:
    kwargs = kwargs or {}
    module = torch.export.export(model, args, kwargs).module()
    # An exported program is an artifact for other machines: it calls the op wherever the pass can fuse, not
    # only where this machine's GPU measured our kernels faster (the op's dispatcher decides where it runs).
    report = fuse_joint_attention(module, runtime=runtime, keep_pytorch_paths=False)
    return FusedExport(torch.export.export(module, args, kwargs), report)
