"""The sdpa path on padded calls (`runtime/sdpa_runtime.py`): unpad -> SDPA -> pad, the valid keys cut out by
lengths read on the host once per lengths tensor and version. Checked against the float64 masked unfused graph:
outputs, lse and the six gradients with padding on both sets, lengths that differ per batch entry (one SDPA per
run of equal lengths), a batch entry without keys, padded rows holding NaN/inf, after any forward; the host read
is cached and re-read after an in-place write; and a CUDA graph capture is never asked to read lengths."""

import pytest
import torch
from helpers import joint_inputs, rel_err, unfused_float64, with_padding_poisoned
from jointattn.runtime import dispatch, sdpa_runtime
from jointattn.runtime.validation import as_length_tensor, host_lengths

import jointattn

CASES = [
    # b, nh, n, l, dh, logical_n, logical_l
    (2, 3, 13, 7, 16, None, [3, 7]),  # text padded, lengths differ per batch entry
    (3, 2, 11, 5, 8, [11, 4, 9], [2, 2, 5]),  # both sets padded, three runs
    (3, 2, 9, 6, 16, [0, 9, 9], [0, 3, 3]),  # a batch entry without keys, then a run of two
    (2, 1, 17, 9, 24, None, 4),  # an int: uniform, no device read
    (1, 2, 0, 9, 16, None, [5]),  # no spatial tokens
]


def _lengths(value):
    return torch.tensor(value) if isinstance(value, list) else value


def _poisoned(inputs, ln, ll):
    """Padded keys and values hold NaN/inf; padded query rows are computed (the op's contract), so kept."""
    return [t if i in (0, 3) else with_padding_poisoned(t, ln if i < 3 else ll) for i, t in enumerate(inputs)]


@pytest.mark.parametrize("forward", ["sdpa", "reference"])
@pytest.mark.parametrize("b,nh,n,l,dh,logical_n,logical_l", CASES)
def test_padded_calls_match_float64(monkeypatch, forward, b, nh, n, l, dh, logical_n, logical_l):  # noqa: E741
    """Either forward, then the sdpa backward: it reads out and lse whichever path wrote them."""
    monkeypatch.setenv(dispatch.DISPATCH_ENV, f"forward={forward},backward=sdpa")
    ln, ll = _lengths(logical_n), _lengths(logical_l)
    inputs = [t.requires_grad_() for t in _poisoned(joint_inputs(b, nh, n, l, dh, seed=n + l), ln, ll)]
    out, joint_out, lse = jointattn.joint_attention(*inputs, logical_n=ln, logical_l=ll, scale=0.4)
    clean = [t.detach().nan_to_num(0.0, 0.0, 0.0).double().requires_grad_() for t in inputs]
    ref = unfused_float64(*clean, logical_n=ln, logical_l=ll, scale=0.4)
    for got, want in zip((out, joint_out, lse), ref):
        assert rel_err(got, want) < 1e-5
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(r.shape, generator=g, dtype=torch.float64) for r in ref[:2]]
    grads = torch.autograd.grad((out, joint_out), inputs, [w.float() for w in weights])
    want = torch.autograd.grad(ref[:2], clean, weights)
    for got, expected in zip(grads, want):
        assert torch.isfinite(got).all()  # padded keys get zero gradients, never the NaN they hold
        assert rel_err(got, expected) < 1e-5


def test_a_uniform_batch_runs_one_sdpa_and_differing_lengths_one_per_run(monkeypatch):
    calls = []
    real = sdpa_runtime.attention
    monkeypatch.setattr(sdpa_runtime, "attention", lambda *a: calls.append(a[1].shape) or real(*a))
    monkeypatch.setenv(dispatch.DISPATCH_ENV, "sdpa")
    inputs = joint_inputs(4, 2, 10, 6, 8)
    jointattn.joint_attention(*inputs, logical_l=torch.tensor([3, 3, 3, 3]))
    assert calls == [(4, 2, 13, 8)]  # every query row, the 13 valid keys
    calls.clear()
    jointattn.joint_attention(*inputs, logical_l=torch.tensor([3, 3, 6, 1]))
    assert calls == [(2, 2, 13, 8), (1, 2, 16, 8), (1, 2, 11, 8)]


def test_the_host_reads_the_lengths_once_per_version():
    lengths = torch.tensor([3, 5])
    assert host_lengths(lengths) == (3, 5)
    stamp = lengths._jointattn_host_lengths
    assert host_lengths(lengths) == (3, 5) and lengths._jointattn_host_lengths is stamp
    lengths[1] = 2  # an in-place write bumps the version: read again
    assert host_lengths(lengths) == (3, 2)
    made = as_length_tensor(4, 3, 9, "cpu")
    assert made._jointattn_host_lengths[2] == (4, 4, 4)  # an int length is known without a device read


def test_inference_tensors_are_read_every_time(monkeypatch):
    """Tensors made under inference_mode track no version, so a stamp could go stale: read each call."""
    with torch.inference_mode():
        lengths = torch.tensor([3, 5])
        assert host_lengths(lengths) == (3, 5)
        lengths[0] = 1
        assert host_lengths(lengths) == (1, 5)
        monkeypatch.setenv(dispatch.DISPATCH_ENV, "sdpa")
        inputs = joint_inputs(2, 2, 8, 6, 8, seed=6)
        out = jointattn.joint_attention(*inputs, logical_l=lengths)
    ref = unfused_float64(*inputs, logical_l=torch.tensor([1, 5]))
    assert rel_err(out[0], ref[0]) < 1e-5 and rel_err(out[2], ref[2]) < 1e-5


def test_a_write_to_the_lengths_between_calls_is_seen(monkeypatch):
    monkeypatch.setenv(dispatch.DISPATCH_ENV, "sdpa")
    inputs = joint_inputs(2, 2, 8, 6, 8, seed=5)
    lengths = torch.tensor([6, 6])
    jointattn.joint_attention(*inputs, logical_l=lengths)
    lengths.fill_(2)
    out = jointattn.joint_attention(*inputs, logical_l=lengths)
    ref = unfused_float64(*inputs, logical_l=torch.tensor([2, 2]))
    assert rel_err(out[0], ref[0]) < 1e-5 and rel_err(out[2], ref[2]) < 1e-5


@pytest.mark.parametrize("logical_n,logical_l", [(None, 3), (torch.tensor([6, 6]), torch.tensor([2, 2]))])
def test_the_eager_shortcut_cuts_lengths_the_batch_shares(monkeypatch, logical_n, logical_l):
    """Plain eager calls with one pair of lengths for the batch run unpad -> SDPA -> pad under PyTorch's
    autograd (`runtime/ops/eager_sdpa.py`): outputs, lse and every gradient, through lse too, against float64."""
    monkeypatch.setenv(dispatch.DISPATCH_ENV, "sdpa")
    inputs = [
        t.requires_grad_() for t in _poisoned(joint_inputs(2, 2, 9, 5, 16, seed=7), logical_n, logical_l)
    ]
    out, joint_out, lse = jointattn.joint_attention(*inputs, logical_n=logical_n, logical_l=logical_l)
    assert out.untyped_storage().data_ptr() == joint_out.untyped_storage().data_ptr()  # the shortcut ran
    clean = [t.detach().nan_to_num(0.0, 0.0, 0.0).double().requires_grad_() for t in inputs]
    ref = unfused_float64(*clean, logical_n=logical_n, logical_l=logical_l)
    for got, want in zip((out, joint_out, lse), ref):
        assert rel_err(got, want) < 1e-5
    weights = [
        torch.randn(r.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
        for i, r in enumerate(ref)
    ]
    grads = torch.autograd.grad((out, joint_out, lse), inputs, [w.float() for w in weights])
    want = torch.autograd.grad(ref, clean, weights)
    for got, expected in zip(grads, want):
        assert torch.isfinite(got).all() and rel_err(got, expected) < 1e-5


def test_a_gradient_through_lse_is_not_the_sdpa_paths(monkeypatch):
    """The op's sdpa backward takes none (lengths that differ across the batch keep the call on the op)."""
    monkeypatch.setenv(dispatch.DISPATCH_ENV, "forward=sdpa,backward=sdpa")
    inputs = joint_inputs(2, 2, 8, 4, 8, requires_grad=True)
    _, _, lse = jointattn.joint_attention(*inputs, logical_l=torch.tensor([2, 3]))
    with pytest.raises(ValueError, match="gradient through lse"):
        lse.sum().backward()


@pytest.mark.gpu
@pytest.mark.parametrize("dh", [64, 128])
@pytest.mark.parametrize("forward", ["hopper", "sdpa"])
@pytest.mark.parametrize("backward", ["hopper", "sdpa"])
def test_on_the_gpu_bf16_padded_pairs_match_float64(monkeypatch, forward, backward, dh):
    """cuDNN (or PyTorch's choice) over the valid keys, after either forward, per-batch lengths on both sets."""
    monkeypatch.setenv(dispatch.DISPATCH_ENV, f"forward={forward},backward={backward}")
    ln, ll = torch.tensor([333, 200], device="cuda"), torch.tensor([31, 77], device="cuda")
    cpu = joint_inputs(2, 3, 333, 77, dh, seed=dh)
    poisoned = _poisoned(cpu, ln.cpu(), ll.cpu())
    inputs = [
        t.to("cuda", torch.bfloat16).transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
        for t in poisoned
    ]
    out, joint_out, lse = jointattn.joint_attention(*inputs, logical_n=ln, logical_l=ll)
    clean = [t.detach().nan_to_num(0.0, 0.0, 0.0).double().requires_grad_() for t in inputs]
    ref = unfused_float64(*clean, logical_n=ln, logical_l=ll)
    assert rel_err(out, ref[0]) < 2e-2 and rel_err(joint_out, ref[1]) < 2e-2 and rel_err(lse, ref[2]) < 1e-3
    weights = [torch.randn_like(r) for r in ref[:2]]
    grads = torch.autograd.grad((out, joint_out), inputs, [w.bfloat16() for w in weights])
    want = torch.autograd.grad(ref[:2], clean, weights)
    for got, expected in zip(grads, want):
        assert torch.isfinite(got).all() and rel_err(got, expected) < 3e-2


@pytest.mark.gpu
def test_on_the_gpu_a_cuda_graph_capture_takes_a_kernel_not_a_host_read():
    """Under `auto` a padded call the dispatcher sends to the sdpa path outside a capture (through the eager
    shortcut here) runs a kernel inside one (no host read there; the lengths could change between replays), and
    the replay computes the same function."""
    inputs = [t.to("cuda", torch.bfloat16) for t in joint_inputs(1, 4, 256, 64, 128, seed=2)]
    lengths = torch.tensor([40], device="cuda")
    problem = dispatch.describe_tensors(inputs, 128**-0.5, True)
    assert not problem.capturing
    eager = jointattn.joint_attention(*inputs, logical_l=lengths)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        jointattn.joint_attention(*inputs, logical_l=lengths)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        assert dispatch.describe_tensors(inputs, 128**-0.5, True).capturing
        captured = jointattn.joint_attention(*inputs, logical_l=lengths)
    # the op's own outputs (the shortcut's two would be slices of one SDPA output)
    assert captured[0].untyped_storage().data_ptr() != captured[1].untyped_storage().data_ptr()
    graph.replay()
    torch.cuda.synchronize()
    for got, want in zip(captured, eager):
        assert rel_err(got, want) < 2e-2
