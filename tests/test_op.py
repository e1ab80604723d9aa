"""The `jointattn::joint_attention` op: numerics vs float64, autograd, opcheck, tracing, and bad input."""

import zlib

import pytest
import torch
from helpers import joint_inputs, rel_err, unfused_float64

import jointattn

# (b, nh, N, L, dh): N and L not multiples of 8/32/64, L = 1, N = 1.
SHAPES = [
    (1, 1, 1, 1, 8),
    (2, 3, 37, 1, 16),
    (2, 2, 130, 7, 24),
    (3, 1, 5, 19, 64),
]
SHAPE_IDS = ["n1l1", "l1", "n130l7", "n5l19"]


def _lengths(kind, b, size, seed):
    g = torch.Generator().manual_seed(seed)
    if kind == "none":
        return None
    if kind == "int":
        return max(0, size - 2)
    return torch.randint(0, size + 1, (b,), generator=g)  # per batch, 0 and full included


def run_forward(shape, dtype, pad_n, pad_l, seed):
    b, nh, n, l, dh = shape  # noqa: E741
    inputs = joint_inputs(b, nh, n, l, dh, dtype=dtype, seed=seed)
    ln, ll = _lengths(pad_n, b, n, seed + 1), _lengths(pad_l, b, l, seed + 2)
    out, joint_out, lse = jointattn.joint_attention(*inputs, logical_n=ln, logical_l=ll, runtime="reference")
    ref = unfused_float64(*inputs, logical_n=ln, logical_l=ll)
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    assert out.dtype == dtype and joint_out.dtype == dtype and lse.dtype == torch.float32
    assert (out.shape, joint_out.shape, lse.shape) == ((b, nh, n, dh), (b, nh, l, dh), (b, nh, n + l))
    assert rel_err(out, ref[0]) < tol
    assert rel_err(joint_out, ref[1]) < tol
    assert rel_err(lse, ref[2]) < max(tol, 1e-6)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=["f64", "f32", "bf16"])
@pytest.mark.parametrize(
    "pad_n,pad_l",
    [("none", "none"), ("int", "tensor"), ("tensor", "tensor"), ("tensor", "none")],
    ids=["nopad", "int-tensor", "both", "n-only"],
)
def test_forward_matches_float64(shape, dtype, pad_n, pad_l):
    # A seed fixed by the case (crc32, not hash(): string hashing changes between runs).
    run_forward(
        shape, dtype, pad_n, pad_l, seed=zlib.crc32(repr((shape, str(dtype), pad_n, pad_l)).encode()) % 1000
    )


def test_rows_without_any_valid_key_are_zero_with_lse_minus_inf():
    inputs = joint_inputs(2, 1, 4, 3, 8)
    out, joint_out, lse = jointattn.joint_attention(
        *inputs, logical_n=torch.tensor([0, 4]), logical_l=torch.tensor([0, 1])
    )
    assert torch.all(out[0] == 0) and torch.all(joint_out[0] == 0) and torch.all(lse[0] == float("-inf"))
    assert torch.isfinite(out[1]).all() and torch.isfinite(lse[1]).all()


def test_scale_and_layout():
    inputs = joint_inputs(2, 3, 11, 5, 16)
    out, joint_out, lse = jointattn.joint_attention(*inputs, scale=0.37)
    ref = unfused_float64(*inputs, scale=0.37)
    assert rel_err(out, ref[0]) < 1e-5 and rel_err(lse, ref[2]) < 1e-6
    # [b, S, nh, dh] memory: the transpose(1, 2).reshape(b, S, nh*dh) models apply next is a view.
    flat = out.transpose(1, 2).reshape(2, 11, 3 * 16)
    assert flat.data_ptr() == out.data_ptr() and joint_out.transpose(1, 2).is_contiguous()


@pytest.mark.parametrize("pad", [False, True], ids=["nopad", "pad"])
def test_backward_matches_float64_autograd(pad):
    b, nh, n, l, dh = 2, 2, 9, 6, 8  # noqa: E741
    ln = torch.tensor([9, 4]) if pad else None
    ll = torch.tensor([0, 5]) if pad else None
    inputs = joint_inputs(b, nh, n, l, dh, dtype=torch.float64, seed=3, requires_grad=True)
    out, joint_out, lse = jointattn.joint_attention(*inputs, logical_n=ln, logical_l=ll)
    g = torch.Generator().manual_seed(4)
    weights = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (out, joint_out, lse)]
    loss = sum(
        (t * w).nan_to_num(0.0, 0.0, 0.0).sum() for t, w in zip((out, joint_out, lse.double()), weights)
    )
    grads = torch.autograd.grad(loss, inputs)
    ref_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    ro, rj, rl = unfused_float64(*ref_inputs, logical_n=ln, logical_l=ll)
    ref_loss = sum((t * w).nan_to_num(0.0, 0.0, 0.0).sum() for t, w in zip((ro, rj, rl), weights))
    ref_grads = torch.autograd.grad(ref_loss, ref_inputs)
    for name, got, want in zip(("q", "k", "v", "joint_q", "joint_k", "joint_v"), grads, ref_grads):
        assert rel_err(got, want) < 1e-6, name


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"logical_n": torch.tensor([5, 13]), "logical_l": torch.tensor([0, 4]), "scale": 0.3}],
    ids=["plain", "padded"],
)
def test_opcheck(kwargs):
    inputs = joint_inputs(2, 3, 13, 4, 8, requires_grad=True)
    torch.library.opcheck(
        torch.ops.jointattn.joint_attention.default, inputs, {**kwargs, "runtime": "reference"}
    )


def test_compile_fullgraph_and_export_trace_through_the_op():
    inputs = joint_inputs(2, 2, 7, 3, 8)
    eager = jointattn.joint_attention(*inputs, logical_l=2)
    compiled = torch.compile(
        lambda *a: jointattn.joint_attention(*a, logical_l=2), fullgraph=True, backend="eager"
    )(*inputs)
    for a, c in zip(eager, compiled):
        torch.testing.assert_close(a, c)

    class Block(torch.nn.Module):
        def forward(self, *a):
            return jointattn.joint_attention(*a, logical_n=torch.tensor([7, 5]))[:2]

    program = torch.export.export(Block(), inputs)
    targets = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert torch.ops.jointattn.joint_attention.default in targets
    torch.testing.assert_close(program.module()(*inputs)[0], Block()(*inputs)[0])


def _bad(**changes):
    q, k, v, jq, jk, jv = joint_inputs(2, 3, 5, 4, 8)
    args = dict(q=q, k=k, v=v, joint_q=jq, joint_k=jk, joint_v=jv)
    kwargs = {}
    for key, value in changes.items():
        (args if key in args else kwargs)[key] = value
    return lambda: jointattn.joint_attention(*args.values(), **kwargs)


@pytest.mark.parametrize(
    "call,error,message",
    [
        (_bad(q=torch.randn(2, 5, 8)), ValueError, r"q must be a 4-D tensor \[b, nh, N, dh\]"),
        (_bad(k=torch.randn(2, 3, 6, 8)), ValueError, r"k must have shape \[b=2, nh=3, N=5, dh=8\]"),
        (
            _bad(joint_v=torch.randn(2, 3, 4, 16)),
            ValueError,
            r"joint_v must have shape \[b=2, nh=3, L=4, dh=8\]",
        ),
        (_bad(joint_k=torch.randn(2, 2, 4, 8)), ValueError, r"joint_k must have shape"),
        (
            _bad(v=torch.randn(2, 3, 5, 8, dtype=torch.float64)),
            TypeError,
            r"v must have dtype torch.float32 like q",
        ),
        (
            _bad(joint_q=torch.randn(2, 3, 4, 8, device="meta")),
            ValueError,
            r"joint_q must be on device cpu like q",
        ),
        (_bad(q=torch.randint(0, 3, (2, 3, 5, 8))), TypeError, r"q must have a floating dtype"),
        (_bad(k="k"), TypeError, r"k must be a torch.Tensor"),
        (_bad(logical_n=6), ValueError, r"logical_n must be None, an int in \[0, N=5\]"),
        (
            _bad(logical_l=torch.tensor([1, 5])),
            ValueError,
            r"every entry of logical_l must lie in \[0, L=4\]",
        ),
        (_bad(logical_l=torch.tensor([1, 2, 3])), ValueError, r"logical_l must be .* shape \[b=2\]"),
        (_bad(logical_n=torch.tensor([1.0, 2.0])), TypeError, r"logical_n must be .*got dtype torch.float32"),
        (_bad(joint_strategy="front"), ValueError, r"joint_strategy must be one of \('rear',\)"),
        (
            _bad(runtime="cuda"),
            ValueError,
            r"runtime must be one of \('auto', 'reference', 'triton', .*'ttnn'.*\); got 'cuda'",
        ),
        (_bad(scale="x"), TypeError, r"scale must be a float or None"),
    ],
    ids=[
        "rank",
        "k-len",
        "jv-dh",
        "jk-heads",
        "dtype",
        "device",
        "int-dtype",
        "not-tensor",
        "ln-range",
        "ll-range",
        "ll-shape",
        "ln-float",
        "strategy",
        "runtime",
        "scale",
    ],
)
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_explicit_runtime_that_cannot_run_says_why():
    inputs = joint_inputs(1, 1, 3, 2, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"runtime='ttnn' cannot run this call"):
        jointattn.joint_attention(*inputs, runtime="ttnn")


def test_auto_falls_back_to_the_exact_reference():
    from jointattn.runtime import forward_path
    from jointattn.runtime.call import JointCall

    inputs = joint_inputs(1, 1, 3, 2, 8, dtype=torch.float64)  # float64: no fast runtime takes it
    call = JointCall(*inputs, 0.5, None, None)
    assert forward_path("auto", call) == "reference"


def test_plain_eager_calls_skip_the_dispatcher_layers_but_compute_the_same():
    """Without autograd, tracing or anyone watching the dispatcher, the wrapper runs the op's implementation
    itself (host time); results equal the custom op's, and the profiler and fake tensors still see the op."""
    from jointattn.runtime.ops import joint as op
    from torch.profiler import ProfilerActivity, profile

    inputs = joint_inputs(2, 2, 9, 5, 16)
    lengths = torch.tensor([3, 5])
    assert op._plain_eager(inputs)
    fast = jointattn.joint_attention(*inputs, logical_l=lengths)
    slow = torch.ops.jointattn.joint_attention(*inputs, "rear", None, None, lengths, "auto")
    for a, b in zip(fast, slow):
        assert torch.equal(a, b)
    assert not op._plain_eager([t.requires_grad_() for t in joint_inputs(1, 1, 3, 2, 8)])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        assert not op._plain_eager(inputs)
        jointattn.joint_attention(*inputs)
    assert sum(e.name == "jointattn::joint_attention" for e in prof.events()) >= 1
    with torch._subclasses.fake_tensor.FakeTensorMode():
        fake = [torch.empty(t.shape) for t in inputs]
        assert not op._plain_eager(fake)
        assert jointattn.joint_attention(*fake)[0].shape == inputs[0].shape


def test_a_lengths_tensor_is_range_checked_once_per_version_and_limit(monkeypatch):
    """A model passes one lengths tensor to every layer and step: it is checked once (each check costs a host
    sync or device launches), again after an in-place write, and against each limit it is used with."""
    from jointattn.runtime import validation

    inputs = joint_inputs(2, 1, 5, 4, 8)
    lengths = torch.tensor([1, 3])
    checks = []
    real_min = torch.Tensor.min
    monkeypatch.setattr(torch.Tensor, "min", lambda self, *a: checks.append(1) or real_min(self, *a))
    for _ in range(3):
        jointattn.joint_attention(*inputs, logical_l=lengths, runtime="reference")
    assert len(checks) == 1
    lengths[1] = 5  # in place: checked again, and now out of range
    with pytest.raises(ValueError, match=r"every entry of logical_l must lie in \[0, L=4\]"):
        jointattn.joint_attention(*inputs, logical_l=lengths, runtime="reference")
    lengths[1] = 4
    jointattn.joint_attention(*inputs, logical_l=lengths, runtime="reference")
    with pytest.raises(ValueError, match=r"every entry of logical_n must lie in \[0, N=2\]"):
        validation.check_length_values("logical_n", lengths, 2, "N")  # another limit: checked again


def test_int_lengths_become_one_tensor_per_value_that_nobody_writes():
    from jointattn.runtime.validation import as_length_tensor

    a, b = as_length_tensor(3, 2, 5, "cpu"), as_length_tensor(3, 2, 5, "cpu")
    assert a is b and a.tolist() == [3, 3] and as_length_tensor(5, 2, 5, "cpu") is None
    a.fill_(1)  # a caller that wrote it anyway gets a fresh one next time
    assert as_length_tensor(3, 2, 5, "cpu").tolist() == [3, 3]


def test_an_eager_backward_returns_the_runtimes_gradients_uncopied(monkeypatch):
    """Eager autograd calls the runtime's backward itself: the sdpa path's gradients arrive as slices of its
    joined gradients (no six layout copies); the backward op, with the copies, still runs where someone
    watches (the profiler here), and both give the same numbers."""
    from torch.profiler import ProfilerActivity, profile

    monkeypatch.setenv("JOINTATTN_DISPATCH", "forward=reference,backward=sdpa")
    inputs = joint_inputs(2, 2, 9, 5, 16, requires_grad=True, seed=7)
    g = torch.Generator().manual_seed(8)
    g_out, g_joint = torch.randn(2, 2, 9, 16, generator=g), torch.randn(2, 2, 5, 16, generator=g)

    def grads():
        out, joint_out, _ = jointattn.joint_attention(*inputs)
        return torch.autograd.grad((out, joint_out), inputs, (g_out, g_joint))

    plain = grads()
    # dq and djq: slices of one tensor.
    assert plain[0].untyped_storage().data_ptr() == plain[3].untyped_storage().data_ptr()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        watched = grads()
    assert sum(e.name == "jointattn::joint_attention_backward" for e in prof.events()) >= 1
    assert watched[0].untyped_storage().data_ptr() != watched[3].untyped_storage().data_ptr()
    for a, b in zip(plain, watched):
        assert torch.equal(a, b)
    doubles = [t.detach().double().requires_grad_() for t in inputs]
    o, jo, _ = unfused_float64(*doubles)
    for a, w in zip(plain, torch.autograd.grad((o, jo), doubles, (g_out.double(), g_joint.double()))):
        assert rel_err(a, w) < 1e-5
