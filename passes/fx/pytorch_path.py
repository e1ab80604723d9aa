"""Leave a joint attention to the original graph when the op would only run PyTorch's SDPA anyway.

At small sizes the dispatcher (`runtime/dispatch.py`) measures cat -> SDPA -> slice ("sdpa") as the fastest path.
The op then runs that same computation plus its own per-call host work (checks, outputs, the custom-op
layers; measured in `benchmarks/NOTES-dispatch.md`), so fusing would only make the call slower.
Inductor runs the original graph without that overhead, so the pass keeps it and says why.

Only under runtime="auto" on a GPU the table measured, with static sizes and no padding: a runtime the user
named is theirs, with no measurement there is nothing to prove the PyTorch path faster, and a padded original
graph (a key mask, or Mochi's gather of the valid rows) is not what the op's sdpa path runs.
"""

from __future__ import annotations

import torch

from ...runtime.dispatch import choose, describe_meta
from .nodes import tensor_val


def left_to_pytorch(tensors, padded: bool, runtime: str) -> str | None:
    """Why the fusion of the six token-set nodes (q, k, v, joint_q, joint_k, joint_v) is left undone, or None.

    Both passes the call will run (the backward where any input requires grad) must pick "sdpa"."""
    if runtime != "auto" or padded:  # a padded original graph is not the sdpa path's unpad -> SDPA -> pad
        return None
    values = [tensor_val(t) for t in tensors]
    if any(v is None for v in values):
        return None
    q, joint_q = values[0], values[3]
    if not all(isinstance(s, int) for s in (*q.shape, *joint_q.shape)):
        return None  # dynamic sizes: a size-specific choice would not hold for the next shape
    passes = [False, True] if any(v.requires_grad for v in values) else [False]
    problems = [_problem(q, joint_q, padded, backward) for backward in passes]
    if None in problems:
        return None
    try:
        choices = [choose(p) for p in problems]
    except ValueError:
        return None  # JOINTATTN_DISPATCH forces a path that cannot run the call: the op says so when called
    if any(c.path != "sdpa" or not c.reason.startswith("fastest measured") for c in choices):
        return None
    said = "; ".join(f"{'backward' if b else 'forward'}: {c.reason}" for b, c in zip(passes, choices))
    return (
        "left to PyTorch: the dispatcher would run this call as cat -> SDPA -> slice, which the original "
        f"graph already is, without the op's per-call host work ({said})"
    )


def _problem(q, joint_q, padded: bool, backward: bool):
    """The dispatcher's problem for a CUDA call (None elsewhere: no GPU table applies)."""
    if q.device.type != "cuda" or not torch.cuda.is_available():
        return None
    return describe_meta(q, joint_q, padded, backward=backward)
