"""Eager calls of our ops with autograd recording, without torch.library's autograd layer.

Why: torch.library's generated autograd node refills the op's default arguments from its schema on every
forward (`torch._library.utils.fill_defaults`, which rebuilds the schema's argument list once per argument):
24 µs per call of `jointattn::joint_attention` (11 arguments) and 59 µs of
`jointattn::block_sparse_joint_attention` (18) on this project's development CPU, several times that on an
H200's host, before any work. An eager call that records autograd runs the same implementation, setup_context and
backward as the registered formula, in a `torch.autograd.Function` of its own, with every argument given.

Its backward likewise skips the backward op's dispatch (`plain_and_unwatched`): the dense op's calls its runtime,
the sparse op's the backward op's implementation. Only where nobody must see the op as one op (`contract.op_is_watched`: compiling, tracing, profiling, dispatch or
torch-function modes, torch.func transforms) and for plain tensors; everything else calls the op.
"""

from __future__ import annotations

import torch

from .contract import op_is_watched


def eager_autograd(name: str, implementation, setup_context, backward):
    """`apply(*args)`: `implementation(*args)` recorded by autograd with the op's own `setup_context(ctx, args,
    output)` and `backward(ctx, *grads)`; `args` are all of the op's arguments, in its schema's order. Its node is
    `{name}Backward` in `grad_fn`."""

    def forward(ctx, *args):
        output = implementation(*args)
        setup_context(ctx, args, output)
        return output

    node = type(
        name,
        (torch.autograd.Function,),
        {"forward": staticmethod(forward), "backward": staticmethod(backward)},
    )
    return node.apply


def takes_eager_autograd(tensors) -> bool:
    """Whether an eager call that records autograd can take `eager_autograd`'s node: grad mode on, one of the
    tensors requiring a gradient, plain tensors, nobody watching."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors) and plain_and_unwatched(tensors)


def plain_and_unwatched(tensors) -> bool:
    """Plain tensors (no subclass) and nobody who must see the ops as ops (`contract.op_is_watched`): an eager
    call may run an op's implementation directly (a backward: the backward op's)."""
    return all(type(t) is torch.Tensor for t in tensors) and not op_is_watched()
