"""The "reference" runtime: exact plain-torch joint attention on any device (see `reference.py`)."""

from __future__ import annotations

from .reference import reference_backward, reference_forward


class ReferenceRuntime:
    name = "reference"

    def unsupported(self, call) -> str | None:
        return None

    def forward(self, call, out, joint_out, lse) -> None:
        o, jo, m = reference_forward(*call.tensors, call.scale, call.key_bias())
        out.copy_(o)
        joint_out.copy_(jo)
        lse.copy_(m)

    def backward(self, call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse):
        grads = reference_backward(
            grad_out, grad_joint_out, grad_lse, *call.tensors, call.scale, call.key_bias()
        )
        return tuple(g.to(t.dtype) for g, t in zip(grads, call.tensors))
