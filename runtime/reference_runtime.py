"""The "reference" runtime: exact plain-torch joint attention on any device (see `reference.py`).

`forward_into` / `backward_with` take the per-key bias explicitly: the runtime passes the one its valid lengths
give, and the masked op's exact path the one an arbitrary mask gives."""

from __future__ import annotations

from .reference import reference_backward, reference_forward


def forward_into(call, out, joint_out, lse, key_bias) -> None:
    o, jo, m = reference_forward(*call.tensors, call.scale, key_bias)
    out.copy_(o)
    joint_out.copy_(jo)
    lse.copy_(m)


def backward_with(call, grad_out, grad_joint_out, grad_lse, key_bias):
    grads = reference_backward(grad_out, grad_joint_out, grad_lse, *call.tensors, call.scale, key_bias)
    return tuple(g.to(t.dtype) for g, t in zip(grads, call.tensors))


class ReferenceRuntime:
    name = "reference"

    def unsupported(self, call) -> str | None:
        return None

    def forward(self, call, out, joint_out, lse) -> None:
        forward_into(call, out, joint_out, lse, call.key_bias())

    def backward(self, call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse):
        return backward_with(call, grad_out, grad_joint_out, grad_lse, call.key_bias())
