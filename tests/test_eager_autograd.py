"""Eager calls that record autograd run our ops' own node without torch.library's autograd layer
(`runtime/ops/eager_autograd.py`): same implementation, setup_context and backward, so the same outputs and
gradients as the op bit for bit (lse's and double backward included), and torch.library's per-call refill of
default arguments is gone. Anyone watching (profiler, compile, fake tensors) still sees the op."""

from __future__ import annotations

import pytest
import torch
import torch._library.utils as library_utils
from helpers import joint_inputs
from jointattn.runtime.ops import sparse as sparse_ops
from jointattn.runtime.sparse_layout import spatial_layout
from jointattn.sparse import frame_window

import jointattn


def _leaves(seed=0, n=19, l=7):  # noqa: E741
    return [t.double().requires_grad_() for t in joint_inputs(2, 2, n, l, 16, seed=seed)]


def _dense_via_op(ts, **kw):
    return torch.ops.jointattn.joint_attention(
        *ts, "rear", None, kw.get("logical_n"), kw.get("logical_l"), "reference"
    )


def _grads(outputs, leaves, seed=1, create_graph=False):
    g = torch.Generator().manual_seed(seed)
    cotangents = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outputs]
    return torch.autograd.grad(outputs, leaves, cotangents, create_graph=create_graph)


def _fill_defaults_forbidden(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("torch.library's autograd layer ran")

    monkeypatch.setattr(library_utils, "fill_defaults", forbidden)


def test_dense_eager_node_equals_the_op_bit_for_bit_and_skips_torch_librarys_layer(monkeypatch):
    leaves = _leaves()
    lengths = dict(logical_n=torch.tensor([19, 11]), logical_l=torch.tensor([5, 7]))
    want = _dense_via_op(leaves, **lengths)
    want_grads = _grads(want, leaves)
    _fill_defaults_forbidden(monkeypatch)
    with pytest.raises(AssertionError, match="autograd layer ran"):
        _dense_via_op(leaves, **lengths)  # the op's own autograd path refills defaults: forbidden now
    got = jointattn.joint_attention(*leaves, runtime="reference", **lengths)
    assert type(got[0].grad_fn).__name__ == "JointAttentionBackward"
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    for a, b in zip(_grads(got, leaves), want_grads):  # lse's gradient included (all three outputs)
        assert torch.equal(a, b)


def test_dense_double_backward_through_the_eager_node():
    leaves = _leaves(seed=2)
    first = [_grads(f(leaves), leaves, create_graph=True) for f in (
        lambda ts: jointattn.joint_attention(*ts, runtime="reference"), _dense_via_op)]  # fmt: skip
    second = [torch.autograd.grad(sum(g.square().sum() for g in gs), leaves) for gs in first]
    for a, b in zip(*second):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_sparse_eager_node_equals_the_op_bit_for_bit(monkeypatch):
    leaves = _leaves(seed=3, n=40, l=6)
    layout = spatial_layout(frame_window(8, 1), 40)
    args = (*layout.tensors, layout.q_block, layout.kv_block, None, None, torch.tensor([6, 4]), "reference")
    want = torch.ops.jointattn.block_sparse_joint_attention(*leaves, *args)
    want_grads = _grads(want, leaves)
    _fill_defaults_forbidden(monkeypatch)

    def backward_op(*args):
        raise AssertionError("the backward op was dispatched")

    monkeypatch.setattr(
        sparse_ops, "block_sparse_joint_attention_backward", backward_op
    )  # eager: its body only
    got = jointattn.joint_attention(
        *leaves, block_mask=layout, logical_l=torch.tensor([6, 4]), runtime="reference"
    )
    assert type(got[0].grad_fn).__name__ == "BlockSparseJointAttentionBackward"
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    for a, b in zip(_grads(got, leaves), want_grads):
        assert torch.equal(a, b)


def test_whoever_watches_sees_the_op():
    from torch.profiler import ProfilerActivity, profile

    leaves = _leaves(seed=4)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = jointattn.joint_attention(*leaves, runtime="reference")[0]
    assert any(e.name == "jointattn::joint_attention" for e in prof.events())
    assert type(out.grad_fn).__name__ != "JointAttentionBackward"
    with torch.no_grad():  # nothing to record: the plain eager path, no node at all
        assert jointattn.joint_attention(*leaves, runtime="reference")[0].grad_fn is None
    traced = []

    def backend(gm, example_inputs):  # what dynamo captured: the op, not the eager node's implementation
        traced.extend(node.target for node in gm.graph.nodes if node.op == "call_function")
        return gm.forward

    compiled = torch.compile(
        lambda *ts: jointattn.joint_attention(*ts, runtime="reference")[0], backend=backend
    )
    torch.testing.assert_close(compiled(*leaves), jointattn.joint_attention(*leaves, runtime="reference")[0])
    assert (
        torch.ops.jointattn.joint_attention.default in traced or torch.ops.jointattn.joint_attention in traced
    )
