"""Leave a joint attention to the original graph when the op would only run PyTorch's SDPA anyway.

At small sizes the dispatcher (`runtime/dispatch.py`) measures cat -> SDPA -> slice ("sdpa") as the fastest path.
The op then runs that same computation plus its own per-call host work (checks, outputs, the custom-op
layers; measured in `benchmarks/NOTES-dispatch.md`), so fusing would only make the call slower.
Inductor runs the original graph without that overhead, so the pass keeps it and says why. A training graph
(an input requires grad) is judged over forward + backward (`dispatch.choose_training`): there the original
graph also wins where our forward is faster but the op's sdpa backward would join the token sets again.

Only under runtime="auto" on a GPU the table measured, with static sizes and no padding: a runtime the user
named is theirs, with no measurement there is nothing to prove the PyTorch path faster, and a padded original
graph (a key mask, or Mochi's gather of the valid rows) is not what the op's sdpa path runs.

In a compiled training graph, an unpadded attention whose backward the dispatcher would run on the sdpa path
stays too (`_sdpa_backward_in_training`): there the op gains only its forward, pays the joins again for
PyTorch's backward, and inductor's original graph joins for less than the eager graph the table measured. One
measurement: SD3.5-medium-like at 1024², batch 2, 24 such attentions, fused 0.935x inductor's step
(`benchmarks/results/training-1024-fused-sdpa-backward.json`, gradients as close to eager's as inductor's).
"""

from __future__ import annotations

import dataclasses

import torch

from ...runtime.dispatch import choose, choose_training, describe_meta
from .nodes import tensor_val


def left_to_pytorch(tensors, padded: bool, runtime: str) -> str | None:
    """Why the fusion of the six token-set nodes (q, k, v, joint_q, joint_k, joint_v) is left undone, or None.

    The forward must pick "sdpa"; where any input requires grad, forward + backward must (`choose_training`),
    by measurements either way."""
    if runtime != "auto" or padded:  # a padded original graph is not the sdpa path's unpad -> SDPA -> pad
        return None
    values = [tensor_val(t) for t in tensors]
    if any(v is None for v in values):
        return None
    q, joint_q = values[0], values[3]
    if not all(isinstance(s, int) for s in (*q.shape, *joint_q.shape)):
        return None  # dynamic sizes: a size-specific choice would not hold for the next shape
    problem = _problem(q, joint_q, padded)
    if problem is None:
        return None
    training = any(v.requires_grad for v in values)
    try:
        # A training graph runs both passes: the choice over the step (`choose_training`), which also sees
        # that the op's sdpa backward joins the token sets again where the original graph kept its joins. No
        # op layers at run time here (AOTAutograd traces them away). Eager numbers still: inductor may join
        # for less than `torch.cat` does (benchmarks/NOTES-dispatch.md).
        choice = choose_training(problem, op_layers_ms=0.0) if training else choose(problem)
    except ValueError:
        return None  # JOINTATTN_DISPATCH forces a path that cannot run the call: the op says so when called
    if choice.path != "sdpa" or not choice.measured:
        return _sdpa_backward_in_training(problem) if training else None
    return (
        "left to PyTorch: the dispatcher would run this call as cat -> SDPA -> slice, which the original "
        f"graph already is, without the op's per-call host work ({'forward + backward' if training else 'forward'}"
        f": {choice.reason})"
    )


def _sdpa_backward_in_training(problem) -> str | None:
    """Why an unpadded training graph keeps its original attention where the op would run its backward on the
    sdpa path (see the module's docstring), or None."""
    try:
        backward = choose(dataclasses.replace(problem, backward=True))
    except ValueError:
        return None
    if backward.path != "sdpa" or not backward.measured:
        return None
    return (
        "left to PyTorch: a compiled training graph whose backward the dispatcher would run on the sdpa path: "
        "the op would gain only its forward and join the token sets again for PyTorch's backward, which the "
        f"original graph does for less (measured 0.935x inductor at SD3.5 1024²) (backward: {backward.reason})"
    )


def _problem(q, joint_q, padded: bool):
    """The dispatcher's problem for a CUDA call's forward (None elsewhere: no GPU table applies)."""
    if q.device.type != "cuda" or not torch.cuda.is_available():
        return None
    return describe_meta(q, joint_q, padded)
