"""The Triton joint-attention kernels against a float64 reference, forward and backward.

The same parametrized cases run in two places: here (no CUDA) in Triton's interpreter on CPU float32 tensors,
and on the GPU machine on CUDA bfloat16 tensors (tests/conftest.py sets TRITON_INTERPRET=1 only without CUDA).

Ground truth is written out independently of the runtime: cat on the sequence dim -> scores with absent keys
masked to -inf -> softmax -> slice, in float64 on the same (upcast) inputs, with autograd for the gradients
(except for rows that see no key at all, whose expected gradients come from the exact reference backward).

Tolerances (relative error ||x - ref|| / ||ref||):
- CPU interpreter, float32 inputs and exact float32 dots: 1e-5 (measured about 1e-7).
- CUDA bfloat16: 1e-2 for outputs and gradients (bf16 operands of both products; expected 1e-3..1e-2).
- lse, both: absolute 1e-4 (interpreter) / 2e-3 (bf16; lse is a float32 output).
NaN never passes: outputs are poisoned with NaN before each launch and every element must be written.
"""

from __future__ import annotations

import ast
import math
import pathlib

import pytest
import torch
from helpers import with_padding_poisoned
from jointattn.kernels.configs import (
    SHARED_MEMORY_BYTES,
    LaunchConfig,
    backward_launch_config,
    forward_candidates,
    forward_launch_config,
    forward_shared_memory,
    keep,
)
from jointattn.runtime.call import JointCall
from jointattn.runtime.reference import key_bias_from_lengths, reference_backward
from jointattn.runtime.triton_runtime import TritonRuntime, launch_backward, launch_forward

import jointattn

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
DTYPE = torch.bfloat16 if ON_GPU else torch.float32
REL_TOL = 1e-2 if ON_GPU else 1e-5
LSE_TOL = 2e-3 if ON_GPU else 1e-4
# A small tile config: many loop iterations and boundary blocks even at these short lengths.
SMALL = LaunchConfig(block_m=16, block_n=16, num_warps=4, num_stages=1)

# (b, nh, N, L, dh, logical_n, logical_l); lengths are per-batch lists, an int, or None (all valid).
CASES = {
    "n1_l1": (1, 1, 1, 1, 16, None, None),
    "n7_l37": (2, 2, 7, 37, 64, None, None),
    "n37_l7_pad_both": (2, 2, 37, 7, 32, [37, 20], [7, 3]),
    "n130_l37_pad": (2, 1, 130, 37, 64, [130, 67], [0, 37]),  # batch 0: joint part fully padded
    "logical_l_0": (1, 2, 37, 19, 32, None, 0),
    "l_empty": (1, 2, 37, 0, 32, None, None),
    "n_empty": (2, 1, 0, 37, 32, None, [37, 15]),
    "dh24": (1, 2, 37, 7, 24, [30], [5]),  # dh not a power of two: padded head block, masked columns
    "dh128": (1, 1, 37, 7, 128, None, [6]),
    "dh200": (1, 1, 19, 5, 200, [11], None),  # dh up to 256
    "no_valid_key": (2, 1, 15, 7, 16, [0, 15], [0, 4]),  # batch 0 sees no key: out 0, lse -inf
}


def _lengths(value, b: int) -> torch.Tensor | int | None:
    if isinstance(value, list):
        return torch.tensor(value, dtype=torch.int64 if b % 2 else torch.int32, device=DEVICE)
    return value


def _make_inputs(case: str, layout: str, seed: int):
    b, nh, n, l, dh, logical_n, logical_l = CASES[case]  # noqa: E741
    gen = torch.Generator().manual_seed(seed)

    def make(s: int) -> torch.Tensor:
        if layout == "bshd":  # [b, S, nh, dh] memory viewed as [b, nh, S, dh]: what model code passes
            t = torch.randn(b, s, nh, dh, generator=gen).transpose(1, 2)
        elif layout == "strided":  # every stride odd-sized: a slice of a wider head dim
            t = torch.randn(b, nh, s, dh + 3, generator=gen)[..., 1 : dh + 1]
        else:
            t = torch.randn(b, nh, s, dh, generator=gen)
        return t.to(device=DEVICE, dtype=DTYPE)

    tensors = (make(n), make(n), make(n), make(l), make(l), make(l))
    return tensors, _lengths(logical_n, b), _lengths(logical_l, b)


def _dense_reference(q, k, v, jq, jk, jv, scale, logical_n, logical_l):
    """cat -> masked softmax -> slice in float64 (differentiable). Rows with no valid key give 0 and -inf."""
    b, nh, n, _ = q.shape
    l = jq.shape[2]  # noqa: E741
    qq, kk, vv = (torch.cat([a, c], dim=2).double() for a, c in ((q, jq), (k, jk), (v, jv)))
    scores = torch.matmul(qq, kk.transpose(-1, -2)) * scale

    def valid(length, size):  # position < length, per batch element (all valid for None)
        if length is None:
            return torch.ones(b, size, dtype=torch.bool, device=q.device)
        length = torch.as_tensor(length, device=q.device).expand(b)
        return torch.arange(size, device=q.device)[None, :] < length[:, None]

    keys = torch.cat([valid(logical_n, n), valid(logical_l, l)], dim=1)
    scores = scores.masked_fill(~keys[:, None, None, :], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    seen = torch.isfinite(lse)
    probs = torch.exp(scores - torch.where(seen, lse, torch.zeros_like(lse))[..., None])
    out = torch.matmul(torch.where(seen[..., None], probs, torch.zeros_like(probs)), vv)
    return out[:, :, :n], out[:, :, n:], lse


def _poisoned_outputs(q: torch.Tensor, l: int):  # noqa: E741
    b, nh, n, dh = q.shape
    nan = float("nan")
    out = torch.full((b, n, nh, dh), nan, dtype=q.dtype, device=q.device).transpose(1, 2)
    joint_out = torch.full((b, l, nh, dh), nan, dtype=q.dtype, device=q.device).transpose(1, 2)
    lse = torch.full((b, nh, n + l), nan, dtype=torch.float32, device=q.device)
    return out, joint_out, lse


def _assert_close(name: str, got: torch.Tensor, ref: torch.Tensor, rel_tol: float = REL_TOL) -> None:
    assert not torch.isnan(got).any(), f"{name}: NaN (an element was not written or 0/0)"
    if ref.numel() == 0:
        return
    err = (got.double() - ref.double()).norm().item()
    scale = ref.double().norm().item()
    assert err <= rel_tol * max(scale, 1e-30) + 1e-12, f"{name}: relative error {err / max(scale, 1e-30):.3e}"


def _assert_lse_close(got: torch.Tensor, ref: torch.Tensor) -> None:
    assert not torch.isnan(got).any(), "lse: NaN (an element was not written)"
    assert torch.equal(torch.isinf(got), torch.isinf(ref)), "lse: -inf exactly where a row sees no valid key"
    finite = torch.isfinite(ref)
    if finite.any():
        assert (got[finite].double() - ref[finite]).abs().max().item() <= LSE_TOL


def run_forward(case: str, layout: str, config, seed: int, scale=None, use_tma=None, poison=False) -> None:
    """poison: padded key/value rows hold NaN/inf in the launch (the reference gets the clean tensors)."""
    (q, k, v, jq, jk, jv), logical_n, logical_l = _make_inputs(case, layout, seed)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out, joint_out, lse = _poisoned_outputs(q, jq.shape[2])
    launched = (q, k, v, jq, jk, jv)
    if poison:
        launched = (q, *(with_padding_poisoned(t, logical_n) for t in (k, v)), jq,
                    *(with_padding_poisoned(t, logical_l) for t in (jk, jv)))  # fmt: skip
    # hopper=False: this file tests the Triton kernel, also where the Hopper kernel would take the call
    # (tests/test_hopper_kernel.py tests that one).
    launch_forward(
        JointCall.of(*launched, scale, logical_n, logical_l),
        out,
        joint_out,
        lse,
        config,
        use_tma=use_tma,
        hopper=False,
    )
    ref_out, ref_joint, ref_lse = _dense_reference(q, k, v, jq, jk, jv, scale, logical_n, logical_l)
    _assert_close("out", out, ref_out)
    _assert_close("joint_out", joint_out, ref_joint)
    _assert_lse_close(lse, ref_lse)


@pytest.mark.parametrize("config", [None, SMALL], ids=["default_cfg", "small_cfg"])
@pytest.mark.parametrize("case", list(CASES))
def test_forward_matches_float64(case, config):
    run_forward(case, "bshd", config, seed=list(CASES).index(case))


@pytest.mark.parametrize("layout", ["bhsd", "strided"])
@pytest.mark.parametrize("case", ["n37_l7_pad_both", "dh24", "n_empty"])
def test_forward_any_strides(case, layout):
    run_forward(case, layout, SMALL, seed=7)


@pytest.mark.parametrize("scale", [-0.7, 0.0, 2.5], ids=["negative", "zero", "large"])
def test_forward_scale_sign(scale):
    run_forward("n37_l7_pad_both", "bshd", SMALL, seed=3, scale=scale)


@pytest.mark.parametrize("use_tma", [True, False], ids=["tma", "pointers"])
def test_forward_tma_and_pointer_paths(use_tma):
    """The descriptor path (Hopper) and the strided-pointer path compute the same thing; the interpreter
    runs both, so CI covers the TMA code too."""
    run_forward("n130_l37_pad", "bshd", SMALL, seed=11, use_tma=use_tma)


@pytest.mark.parametrize("config", [None, SMALL], ids=["default_cfg", "small_cfg"])
@pytest.mark.parametrize("use_tma", [True, False], ids=["tma", "pointers"])
@pytest.mark.parametrize("case", ["n130_l37_pad", "n37_l7_pad_both"])
def test_forward_ignores_what_padded_keys_hold(case, use_tma, config):
    """Padded key and value rows holding NaN/inf change nothing. The TMA path cannot mask rows, so a padded
    row loaded into a boundary block would reach the output as 0 * NaN in P.V: the kernel must not load one."""
    run_forward(case, "bshd", config, seed=5, use_tma=use_tma, poison=True)


def run_backward(
    case: str, layout: str, config, seed: int, with_lse_grad: bool = True, dq_config=None
) -> None:
    inputs, logical_n, logical_l = _make_inputs(case, layout, seed)
    q, k, v, jq, jk, jv = inputs
    scale = q.shape[-1] ** -0.5
    out, joint_out, lse = _poisoned_outputs(q, jq.shape[2])
    launch_forward(JointCall.of(q, k, v, jq, jk, jv, scale, logical_n, logical_l), out, joint_out, lse)
    gen = torch.Generator().manual_seed(seed + 1)
    grad_out = torch.randn(out.shape, generator=gen).to(DEVICE, DTYPE)
    grad_joint = torch.randn(joint_out.shape, generator=gen).to(DEVICE, DTYPE)
    # lse rows with no valid key are -inf and carry no gradient (as in the reference).
    grad_lse = torch.randn(lse.shape, generator=gen).to(DEVICE) if with_lse_grad else None
    grads = launch_backward(
        JointCall.of(*inputs, scale, logical_n, logical_l),
        out,
        joint_out,
        lse,
        grad_out,
        grad_joint,
        grad_lse,
        config,
        dq_config,
    )
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v, jq, jk, jv)]
    r_out, r_joint, r_lse = _dense_reference(*leaves, scale, logical_n, logical_l)
    loss = (r_out * grad_out.double()).sum() + (r_joint * grad_joint.double()).sum()
    if grad_lse is not None:
        loss = loss + torch.where(torch.isfinite(r_lse), r_lse * grad_lse.double(), 0.0).sum()
    ref_grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    for name, got, ref, leaf in zip(
        ("dq", "dk", "dv", "djoint_q", "djoint_k", "djoint_v"), grads, ref_grads, leaves, strict=True
    ):
        ref = torch.zeros_like(leaf) if ref is None else ref
        assert got.shape == leaf.shape and got.dtype == DTYPE
        _assert_close(name, got, ref)


BACKWARD_CASES = [
    "n1_l1",
    "n7_l37",
    "n37_l7_pad_both",
    "n130_l37_pad",
    "logical_l_0",
    "l_empty",
    "n_empty",
    "dh24",
]


@pytest.mark.parametrize("config", [None, SMALL], ids=["default_cfg", "small_cfg"])
@pytest.mark.parametrize("case", BACKWARD_CASES)
def test_backward_matches_float64(case, config):
    run_backward(case, "bshd", config, seed=list(CASES).index(case) + 50)


@pytest.mark.parametrize("layout", ["bhsd", "strided"])
def test_backward_any_strides_without_lse_grad(layout):
    run_backward("n37_l7_pad_both", layout, SMALL, seed=21, with_lse_grad=False)


def test_backward_with_its_own_dq_tiles():
    """The dq kernel may take other tiles than the dk/dv kernel (the backward sweep sets them apart)."""
    run_backward(
        "n130_l37_pad", "bshd", LaunchConfig(16, 32, 4, 1), seed=23, dq_config=LaunchConfig(32, 16, 4, 1)
    )


def test_batch_split_where_b_times_nh_exceeds_the_grid(monkeypatch):
    """The grid's second axis walks b * nh and CUDA caps it at 65535: larger calls run in batch chunks. Here the
    cap is lowered to 3, so each batch element (2 heads) is its own launch, each with its own valid lengths."""
    from jointattn.runtime import triton_runtime

    monkeypatch.setattr(triton_runtime, "MAX_GRID_Y", 3)
    launches = []

    def counted(name):
        real = getattr(triton_runtime, name)

        def launch(call, *args):
            launches.append((name, call.q.shape[0]))
            return real(call, *args)

        return launch

    for name in ("_launch_forward_one", "_launch_backward_one"):
        monkeypatch.setattr(triton_runtime, name, counted(name))
    run_forward("n37_l7_pad_both", "bshd", SMALL, seed=9)
    assert launches == [("_launch_forward_one", 1)] * 2
    launches.clear()
    run_backward("n37_l7_pad_both", "bshd", SMALL, seed=9)
    assert launches == [("_launch_forward_one", 1)] * 2 + [("_launch_backward_one", 1)] * 2
    with pytest.raises(ValueError, match="nh=4"):
        triton_runtime._batch_chunks(1, 4)


def test_backward_row_without_keys_matches_reference():
    """Rows that see no valid key: the foundation's exact reference defines zero gradients there."""
    inputs, logical_n, logical_l = _make_inputs("no_valid_key", "bshd", seed=5)
    q, k, v, jq, jk, jv = inputs
    scale = 0.25
    out, joint_out, lse = _poisoned_outputs(q, jq.shape[2])
    launch_forward(JointCall.of(q, k, v, jq, jk, jv, scale, logical_n, logical_l), out, joint_out, lse, SMALL)
    grad_out, grad_joint = torch.randn_like(out), torch.randn_like(joint_out)
    grad_lse = torch.randn_like(lse)
    grads = launch_backward(
        JointCall.of(*inputs, scale, logical_n, logical_l),
        out,
        joint_out,
        lse,
        grad_out,
        grad_joint,
        grad_lse,
        SMALL,
    )
    # Expected: the exact reference backward (itself checked against float64 autograd in test_op.py); autograd
    # through logsumexp cannot give it for rows with no key (their gradient is NaN there).
    bias = key_bias_from_lengths(logical_n, logical_l, q.shape[0], q.shape[2], jq.shape[2], q.device)
    as64 = [t.double() for t in (q, k, v, jq, jk, jv)]
    finite_lse = torch.where(torch.isfinite(lse), grad_lse, 0.0).double()
    ref = reference_backward(grad_out.double(), grad_joint.double(), finite_lse, *as64, scale, bias)
    for got, want in zip(grads, ref, strict=True):
        _assert_close("grad", got, want)
    assert grads[0][0].abs().max().item() == 0.0, "a row with no valid key gets a zero dq"


@pytest.mark.parametrize("case", ["n37_l7_pad_both", "n130_l37_pad", "logical_l_0", "dh128"])
def test_op_runtime_triton_forward_and_autograd(case, monkeypatch):
    """What users call: jointattn.joint_attention(..., runtime="triton") and its autograd formula. On Hopper
    the dh-128 case is forced onto the Gluon forward (the measured table prefers the Triton kernel at this tiny
    size), whose out and lse the Triton backward then takes."""
    from jointattn.runtime import triton_runtime

    hopper_launches = []
    real_hopper = triton_runtime.launch_forward_hopper
    monkeypatch.setattr(
        triton_runtime, "launch_forward_hopper", lambda *a: (hopper_launches.append(a), real_hopper(*a))
    )
    (q, k, v, jq, jk, jv), logical_n, logical_l = _make_inputs(case, "bshd", seed=13)
    on_hopper = ON_GPU and torch.cuda.get_device_capability()[0] == 9
    if on_hopper and q.shape[-1] == 128:
        monkeypatch.setenv("JOINTATTN_DISPATCH", "forward=hopper")
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v, jq, jk, jv)]
    out, joint_out, lse = jointattn.joint_attention(
        *leaves, logical_n=logical_n, logical_l=logical_l, runtime="triton"
    )
    assert len(hopper_launches) == (1 if on_hopper and q.shape[-1] == 128 else 0)
    scale = q.shape[-1] ** -0.5
    ref_leaves = [t.detach().double().requires_grad_() for t in (q, k, v, jq, jk, jv)]
    r_out, r_joint, r_lse = _dense_reference(*ref_leaves, scale, logical_n, logical_l)
    _assert_close("out", out, r_out)
    _assert_close("joint_out", joint_out, r_joint)
    _assert_lse_close(lse, r_lse)
    gen = torch.Generator().manual_seed(17)
    w_out = torch.randn(out.shape, generator=gen).to(DEVICE)
    w_joint = torch.randn(joint_out.shape, generator=gen).to(DEVICE)
    w_lse = torch.randn(lse.shape, generator=gen).to(DEVICE)
    loss = (out.float() * w_out).sum() + (joint_out.float() * w_joint).sum() + (lse * w_lse).sum()
    loss.backward()
    ref_loss = (
        (r_out * w_out.double()).sum() + (r_joint * w_joint.double()).sum() + (r_lse * w_lse.double()).sum()
    )
    ref_loss.backward()
    for name, got, ref in zip(("dq", "dk", "dv", "djq", "djk", "djv"), leaves, ref_leaves, strict=True):
        _assert_close(name, got.grad, ref.grad)


def test_auto_runs_the_path_the_dispatcher_picks():
    """runtime="auto" gives bit for bit what the chosen path gives when asked for directly."""
    from jointattn.runtime.auto_runtime import forward_choice

    (q, k, v, jq, jk, jv), _, _ = _make_inputs("n7_l37", "bshd", seed=1)
    call = JointCall(q, k, v, jq, jk, jv, 0.125, None, None)
    assert TritonRuntime().unsupported(call) is None
    path = forward_choice(call).path
    out_auto = jointattn.joint_attention(q, k, v, jq, jk, jv, runtime="auto")
    direct = {"hopper": "triton", "triton": "triton"}.get(path, path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JOINTATTN_DISPATCH", f"forward={path}")
        out_direct = jointattn.joint_attention(q, k, v, jq, jk, jv, runtime=direct)
    for a, b in zip(out_auto, out_direct, strict=True):
        assert torch.equal(a, b)


def _call(dtype=torch.float32, dh=16, device="cpu") -> JointCall:
    t = torch.zeros(1, 1, 3, dh, dtype=dtype, device=device)
    return JointCall(t, t, t, t, t, t, 0.25, None, None)


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda: _call(torch.float64), "float16, bfloat16 or float32"),
        (lambda: _call(dh=300), "dh <= 256"),
        (lambda: _call(torch.bfloat16), "interpreter"),
    ],
    ids=["float64", "dh300", "cpu_bf16"],
)
def test_unsupported_says_why(call, reason):
    message = TritonRuntime().unsupported(call())
    assert message is not None and reason in message


def test_cpu_without_interpreter_is_unsupported(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "TRITON_INTERPRET=1" in TritonRuntime().unsupported(_call())


@pytest.mark.gpu
@pytest.mark.parametrize("hopper", [False, None], ids=["triton_kernel", "default_kernel"])
def test_gpu_bf16_large_padded_shape_never_nan(hopper):
    """A Flux-like padded layer at reduced size on the GPU: bf16 within 1e-2, no NaN, default config."""
    b, nh, n, l, dh = 1, 4, 1000, 300, 128  # noqa: E741
    gen = torch.Generator().manual_seed(0)
    ts = [
        torch.randn(b, s, nh, dh, generator=gen).transpose(1, 2).to("cuda", torch.bfloat16)
        for s in (n, n, n, l, l, l)
    ]
    logical_l = torch.tensor([77], device="cuda")
    out, joint_out, lse = _poisoned_outputs(ts[0], l)
    launch_forward(JointCall.of(*ts, dh**-0.5, None, logical_l), out, joint_out, lse, hopper=hopper)
    r_out, r_joint, r_lse = _dense_reference(*ts, dh**-0.5, None, logical_l)
    _assert_close("out", out, r_out)
    _assert_close("joint_out", joint_out, r_joint)
    _assert_lse_close(lse, r_lse)


def test_strided_lengths_tensor_is_read_by_element():
    """A lengths tensor that is a column of a wider one (stride 2) gives what its contiguous copy gives."""
    (q, k, v, jq, jk, jv), _, _ = _make_inputs("n37_l7_pad_both", "bshd", seed=5)
    table = torch.tensor([[37, 1], [20, 1]], device=DEVICE)
    results = []
    for lengths in (table[:, 0], table[:, 0].contiguous()):
        out, joint_out, lse = _poisoned_outputs(q, jq.shape[2])
        launch_forward(JointCall.of(q, k, v, jq, jk, jv, 0.2, lengths, None), out, joint_out, lse, SMALL)
        results.append((out, joint_out, lse))
    for got, want in zip(results[0], results[1], strict=True):
        assert torch.equal(got, want)


def test_configs_fit_and_are_documented():
    for dh in (16, 24, 64, 128, 200, 256):
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            fwd = forward_launch_config(dh, dtype, 4096, 512)
            assert forward_shared_memory(fwd, dh, dtype) <= SHARED_MEMORY_BYTES, (dh, dtype, fwd)
            assert forward_candidates(dh, dtype), (dh, dtype)
            assert all(keep(c, dh, dtype) for c in forward_candidates(dh, dtype))
            assert backward_launch_config(dh, dtype).block_m >= 16
    short = forward_launch_config(64, torch.bfloat16, 7, 3)
    assert short.block_m == 16 and short.block_n == 16, "tiles shrink to short sequences"
    with pytest.raises(ValueError, match="dh <= 256"):
        forward_launch_config(300, torch.bfloat16, 1, 1)
    assert math.isclose(forward_shared_memory(LaunchConfig(128, 128, 8, 2), 128, torch.bfloat16), 160 * 1024)


def test_kernels_do_not_import_runtime_or_compiler():
    """Layering: runtime uses kernels, never the reverse."""
    kernels = pathlib.Path(jointattn.kernels.__file__).parent
    for path in kernels.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = ("." * node.level) + (node.module or "")
                assert "runtime" not in module and "compiler" not in module, (path.name, module)
            elif isinstance(node, ast.Import):
                assert not any(
                    "jointattn.runtime" in a.name or "jointattn.compiler" in a.name for a in node.names
                )
