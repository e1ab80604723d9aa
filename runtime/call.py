"""`JointCall`: one joint-attention call below the op's boundary, validated, as every runtime, launcher and
kernel wrapper takes it (instead of six tensors and their options spelled out in each signature)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .reference import key_bias_from_lengths
from .validation import JointShape, as_length_tensor


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

    @classmethod
    def of(
        cls, q, k, v, joint_q, joint_k, joint_v, scale: float, logical_n=None, logical_l=None
    ) -> JointCall:
        """A call from the launchers' arguments: valid lengths as ints, [b] tensors or None."""
        b, _, n, _ = q.shape
        l = joint_q.shape[2]  # noqa: E741
        return cls(
            q, k, v, joint_q, joint_k, joint_v, float(scale),
            as_length_tensor(logical_n, b, n, q.device), as_length_tensor(logical_l, b, l, q.device),
        )  # fmt: skip

    def rows(self, batch: slice) -> JointCall:
        """The same call on a slice of the batch (views, no copies)."""
        part = [t[batch] for t in self.tensors]
        lengths = [None if x is None else x[batch] for x in (self.logical_n, self.logical_l)]
        return JointCall(*part, self.scale, *lengths)

    def with_stand_ins(self) -> JointCall:
        """An empty token set's tensors replaced by the other set's: a kernel never reads them (their loops run
        zero times), but a launcher must not receive a pointer to nothing. `shape` then no longer holds the
        real N or L: read those before."""
        q, k, v, jq, jk, jv = self.tensors
        if q.shape[2] == 0:
            return replace(self, q=jq, k=jk, v=jv)
        if jq.shape[2] == 0:
            return replace(self, joint_q=q, joint_k=k, joint_v=v)
        return self

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
