"""Launches bound once per specialization (`runtime/fast_launch.py`).

- Everywhere (pure Python): the key separates every argument change Triton specializes on (dtype, a pointer's
  16-byte alignment, an integer's value, bool against int, None against a tensor, constexprs, options, a
  descriptor's geometry) and ignores what it does not (a pointer's address, a float's value); unknown types
  are not keyed; descriptors copied from a template equal freshly built ones and keep no caller's tensor
  alive; `launch` takes the normal path first, then calls the compiled kernel with every parameter in order,
  on the current stream, with Triton's hooks, and falls back where it must; check mode agrees with Triton's
  binder; every launch site's real argument list keys and maps onto its kernel's parameters.
- On a CUDA device (`gpu` marker): the forward (Triton, Triton with TMA, Gluon Hopper) and the backward with
  the fast path against the normal launch, bit for bit, over shapes, strides, pointer alignments and padding,
  interleaved so that bound launches are reused with new tensors and must not be confused with each other
  (bf16 in check mode, fp16 as users run it).
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch
from jointattn.runtime import fast_launch
from jointattn.runtime.call import JointCall
from triton.tools.tensor_descriptor import TensorDescriptor

# --- the key ------------------------------------------------------------------------------------------------


def _key(*args, **kwargs):
    return fast_launch.launch_key(args, kwargs)


def test_key_ignores_addresses_and_float_values_only():
    a, b = torch.zeros(64, dtype=torch.bfloat16), torch.ones(64, dtype=torch.bfloat16)
    assert a.data_ptr() != b.data_ptr()
    assert _key(a, 16, 0.5, None, BLOCK=64) == _key(b, 16, 0.25, None, BLOCK=64)


@pytest.mark.parametrize(
    "change",
    ["dtype", "alignment", "int_value", "int_one", "bool_for_int", "none_for_tensor", "constexpr", "option",
     "constexpr_bool_for_int"],
)  # fmt: skip
def test_key_separates_what_triton_specializes_on(change):
    t = torch.zeros(64, dtype=torch.bfloat16)
    base = ((t, 32, 0.5), dict(BLOCK=64, FLAG=True, num_warps=4))
    args, kwargs = list(base[0]), dict(base[1])
    if change == "dtype":
        args[0] = torch.zeros(64, dtype=torch.float16)
    elif change == "alignment":
        args[0] = t[1:]  # 2 bytes past a 16-byte boundary
    elif change == "int_value":
        args[1] = 33
    elif change == "int_one":
        args[1] = 1
    elif change == "bool_for_int":
        args[1], kwargs["FLAG"] = 1, True
        args2 = list(args)
        args2[1] = True
        assert _key(*args, **kwargs) != _key(*args2, **kwargs)
        return
    elif change == "none_for_tensor":
        args[0] = None
    elif change == "constexpr":
        kwargs["BLOCK"] = 128
    elif change == "option":
        kwargs["num_warps"] = 8
    elif change == "constexpr_bool_for_int":
        kwargs["FLAG"] = 1
    assert _key(*base[0], **base[1]) != _key(*args, **kwargs)


def test_key_refuses_types_it_does_not_know():
    assert _key(np.int64(3)) is None
    assert _key(torch.nn.Parameter(torch.zeros(4))) is None
    assert _key([1, 2]) is None
    assert _key(torch.zeros(4), BLOCK=[64]) is None  # unhashable constexpr


def _desc(t, rows=16):
    return TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, rows, t.shape[-1]])


def test_key_of_descriptors_is_their_geometry_and_alignment():
    a, b = torch.zeros(2, 3, 40, 64), torch.zeros(2, 3, 40, 64)
    assert _key(_desc(a)) == _key(_desc(b))
    assert _key(_desc(a)) != _key(_desc(a, rows=32))
    wide = torch.zeros(2, 3, 40, 72)[..., :64]  # same shape, other strides
    assert _key(_desc(a)) != _key(_desc(wide))
    assert _key(_desc(a)) != _key(_desc(torch.zeros(2, 3, 41, 64)))


@pytest.fixture
def fast_on(monkeypatch):
    monkeypatch.setattr(fast_launch, "enabled", lambda: True)
    fast_launch.clear()
    fast_launch._DESCRIPTORS.clear()
    yield
    fast_launch.clear()
    fast_launch._DESCRIPTORS.clear()


def test_descriptors_from_a_template_equal_built_ones_and_pin_nothing(fast_on):
    first = torch.randn(2, 3, 40, 64)
    made = fast_launch.descriptor(TensorDescriptor, first, [1, 1, 16, 64])
    ref = weakref.ref(first)
    del first, made
    gc.collect()
    assert ref() is None, "the template keeps the first caller's tensor alive"
    t = torch.randn(2, 3, 40, 64)
    copy = fast_launch.descriptor(TensorDescriptor, t, [1, 1, 16, 64])
    built = _desc(t)
    assert copy.base is t
    assert (copy.shape, copy.strides, copy.block_shape, copy.padding) == (
        built.shape, built.strides, built.block_shape, built.padding
    )  # fmt: skip
    assert _key(copy) == _key(built)
    misaligned = torch.zeros(2 * 3 * 40 * 64 + 1)[1:].view(2, 3, 40, 64)
    with pytest.raises(AssertionError, match="16-byte aligned"):
        fast_launch.descriptor(TensorDescriptor, misaligned, [1, 1, 16, 64])


def test_descriptor_with_the_fast_path_off_is_the_constructor(monkeypatch):
    monkeypatch.setattr(fast_launch, "enabled", lambda: False)
    t = torch.randn(1, 2, 8, 16)
    d = fast_launch.descriptor(TensorDescriptor, t, [1, 1, 8, 16])
    assert type(d) is TensorDescriptor and d.base is t and not hasattr(d, "_jointattn_geometry")


# --- launch's control flow, on a stand-in kernel ------------------------------------------------------------


class _Compiled:
    function, packed_metadata = "fn", "meta"

    def __init__(self, log):
        self.log = log

    def launch_metadata(self, grid, stream, *args):
        return ("launch_metadata", grid, stream, len(args))

    def run(self, *args):
        self.log.append(("fast", args))


class _Kernel:
    """What `launch` uses of a JITFunction: arg_names, pre_run_hooks and kernel[grid](...) -> compiled."""

    arg_names = ["X", "n", "scale", "BLOCK"]

    def __init__(self):
        self.log, self.pre_run_hooks = [], []
        self.compiled = _Compiled(self.log)

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.log.append(("normal", grid, args, kwargs))
            return self.compiled

        return run


@pytest.fixture
def device(monkeypatch):
    monkeypatch.setattr(fast_launch, "_current_device", lambda: 0)
    monkeypatch.setattr(fast_launch, "_current_stream", lambda device: f"stream{device}")


def test_launch_binds_once_then_calls_the_compiled_kernel(fast_on, device):
    from triton import knobs

    kernel = _Kernel()
    x0, x1 = torch.zeros(32), torch.ones(32)
    fast_launch.launch(kernel, (3, 2), x0, 48, 0.5, BLOCK=16, num_warps=4)
    assert [e[0] for e in kernel.log] == ["normal"]
    fast_launch.launch(kernel, (3, 2), x1, 48, 0.25, BLOCK=16, num_warps=4)
    kind, args = kernel.log[-1]
    assert kind == "fast"
    enter, leave = knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook
    assert args == (3, 2, 1, "stream0", "fn", "meta", ("launch_metadata", (3, 2), "stream0", 4), enter, leave,
                    x1, 48, 0.25, 16)  # fmt: skip
    fast_launch.launch(kernel, (3, 2), x1, 49, 0.25, BLOCK=16, num_warps=4)  # a new key: normal first
    assert kernel.log[-1][0] == "normal"
    fast_launch.launch(kernel, (3, 2), x1[1:], 48, 0.25, BLOCK=16, num_warps=4)  # misaligned: another key
    assert kernel.log[-1][0] == "normal"


def test_launch_falls_back_where_it_must(monkeypatch, fast_on, device):
    kernel = _Kernel()
    x = torch.zeros(32)
    kernel.pre_run_hooks.append(lambda *a, **k: None)
    for _ in range(2):
        fast_launch.launch(kernel, (1,), x, 48, 0.5, BLOCK=16)
    kernel.pre_run_hooks.clear()
    for _ in range(2):  # a parameter left to its default: no plan
        fast_launch.launch(kernel, (1,), x, 48, 0.5)
    for _ in range(2):  # an argument type the key does not know
        fast_launch.launch(kernel, (1,), x, np.int32(48), 0.5, BLOCK=16)
    monkeypatch.setattr(fast_launch, "enabled", lambda: False)
    for _ in range(2):
        fast_launch.launch(kernel, (1,), x, 48, 0.5, BLOCK=16)
    assert [e[0] for e in kernel.log] == ["normal"] * 8


class _BoundKernel(_Kernel):
    """A stand-in with what the check reads of a JITFunction: device_caches[device] = (kernel cache, key
    cache, target, backend, binder), the binder returning (bound arguments, specialization, options)."""

    debug = False

    def __init__(self, lay_out=None):
        super().__init__()
        from triton.runtime.jit import compute_cache_key

        def binder(*args, **kwargs):
            params = dict(zip(self.arg_names, (*args, *[kwargs.pop(n) for n in self.arg_names[len(args) :]])))
            if lay_out:
                params = lay_out(params)
            specialization = [("*fp32", "D"), ("i32", "D"), ("fp32", None), ("constexpr", params["BLOCK"])]
            return params, specialization, kwargs

        key_cache = {}
        bound, specialization, options = binder(
            torch.zeros(4), 48, 0.5, BLOCK=16, num_warps=4, debug=False, instrumentation_mode=""
        )
        self.kernel_cache = {compute_cache_key(key_cache, specialization, options): self.compiled}
        self.device_caches = {0: (self.kernel_cache, key_cache, None, None, binder)}


def test_check_mode_agrees_with_tritons_binder(monkeypatch, fast_on, device):
    from triton import knobs

    monkeypatch.setattr(fast_launch, "_CHECKING", True)
    monkeypatch.setattr(knobs.compilation, "instrumentation_mode", "")
    kernel = _BoundKernel()
    for x in (torch.zeros(32), torch.ones(32)):
        fast_launch.launch(kernel, (1,), x, 48, 0.5, BLOCK=16, num_warps=4)
    assert [e[0] for e in kernel.log] == ["normal", "fast"]
    kernel.kernel_cache.update(dict.fromkeys(kernel.kernel_cache, _Compiled([])))  # Triton would run another
    with pytest.raises(RuntimeError, match="not the kernel Triton would run"):
        fast_launch.launch(kernel, (1,), torch.ones(32), 48, 0.5, BLOCK=16, num_warps=4)
    fast_launch.clear()
    shuffled = _BoundKernel(lay_out=lambda params: dict(reversed(params.items())))
    for x in (torch.zeros(32), torch.ones(32)):
        if x.sum():
            with pytest.raises(RuntimeError, match="not laid out"):
                fast_launch.launch(shuffled, (1,), x, 48, 0.5, BLOCK=16, num_warps=4)
        else:
            fast_launch.launch(shuffled, (1,), x, 48, 0.5, BLOCK=16, num_warps=4)


def test_enabled_only_when_asked_and_never_in_the_interpreter(monkeypatch):
    try:
        monkeypatch.delenv(fast_launch.ENV, raising=False)
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        fast_launch.set_enabled(None)
        assert not fast_launch.enabled()
        monkeypatch.setenv(fast_launch.ENV, "1")
        assert not fast_launch.enabled(), "read once, not on every launch"
        fast_launch.set_enabled(None)
        assert fast_launch.enabled()
        fast_launch.set_enabled(False)
        assert not fast_launch.enabled()
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        fast_launch.set_enabled(None)
        assert not fast_launch.enabled()
        fast_launch.set_enabled(True)
        assert not fast_launch.enabled()
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        monkeypatch.setenv(fast_launch.ENV, "check")
        fast_launch.set_enabled(None)
        assert fast_launch.enabled() and fast_launch._CHECKING
    finally:
        fast_launch.set_enabled(None)


@pytest.fixture
def recorded_launches(monkeypatch):
    """`fast_launch.launch` replaced by a recorder of (kernel, args, kwargs): the launchers run on CPU tensors up
    to their launches, and no kernel runs."""
    calls = []
    monkeypatch.setattr(fast_launch, "launch", lambda kernel, grid, *a, **k: calls.append((kernel, a, k)))
    return calls


def test_every_launch_site_can_be_bound(recorded_launches):
    """The launchers' real argument lists: each keys (no type the key does not know) and maps plainly onto its
    kernel's parameters, so on the GPU no launch silently keeps the slow path."""
    from jointattn.runtime.hopper_backward_launch import launch_backward_hopper
    from jointattn.runtime.hopper_launch import launch_forward_hopper
    from jointattn.runtime.triton_runtime import launch_backward, launch_forward

    q, k, v, jq, jk, jv = (torch.randn(2, 3, s, 64) for s in (37, 37, 37, 7, 7, 7))
    lengths = torch.tensor([30, 37], dtype=torch.int32)
    call = JointCall.of(q, k, v, jq, jk, jv, 0.125, lengths, None)
    out, joint_out, lse = torch.empty_like(q), torch.empty_like(jq), torch.empty(2, 3, 44)
    launch_forward(call, out, joint_out, lse, hopper=False)
    launch_backward(call, out, joint_out, lse, out, joint_out, lse)
    bf16 = JointCall.of(*(t.to(torch.bfloat16) for t in (q, k, v, jq, jk, jv)), 0.125, lengths, None)
    launch_forward_hopper(bf16, out.to(torch.bfloat16), joint_out.to(torch.bfloat16), lse, 37, 7)
    bf16_out = out.to(torch.bfloat16), joint_out.to(torch.bfloat16)
    grads = tuple(torch.empty_like(t) for t in bf16.tensors)
    launch_backward_hopper(bf16, *bf16_out, lse, *bf16_out, lse, grads)
    names = [kernel.__name__ for kernel, _, _ in recorded_launches]
    assert names == ["joint_attention_fwd_kernel", "joint_attention_bwd_preprocess_kernel",
                     "joint_attention_bwd_dkdv_kernel", "joint_attention_bwd_dq_kernel",
                     "joint_attention_fwd_hopper_kernel", "joint_attention_bwd_preprocess_kernel",
                     "joint_attention_bwd_hopper_kernel"]  # fmt: skip
    for kernel, args, kwargs in recorded_launches:
        assert fast_launch.launch_key(args, kwargs) is not None, kernel.__name__
        assert fast_launch._plan_of(kernel, object(), args, kwargs) is not None, kernel.__name__


# --- on the GPU: fast against normal, bit for bit -----------------------------------------------------------

HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9

# (b, nh, N, L, dh, layout, logical_n, logical_l)
GPU_CASES = [
    (2, 3, 259, 77, 64, "bhsd", None, None),
    (2, 3, 259, 77, 64, "bshd", [200, 259], [77, 10]),
    (1, 2, 300, 90, 128, "bshd", None, [90]),
    (2, 2, 130, 40, 128, "wide_rows", [0, 130], [40, 0]),
    (1, 1, 17, 5, 64, "misaligned", None, None),  # pointers 2 bytes off 16: no TMA, no 'D' specialization
    (1, 1, 17, 5, 64, "bhsd", None, None),  # the same shape aligned: must not reuse the misaligned binding
    (2, 1, 64, 16, 128, "bhsd", [1, 64], [16, 1]),  # nh = 1 and lengths of 1
]


def _gpu_inputs(case, dtype, seed):
    b, nh, n, l, dh, layout, logical_n, logical_l = case  # noqa: E741
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def make(s):
        if layout == "bshd":
            return torch.randn(b, s, nh, dh, generator=gen, device="cuda", dtype=dtype).transpose(1, 2)
        if layout == "wide_rows":
            return torch.randn(b, nh, s, dh + 8, generator=gen, device="cuda", dtype=dtype)[..., :dh]
        if layout == "misaligned":
            flat = torch.randn(b * nh * s * dh + 1, generator=gen, device="cuda", dtype=dtype)
            return flat[1:].view(b, nh, s, dh)
        return torch.randn(b, nh, s, dh, generator=gen, device="cuda", dtype=dtype)

    lengths = [None if x is None else torch.tensor(x, device="cuda", dtype=torch.int32)
               for x in (logical_n, logical_l)]  # fmt: skip
    tensors = tuple(make(s) for s in (n, n, n, l, l, l))
    return JointCall.of(*tensors, dh**-0.5, *lengths)


def _forward_and_backward(call, hopper):
    from jointattn.runtime.triton_runtime import launch_backward, launch_forward

    q, jq = call.q, call.joint_q
    b, nh, n, dh = q.shape
    l = jq.shape[2]  # noqa: E741
    out = torch.full_like(q, float("nan"))
    joint_out = torch.full_like(jq, float("nan"))
    lse = torch.full((b, nh, n + l), float("nan"), device="cuda")
    launch_forward(call, out, joint_out, lse, hopper=hopper)
    if hopper:
        return out, joint_out, lse
    gen = torch.Generator(device="cuda").manual_seed(7)
    grad_out = torch.randn(out.shape, generator=gen, device="cuda", dtype=out.dtype)
    grad_joint_out = torch.randn(joint_out.shape, generator=gen, device="cuda", dtype=out.dtype)
    grads = launch_backward(call, out, joint_out, lse, grad_out, grad_joint_out, None, hopper=False)
    return out, joint_out, lse, *grads


def _hopper_ok(case):
    return HOPPER and case[4] in (64, 128) and case[5] != "misaligned"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="launches CUDA kernels")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_fast_launch_equals_normal_launch_bit_for_bit(dtype):
    runs = [
        (case, hopper) for case in GPU_CASES for hopper in (False, True) if not hopper or _hopper_ok(case)
    ]
    expected = {}
    fast_launch.set_enabled(False)
    try:
        for i, (case, hopper) in enumerate(runs):
            expected[i] = _forward_and_backward(_gpu_inputs(case, dtype, seed=i), hopper)
        # bf16: every fast launch also checked against Triton's binder; fp16: the fast path as users run it.
        fast_launch.set_enabled(True, check=dtype == torch.bfloat16)
        fast_launch.clear()
        _compare_rounds(runs, expected, dtype)
    finally:
        fast_launch.set_enabled(None)
    assert fast_launch._PLANS, "no launch was bound"
    assert all(plan is not None for plan in fast_launch._PLANS.values()), (
        "a launch fell back to the normal path"
    )


def _compare_rounds(runs, expected, dtype):
    # Three rounds over every case: the first binds, the later ones reuse bindings with new tensors (fresh
    # allocations) in an order that alternates keys.
    for round_ in range(3):
        for i in range(len(runs)) if round_ != 1 else reversed(range(len(runs))):
            case, hopper = runs[i]
            got = _forward_and_backward(_gpu_inputs(case, dtype, seed=i), hopper)
            for name, a, b in zip(("out", "joint_out", "lse", "dq", "dk", "dv", "djq", "djk", "djv"),
                                  got, expected[i]):  # fmt: skip
                assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num()), (
                    f"round {round_}, {case}, hopper={hopper}: {name} differs from the normal launch"
                )
