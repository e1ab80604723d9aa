"""The "auto" runtime: each pass of each call on the path the dispatcher picks (`dispatch.py`).

The forward and the backward are chosen separately (the backward may run another implementation than the
forward did: every path's forward leaves the same out, joint_out and natural-log lse, and every backward reads
only those), so a call gets the fastest exact path for each.
"""

from __future__ import annotations

from .dispatch import Choice, choose, describe


def forward_choice(call) -> Choice:
    return choose(describe(call))


def backward_choice(call, grad_lse) -> Choice:
    return choose(describe(call, backward=True, grad_lse=grad_lse))


def run_forward(path: str, call, out, joint_out, lse) -> None:
    """The forward of `call` on `path` ("hopper", "triton", "sdpa" or "reference"), into the op's outputs."""
    if path in ("hopper", "triton"):
        from .triton_runtime import launch_forward

        launch_forward(call, out, joint_out, lse, hopper=path == "hopper")
        return
    from .registry import get_runtime

    get_runtime(path).forward(call, out, joint_out, lse)


def run_backward(path: str, call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse):
    """The backward of `call` on `path`; the six gradients."""
    if path in ("hopper", "triton"):
        from .triton_runtime import launch_backward

        return launch_backward(
            call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse, hopper=path == "hopper"
        )
    from .registry import get_runtime

    return get_runtime(path).backward(call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse)


class AutoRuntime:
    name = "auto"

    def unsupported(self, call) -> str | None:
        return None  # the reference runs every call

    def forward(self, call, out, joint_out, lse) -> None:
        run_forward(forward_choice(call).path, call, out, joint_out, lse)

    def backward(self, call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse):
        path = backward_choice(call, grad_lse).path
        return run_backward(path, call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse)
