"""The contract every op of `jointattn.runtime.ops` shares: argument checks, the validated call, and outputs laid
out as the fake kernels promise them.

`check_call` runs at trace time too (the fake kernels call it); `make_call` adds the device-side length checks
and the resolved scale; `empty_outputs` allocates out [b, N, nh, dh] / joint_out [b, L, nh, dh] memory (seen as
[b, nh, S, dh]) and lse [b, nh, N+L] float32; `outputs_like_inputs` makes a runtime's gradients what the
backward's fake kernel says they are.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ..call import JointCall
from ..registry import RUNTIME_NAMES
from ..validation import JointShape, assert_lengths_async, check_length_arg, check_options, check_tensors


def check_call(q, k, v, joint_q, joint_k, joint_v, joint_strategy, scale, logical_n, logical_l, runtime):
    shape = check_tensors(q, k, v, joint_q, joint_k, joint_v)
    check_options(joint_strategy, scale, runtime, RUNTIME_NAMES)
    check_length_arg("logical_n", logical_n, shape, q.device)
    check_length_arg("logical_l", logical_l, shape, q.device)
    return shape


def make_call(q, k, v, joint_q, joint_k, joint_v, joint_strategy, scale, logical_n, logical_l, runtime):
    check_call(q, k, v, joint_q, joint_k, joint_v, joint_strategy, scale, logical_n, logical_l, runtime)
    return checked_call((q, k, v, joint_q, joint_k, joint_v), scale, logical_n, logical_l)


def checked_call(tensors, scale, logical_n, logical_l) -> JointCall:
    """The call of arguments that passed `check_call` (length tensors or None): the lengths' range assertions
    (cached per tensor version) and the resolved scale, without checking the tensors again (eager calls checked
    them on entry)."""
    q, joint_q = tensors[0], tensors[3]
    assert_lengths_async("logical_n", logical_n, q.shape[2])
    assert_lengths_async("logical_l", logical_l, joint_q.shape[2])
    resolved = float(scale) if scale is not None else q.shape[3] ** -0.5
    return JointCall(*tensors, resolved, logical_n, logical_l)


def empty_outputs(q: Tensor, joint_q: Tensor):
    """Outputs as the op lays them out, for code that launches a runtime itself (the MLIR emitter)."""
    b, nh, n, dh = q.shape
    return empty_outputs_of(q, JointShape(b, nh, n, joint_q.shape[2], dh))


def empty_outputs_of(q: Tensor, shape: JointShape):
    """Outputs in [b, S, nh, dh] memory order, viewed as [b, nh, S, dh]; lse [b, nh, N+L] float32."""
    b, nh, n, l, dh = shape.b, shape.nh, shape.n, shape.l, shape.dh  # noqa: E741
    out = q.new_empty((b, n, nh, dh)).transpose(1, 2)
    joint_out = q.new_empty((b, l, nh, dh)).transpose(1, 2)
    lse = q.new_empty((b, nh, n + l), dtype=torch.float32)
    return out, joint_out, lse


def outputs_like_inputs(inputs, grads):
    """Gradients as the fake kernel promises them: dtype and strides of the inputs, no two sharing memory.

    A runtime that already returns such tensors (the Triton backward does) is passed through uncopied."""
    result, storages = [], set()
    for t, g in zip(inputs, grads):
        storage = g.untyped_storage().data_ptr()
        if g.dtype != t.dtype or g.stride() != t.stride() or g.shape != t.shape or storage in storages:
            g = torch.empty_like(t).copy_(g)
            storage = g.untyped_storage().data_ptr()
        storages.add(storage)
        result.append(g)
    return tuple(result)


def op_is_watched() -> bool:
    """Whether something must see the ops as ops, so that an eager call may not run their implementation
    directly: the compiler, the profiler, a dispatch or torch-function mode (fake tensors, tracing), or a
    torch.func transform (whose wrapped tensors pass for plain ones)."""
    return (
        torch.compiler.is_compiling()
        or torch.autograd.profiler._is_profiler_enabled
        or _get_current_dispatch_mode() is not None
        or torch._C._is_torch_function_mode_enabled()
        or torch._C._functorch.peek_interpreter_stack() is not None
    )
