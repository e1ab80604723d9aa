"""Runtimes of the `joint_attention` op: a name -> lazily imported implementation table.

A runtime is an object with `name`, `unsupported(call) -> str | None` (None when it can run the call, else
the reason it cannot), `forward(call, out, joint_out, lse)` writing into outputs the op allocated, and
`backward(call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse) -> six gradients`.

"auto" asks the dispatcher (`dispatch.py`) for the fastest exact path of each pass (`auto_runtime.py`); the
reference supports everything, so "auto" never fails and never gives a wrong answer. An explicitly named
runtime that cannot run the call raises instead of silently running something else.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Protocol

import torch

from .reference import key_bias_from_lengths
from .validation import JointShape

# name -> "module:attribute" of a zero-argument factory, imported on first use.
_RUNTIMES = {
    "reference": "jointattn.runtime.reference_runtime:ReferenceRuntime",
    "triton": "jointattn.runtime.triton_runtime:TritonRuntime",
    "sdpa": "jointattn.runtime.sdpa_runtime:SdpaRuntime",
    "ttnn": "jointattn.runtime.ttnn_runtime:TtnnRuntime",
    "ttlang": "jointattn.runtime.ttlang_runtime:TtlangRuntime",
}
RUNTIME_NAMES = ("auto", *_RUNTIMES)


@dataclass(frozen=True)
class JointCall:
    """One call's inputs after validation: six tensors, a resolved scale and per-batch valid lengths."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    joint_q: torch.Tensor
    joint_k: torch.Tensor
    joint_v: torch.Tensor
    scale: float
    logical_n: torch.Tensor | None
    logical_l: torch.Tensor | None

    @property
    def shape(self) -> JointShape:
        b, nh, n, dh = self.q.shape
        return JointShape(b, nh, n, self.joint_q.shape[2], dh)

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.q, self.k, self.v, self.joint_q, self.joint_k, self.joint_v)

    def key_bias(self) -> torch.Tensor | None:
        s = self.shape
        return key_bias_from_lengths(self.logical_n, self.logical_l, s.b, s.n, s.l, self.q.device)


class Runtime(Protocol):
    name: str

    def unsupported(self, call: JointCall) -> str | None: ...

    def forward(self, call: JointCall, out, joint_out, lse) -> None: ...

    def backward(self, call: JointCall, out, joint_out, lse, grad_out, grad_joint_out, grad_lse): ...


class _Unavailable:
    """Stands in for a runtime whose module cannot be imported here; it supports nothing and says why."""

    def __init__(self, name: str, error: Exception):
        self.name = name
        self._reason = f"the {name} runtime cannot be imported here ({type(error).__name__}: {error})"

    def unsupported(self, call: JointCall) -> str | None:
        return self._reason

    def forward(self, *args):
        raise RuntimeError(self._reason)

    backward = forward


@functools.cache
def get_runtime(name: str) -> Runtime:
    module_name, attr = _RUNTIMES[name].split(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except ImportError as e:
        return _Unavailable(name, e)
    return factory()


def select_runtime(name: str, call: JointCall) -> Runtime:
    """The runtime that will run `call`: the named one (or an error saying why it cannot), or "auto", which picks
    a path per pass. ttnn and ttlang are never picked by "auto": they would move CPU tensors onto a Tenstorrent
    device behind the user's back."""
    if name == "auto":
        from .auto_runtime import AutoRuntime

        return AutoRuntime()
    runtime = get_runtime(name)
    reason = runtime.unsupported(call)
    if reason is not None:
        raise ValueError(f"joint_attention: runtime={name!r} cannot run this call: {reason}")
    return runtime


def forward_path(name: str, call: JointCall) -> str:
    """What runs the forward of `call` under runtime `name`: a dispatcher path for "auto", else the name."""
    if name != "auto":
        return select_runtime(name, call).name
    from .auto_runtime import forward_choice

    return forward_choice(call).path
