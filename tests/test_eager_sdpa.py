"""The eager SDPA shortcut (`runtime/ops/eager_sdpa.py`): plain eager calls the dispatcher sends to PyTorch's
SDPA run cat -> SDPA -> slice under PyTorch's autograd. Checked: the same function as the float64 unfused
graph (outputs, lse, the six gradients, the gradient through lse), bit-equal to the unfused graph's own SDPA
where both run one kernel, NaN as the unfused graph has it, the op's argument errors, and every case where the
op itself must run instead (padding that differs across the batch, another path, tracing, profiling, fake
tensors, a forced path). Padded calls that take it: `tests/test_sdpa_padded.py`."""

import os

import pytest
import torch
import torch.nn.functional as F
from helpers import joint_inputs, rel_err, unfused_float64
from jointattn.runtime import dispatch
from jointattn.runtime.ops import eager_sdpa
from jointattn.runtime.ops.contract import op_is_watched

import jointattn


@pytest.fixture
def sdpa_chosen(monkeypatch):
    """The dispatcher sends every pass to SDPA (on a GPU it does so for small calls by measurement)."""
    monkeypatch.setenv(dispatch.DISPATCH_ENV, "sdpa")


def _shortcut_ran(out, joint_out) -> bool:
    """The shortcut returns two slices of one SDPA output; the op allocates each output itself."""
    return out.untyped_storage().data_ptr() == joint_out.untyped_storage().data_ptr()


@pytest.mark.parametrize(
    "b,nh,n,l,dh", [(2, 3, 13, 5, 16), (1, 2, 7, 0, 8), (1, 1, 0, 9, 32), (3, 2, 33, 17, 24)]
)
def test_forward_matches_float64_and_the_unfused_graph_bit_for_bit(sdpa_chosen, b, nh, n, l, dh):  # noqa: E741
    inputs = joint_inputs(b, nh, n, l, dh, seed=n + l)
    out, joint_out, lse = jointattn.joint_attention(*inputs, scale=0.3)
    if n and l:
        assert _shortcut_ran(out, joint_out)
    ref = unfused_float64(*inputs, scale=0.3)
    assert rel_err(out, ref[0]) < 1e-5 and rel_err(joint_out, ref[1]) < 1e-5 and rel_err(lse, ref[2]) < 1e-5
    assert lse.dtype == torch.float32 and lse.shape == (b, nh, n + l)
    joined = F.scaled_dot_product_attention(
        *(torch.cat([a, c], 2) for a, c in zip(inputs[:3], inputs[3:])), scale=0.3
    )
    assert torch.equal(out, joined[:, :, :n]) and torch.equal(joint_out, joined[:, :, n:])


def test_gradients_of_all_six_inputs_and_through_lse_match_float64(sdpa_chosen):
    inputs = joint_inputs(2, 2, 11, 6, 16, requires_grad=True, seed=3)
    g = torch.Generator().manual_seed(4)
    g_out, g_joint, g_lse = (torch.randn(2, 2, s, 16, generator=g) for s in (11, 6, 1))
    g_lse = torch.randn(2, 2, 17, generator=g)
    out, joint_out, lse = jointattn.joint_attention(*inputs)
    assert _shortcut_ran(out, joint_out)
    loss = (out * g_out).sum() + (joint_out * g_joint).sum() + (lse * g_lse).sum()
    got = torch.autograd.grad(loss, inputs)
    doubles = [t.detach().double().requires_grad_() for t in inputs]
    o, jo, ls = unfused_float64(*doubles)
    want_loss = (o * g_out.double()).sum() + (jo * g_joint.double()).sum() + (ls * g_lse.double()).sum()
    want = torch.autograd.grad(want_loss, doubles)
    for name, a, w in zip(("q", "k", "v", "joint_q", "joint_k", "joint_v"), got, want):
        assert rel_err(a, w) < 1e-5, name


@pytest.mark.parametrize("shortcut", [True, False])
def test_the_lse_gradient_alone_covers_all_six_inputs_on_either_path(sdpa_chosen, shortcut):
    """The values get zero gradients (lse does not depend on them) whether the shortcut or the op (here its
    reference runtime) ran the call: which one runs must not change what autograd returns."""
    inputs = joint_inputs(1, 2, 9, 4, 8, requires_grad=True, seed=5)
    out, joint_out, lse = jointattn.joint_attention(*inputs, runtime="auto" if shortcut else "reference")
    assert _shortcut_ran(out, joint_out) == shortcut
    got = torch.autograd.grad(lse.sum(), inputs)
    doubles = [t.detach().double().requires_grad_() for t in inputs]
    want = torch.autograd.grad(unfused_float64(*doubles)[2].sum(), doubles, allow_unused=True)
    for a, w in zip(got, want, strict=True):
        assert torch.count_nonzero(a) == 0 if w is None else rel_err(a, w) < 1e-5


def test_the_lse_gradient_reads_q_and_k_only(sdpa_chosen):
    """lse's gradient runs as SDPA(q, k, v=k) and its value gradient (`_lse_gradient`): a NaN value never reaches
    it, odd sizes and a scale other than 1/sqrt(dh) included."""
    inputs = list(joint_inputs(2, 3, 13, 7, 24, seed=8))
    inputs[2] = inputs[2].clone()
    inputs[2][1, 2, 5, 3] = float("nan")
    inputs = [t.requires_grad_() for t in inputs]
    weights = torch.randn(2, 3, 20, generator=torch.Generator().manual_seed(9))
    out, joint_out, lse = jointattn.joint_attention(*inputs, scale=0.3)
    assert _shortcut_ran(out, joint_out)
    got = torch.autograd.grad((lse * weights).sum(), [inputs[i] for i in (0, 1, 3, 4)])
    doubles = [t.detach().double().requires_grad_() for t in inputs]
    want_lse = unfused_float64(*doubles, scale=0.3)[2]
    want = torch.autograd.grad((want_lse * weights.double()).sum(), [doubles[i] for i in (0, 1, 3, 4)])
    for a, w in zip(got, want):
        assert torch.isfinite(a).all() and rel_err(a, w) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("size", [1.0, 1e-3, 1e-5])
def test_the_lse_gradient_keeps_half_precision_at_any_magnitude(sdpa_chosen, dtype, size):
    """The kernel's output gradient is in the inputs' dtype; small lse gradients (1e-5 is subnormal in fp16) are
    scaled by a power of two first, so dq and dk stay within twice what rounding float64's answer to the dtype
    costs (fp16 at 1e-5 without the scaling: 0.18 against that rounding's 0.075)."""
    inputs = [t.to(dtype).requires_grad_() for t in joint_inputs(1, 2, 150, 27, 32, seed=10)]
    weights = size * torch.randn(1, 2, 177, generator=torch.Generator().manual_seed(11))
    lse = jointattn.joint_attention(*inputs)[2]
    got = torch.autograd.grad((lse * weights).sum(), [inputs[i] for i in (0, 1, 3, 4)])
    doubles = [t.detach().double().requires_grad_() for t in inputs]
    want_lse = unfused_float64(*doubles)[2]
    want = torch.autograd.grad((want_lse * weights.double()).sum(), [doubles[i] for i in (0, 1, 3, 4)])
    for a, w in zip(got, want):
        assert rel_err(a, w) < 2 * rel_err(w.to(dtype), w) + 2e-3


def test_nan_reaches_what_it_reaches_in_the_unfused_graph(sdpa_chosen):
    inputs = list(joint_inputs(1, 2, 8, 5, 16, seed=6))
    inputs[5] = inputs[5].clone()
    inputs[5][0, 1, 2, 3] = float("nan")  # one text value: every row of head 1 reads it
    out, joint_out, lse = jointattn.joint_attention(*inputs)
    joined = F.scaled_dot_product_attention(*(torch.cat([a, c], 2) for a, c in zip(inputs[:3], inputs[3:])))
    assert torch.equal(torch.isnan(out), torch.isnan(joined[:, :, :8])) and torch.isnan(out[0, 1]).any()
    assert torch.isnan(out[0, 0]).sum() == 0 and torch.equal(
        joint_out.nan_to_num(7.0), joined[:, :, 8:].nan_to_num(7.0)
    )


def test_bad_arguments_raise_the_ops_errors(sdpa_chosen):
    q, k, v, jq, jk, jv = joint_inputs(1, 2, 8, 4, 16)
    with pytest.raises(ValueError, match="joint_attention: k must have shape"):
        jointattn.joint_attention(q, k[:, :, :5], v, jq, jk, jv)
    with pytest.raises(TypeError, match="joint_v must have dtype"):
        jointattn.joint_attention(q, k, v, jq, jk, jv.double())
    with pytest.raises(ValueError, match="scale must be finite"):
        jointattn.joint_attention(q, k, v, jq, jk, jv, scale=float("inf"))


def test_the_op_runs_where_the_shortcut_must_not(sdpa_chosen, monkeypatch):
    inputs = joint_inputs(1, 2, 8, 4, 16)
    assert _shortcut_ran(*jointattn.joint_attention(*inputs)[:2])
    all_valid = dict(logical_n=8, logical_l=4)  # lengths equal to the sets': no padding
    assert _shortcut_ran(*jointattn.joint_attention(*inputs, **all_valid)[:2])
    # padding the batch shares: the valid keys cut out, then SDPA (the sdpa path's unpad -> SDPA -> pad)
    two = joint_inputs(2, 2, 8, 4, 16)
    assert _shortcut_ran(*jointattn.joint_attention(*two, logical_l=3)[:2])
    assert _shortcut_ran(*jointattn.joint_attention(*two, logical_n=torch.tensor([5, 5]))[:2])
    # lengths that differ across the batch, no valid key at all, another runtime, the profiler, fake tensors: the op
    assert not _shortcut_ran(*jointattn.joint_attention(*two, logical_l=torch.tensor([3, 4]))[:2])
    assert not _shortcut_ran(*jointattn.joint_attention(*two, logical_n=0, logical_l=0)[:2])
    assert not _shortcut_ran(*jointattn.joint_attention(*inputs, runtime="reference")[:2])
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        jointattn.joint_attention(*inputs)
    assert sum(e.name == "jointattn::joint_attention" for e in prof.events()) >= 1
    with torch._subclasses.fake_tensor.FakeTensorMode():
        fake = [torch.empty(t.shape) for t in inputs]
        assert jointattn.joint_attention(*fake)[0].shape == inputs[0].shape
    seen = []
    torch.func.grad(lambda x: seen.append(op_is_watched()) or x.sum())(torch.ones(2))
    assert seen == [True]  # inside a torch.func transform
    # a backward the dispatcher sends elsewhere: the op with autograd, the shortcut without
    monkeypatch.setenv(dispatch.DISPATCH_ENV, "forward=sdpa,backward=reference")
    assert _shortcut_ran(*jointattn.joint_attention(*inputs)[:2])
    grads = [t.detach().requires_grad_() for t in inputs]
    out, joint_out, _ = jointattn.joint_attention(*grads)
    assert not _shortcut_ran(out, joint_out)
    assert "JointAttention" in type(out.grad_fn).__name__ or "jointattn" in type(out.grad_fn).__name__


def test_the_dispatchers_choice_is_followed_and_cached_per_signature(monkeypatch):
    """CPU tensors: under Triton's interpreter (CI) the dispatcher runs float32 on Triton (the op) and bfloat16,
    which the interpreter cannot multiply, on SDPA (the shortcut); without it (a GPU machine) both on SDPA. A
    changed override is seen at once."""
    monkeypatch.delenv(dispatch.DISPATCH_ENV, raising=False)
    f32 = joint_inputs(1, 2, 8, 4, 16)
    bf16 = [t.bfloat16() for t in f32]
    interpreting = os.environ.get("TRITON_INTERPRET") == "1"
    assert _shortcut_ran(*jointattn.joint_attention(*f32)[:2]) == (not interpreting)
    assert _shortcut_ran(*jointattn.joint_attention(*bf16)[:2])
    monkeypatch.setenv(dispatch.DISPATCH_ENV, "reference")
    assert not _shortcut_ran(*jointattn.joint_attention(*bf16)[:2])
    monkeypatch.setenv(dispatch.DISPATCH_ENV, "sdpa")
    assert _shortcut_ran(*jointattn.joint_attention(*f32)[:2])
    assert eager_sdpa.try_joint_attention(f32, None) is not None


def test_a_training_call_takes_the_shortcut_where_the_unfused_step_is_measured_faster(monkeypatch):
    """As on an sm_90 GPU whose table has our forward faster but the unfused graph faster over forward + backward
    (`dispatch.choose_training`): a call recording autograd takes the shortcut, and computes the gradients;
    the same call without autograd runs the op (its forward is the faster one)."""
    monkeypatch.delenv(dispatch.DISPATCH_ENV, raising=False)
    b, nh, n, l, dh = 1, 2, 9, 5, 16  # noqa: E741

    def row(pass_, **ms):
        return dict(arch="sm_90", dtype="bfloat16", dh=dh, b_nh=b * nh, n=n, l=l, padded=False, ms=ms,
                    **{"pass": pass_})  # fmt: skip

    rows = [
        row("forward", triton=0.1, sdpa=0.5),
        row("backward", triton=1.5, sdpa=0.9),
        row("fwd+bwd", sdpa=1.0),  # 0.4 of joins: 1.0 against the op's 0.1 + 0.9 + its layers (0.15)
    ]
    monkeypatch.setattr(dispatch, "_table", lambda: {"rows": rows})
    monkeypatch.setattr(dispatch, "HOST_BOUND_STEP_FLOPS", 0)  # this tiny step goes by the table's estimate
    monkeypatch.setattr(
        dispatch,
        "describe_meta",
        lambda q, jq, padded, backward=False: dispatch.planned_problem(
            torch.bfloat16, b, nh, n, l, dh, padded=padded, backward=backward
        ),
    )
    dispatch.reload_measurements()
    try:
        inputs = joint_inputs(b, nh, n, l, dh, requires_grad=True, seed=5)
        out, joint_out, lse = jointattn.joint_attention(*inputs)
        assert _shortcut_ran(out, joint_out)
        grads = torch.autograd.grad(out.sum() + joint_out.square().sum(), inputs)
        doubles = [t.detach().double().requires_grad_() for t in inputs]
        o, jo, _ = unfused_float64(*doubles)
        want = torch.autograd.grad(o.sum() + jo.square().sum(), doubles)
        assert all(rel_err(g, w) < 1e-5 for g, w in zip(grads, want))
        with torch.no_grad():
            assert not _shortcut_ran(*jointattn.joint_attention(*inputs)[:2])
        rows[-1] = row("fwd+bwd", sdpa=1.35)  # 0.05 of joins: the op's 1.15 is faster
        dispatch.reload_measurements()
        assert not _shortcut_ran(*jointattn.joint_attention(*inputs)[:2])
    finally:
        dispatch.reload_measurements()


def _library_step_ran(out) -> bool:
    """Whether `out` came from `_library_step`: a PyTorch SDPA kernel's own backward node under the slice."""
    return "ScaledDotProduct" in type(out.grad_fn.next_functions[0][0]).__name__


@pytest.mark.parametrize("padded_q", [False, True])
def test_small_training_calls_run_under_pytorchs_autograd(sdpa_chosen, monkeypatch, padded_q):
    """A training call takes `_library_step` (PyTorch's kernel and its C++ backward, no Python node but lse's);
    every gradient, through lse too, is float64's, also with the joined q `QUERY_PAD_ROWS` longer than k and v
    (copies of its first row: a cuDNN graph key of its own, on a GPU; here forced on the CPU)."""
    seen = []
    attention_on = eager_sdpa.sdpa_runtime.attention_on
    monkeypatch.setattr(
        eager_sdpa.sdpa_runtime,
        "attention_on",
        lambda q, k, v, s, order=None: seen.append((q, k)) or attention_on(q, k, v, s, order),
    )
    inputs = joint_inputs(2, 2, 11, 6, 16, requires_grad=True, seed=12)
    doubles = [t.detach().double().requires_grad_() for t in inputs]
    g = torch.Generator().manual_seed(13)
    weights = [torch.randn(2, 2, s, 16, generator=g).double() for s in (11, 6)] + [
        torch.randn(2, 2, 17, generator=g).double()
    ]
    want = torch.autograd.grad(
        sum((o * w).sum() for o, w in zip(unfused_float64(*doubles), weights, strict=True)), doubles
    )
    monkeypatch.setattr(eager_sdpa, "_pads_query", lambda q: padded_q)
    out, joint_out, lse = jointattn.joint_attention(*inputs)
    assert _shortcut_ran(out, joint_out) and _library_step_ran(out)
    ((qq, kk),) = seen
    assert qq.shape[2] == kk.shape[2] + padded_q * eager_sdpa.QUERY_PAD_ROWS
    assert torch.equal(qq[:, :, 17:], qq[:, :, :1].expand_as(qq[:, :, 17:]))  # copies of the first row
    assert out.shape == (2, 2, 11, 16) and joint_out.shape == (2, 2, 6, 16) and lse.shape == (2, 2, 17)
    got = torch.autograd.grad(
        sum((o * w.float()).sum() for o, w in zip((out, joint_out, lse), weights, strict=True)), inputs
    )
    for a, w in zip(got, want, strict=True):
        assert rel_err(a, w) < 1e-5


def test_the_kernel_choice_is_asked_once_per_signature_and_setting_of_pytorchs_switches(monkeypatch):
    """`_kernels`: PyTorch's choice for a plan's joined tensors is asked once, and again under another
    `sdpa_kernel` setting (its switches are part of the choice) or another number of keys (a padded call's valid
    keys); CPU tensors take the CPU kernel, no choice."""
    import types

    from torch.nn.attention import SDPBackend, sdpa_kernel

    asked = []
    monkeypatch.setattr(
        eager_sdpa.sdpa_runtime, "kernel_order", lambda *a: asked.append(1) or ("cudnn", "flash", "efficient")
    )
    plan = eager_sdpa.Plan(scale=0.5, n=4)
    q, k = types.SimpleNamespace(is_cuda=True), types.SimpleNamespace(is_cuda=True, shape=(1, 1, 6, 8))
    assert eager_sdpa._kernels(plan, q, k, k) == ("cudnn", "flash", "efficient")
    assert eager_sdpa._kernels(plan, q, k, k) == ("cudnn", "flash", "efficient") and len(asked) == 1
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        eager_sdpa._kernels(plan, q, k, k)
    assert len(asked) == 2
    eager_sdpa._kernels(plan, q, k, k)
    assert len(asked) == 2
    fewer = types.SimpleNamespace(is_cuda=True, shape=(1, 1, 5, 8))
    eager_sdpa._kernels(plan, q, fewer, fewer)
    assert len(asked) == 3
    assert eager_sdpa._kernels(plan, *joint_inputs(1, 1, 4, 2, 8)[:3]) is None and len(asked) == 3


def test_calls_whose_joins_the_join_kernel_runs_take_the_training_node(sdpa_chosen, monkeypatch):
    """Where `join.kernel_takes` the joins (large calls on a GPU), the training call is `_TrainingSdpa` (its joins
    one launch), with the same gradients, and a forward without autograd joins by the kernel too; else
    `_library_step` and torch.cat."""
    inputs = joint_inputs(1, 2, 9, 4, 8, requires_grad=True, seed=14)
    ones = lambda *ts: [torch.ones_like(t) for t in ts]  # noqa: E731
    out, joint_out, _ = jointattn.joint_attention(*inputs)
    assert _library_step_ran(out)
    want = torch.autograd.grad((out, joint_out), inputs, ones(out, joint_out))
    monkeypatch.setattr(eager_sdpa, "_PLANS", {})  # plans are per signature: this one again, planned anew
    monkeypatch.setattr(eager_sdpa.join, "kernel_takes", lambda pairs: True)
    launched = []
    monkeypatch.setattr(eager_sdpa.join, "launch_join", lambda pairs, private=frozenset(): launched.append(1) or [
        torch.cat([a[:, :, :ra], c[:, :, :rc]], 2) for a, c, ra, rc in pairs
    ])  # fmt: skip
    out, joint_out, _ = jointattn.joint_attention(*inputs)
    assert "_TrainingSdpa" in type(out.grad_fn.next_functions[0][0]).__name__ and launched == [1]
    for a, w in zip(torch.autograd.grad((out, joint_out), inputs, ones(out, joint_out)), want, strict=True):
        assert torch.allclose(a, w, atol=1e-6)
    with torch.no_grad():
        again = jointattn.joint_attention(*inputs)
    assert launched == [1, 1] and torch.equal(again[0], out) and torch.equal(again[1], joint_out)


def test_compiled_graphs_keep_the_op(sdpa_chosen):
    from helpers import count_op_calls

    inputs = joint_inputs(1, 2, 8, 4, 16)
    compiled = torch.compile(lambda *t: jointattn.joint_attention(*t)[:2], backend="eager", fullgraph=True)
    compiled(*inputs)
    (out, joint_out), calls = count_op_calls(compiled, *inputs)
    assert calls == 1 and not _shortcut_ran(out, joint_out)


@pytest.mark.gpu
@pytest.mark.parametrize("dh", [64, 128])
def test_on_the_gpu_the_shortcut_runs_pytorchs_own_kernel(sdpa_chosen, dh):
    """bfloat16 on CUDA: the kernel PyTorch itself picks (cuDNN, flash or efficient), forward bit-equal to the
    unfused graph, gradients (through lse too) against float64."""
    g = torch.Generator(device="cuda").manual_seed(dh)
    inputs = [
        torch.randn(2, s, 3, dh, device="cuda", dtype=torch.bfloat16, generator=g)
        .transpose(1, 2)
        .requires_grad_()
        for s in (77, 77, 77, 19, 19, 19)
    ]
    with torch.no_grad():
        out, joint_out, lse = jointattn.joint_attention(*inputs)
        assert _shortcut_ran(out, joint_out)
        joined = F.scaled_dot_product_attention(
            *(torch.cat([a, c], 2) for a, c in zip(inputs[:3], inputs[3:]))
        )
        assert torch.equal(out, joined[:, :, :77]) and torch.equal(joint_out, joined[:, :, 77:])
    # A training call this small runs PyTorch's own kernel under PyTorch's autograd (`_library_step`).
    out, joint_out, lse = jointattn.joint_attention(*inputs)
    assert _shortcut_ran(out, joint_out) and _library_step_ran(out)
    assert rel_err(out, joined[:, :, :77]) < 1e-2 and rel_err(joint_out, joined[:, :, 77:]) < 1e-2
    doubles = [t.detach().double().requires_grad_() for t in inputs]
    ref = unfused_float64(*doubles)
    assert rel_err(out, ref[0]) < 1e-2 and rel_err(lse, ref[2]) < 1e-3
    weights = [torch.randn_like(r) for r in ref]
    got = torch.autograd.grad(
        sum((o * w.to(o.dtype)).sum() for o, w in zip((out, joint_out, lse), weights)), inputs
    )
    want = torch.autograd.grad(sum((o * w).sum() for o, w in zip(ref, weights)), doubles)
    for a, w in zip(got, want):
        assert rel_err(a, w) < 2e-2


def test_the_kernel_order_leaves_out_kernels_the_caller_turned_off(monkeypatch):
    """`sdpa_runtime.kernel_order`: PyTorch's choice first, without the kernels an `sdpa_kernel` context turned
    off (the cached order's fallbacks respect it too); every kernel where that leaves none (math only: the op's
    lse needs a fused kernel). The switches tell strict from warn-only deterministic mode (cuDNN is refused in
    the one, not the other)."""
    import types

    from jointattn.runtime import sdpa_runtime
    from torch.nn.attention import SDPBackend, sdpa_kernel

    monkeypatch.setattr(torch, "_fused_sdp_choice", lambda *a, **k: 3)  # 3: cuDNN
    q = types.SimpleNamespace(device=torch.device("cuda"))
    assert sdpa_runtime.kernel_order(q, q, q, 1.0) == ("cudnn", "flash", "efficient")
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        assert sdpa_runtime.kernel_order(q, q, q, 1.0) == ("cudnn", "efficient")
    with sdpa_kernel(SDPBackend.MATH):
        assert sdpa_runtime.kernel_order(q, q, q, 1.0) == ("cudnn", "flash", "efficient")
    strict, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    try:
        torch.use_deterministic_algorithms(True)
        strict_switches = sdpa_runtime.switches()
        torch.use_deterministic_algorithms(True, warn_only=True)
        assert sdpa_runtime.switches() != strict_switches
    finally:
        torch.use_deterministic_algorithms(strict, warn_only=warn_only)


def test_the_op_paths_kernel_orders_leave_out_kernels_the_caller_turned_off(monkeypatch):
    """The op's own sdpa path (`attention_on` without a cached order, and the backward after a forward that ran
    a kernel) tries only the kernels the caller's `sdpa_kernel` allows after PyTorch's choice, as the shortcut
    does; every kernel where that leaves none."""
    import types

    from jointattn.runtime import sdpa_runtime
    from torch.nn.attention import SDPBackend, sdpa_kernel

    monkeypatch.setattr(torch, "_fused_sdp_choice", lambda *a, **k: 3)  # 3: cuDNN
    q = types.SimpleNamespace(device=torch.device("cuda"))
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        assert sdpa_runtime._gpu_backends(q, q, q, 1.0, "forward") == ("cudnn", "efficient")
        assert sdpa_runtime._backward_order("cudnn", q, q, q, 1.0) == ("cudnn", "efficient")
        assert sdpa_runtime._backward_order("efficient", q, q, q, 1.0)[0] == "efficient"
        assert "flash" not in sdpa_runtime._backward_order("efficient", q, q, q, 1.0)
    with sdpa_kernel(SDPBackend.MATH):
        assert set(sdpa_runtime._backward_order("cudnn", q, q, q, 1.0)) == {"cudnn", "flash", "efficient"}


def test_the_query_pad_keeps_the_unfused_graphs_nan_where_a_key_is_minus_infinity(sdpa_chosen, monkeypatch):
    """A key with a -inf component (all queries' component there positive: the key's score is -inf, P 0): the
    pad copies a real query row, so the gradients are finite and NaN exactly where the unpadded step's are (zero
    rows would score 0 * -inf = NaN and put NaN into every dk and dv)."""
    inputs = joint_inputs(1, 2, 9, 5, 8, seed=21)
    for t in (inputs[0], inputs[3]):
        t[..., 0] = t[..., 0].abs() + 0.1
    inputs[1][0, :, 3, 0] = float("-inf")
    grads = {}
    for padded in (False, True):
        monkeypatch.setattr(eager_sdpa, "_pads_query", lambda q, padded=padded: padded)
        leaves = [t.clone().requires_grad_() for t in inputs]
        out, joint_out, _ = jointattn.joint_attention(*leaves)
        grads[padded] = torch.autograd.grad((out.sum() + joint_out.sum()), leaves)
    for a, b in zip(grads[False], grads[True], strict=True):
        assert torch.equal(a.isnan(), b.isnan())
        assert torch.allclose(a.nan_to_num(), b.nan_to_num(), atol=1e-6)
    assert all(g.isfinite().all() for g in (grads[True][1], grads[True][2], grads[True][4], grads[True][5]))
