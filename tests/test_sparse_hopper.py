"""The Gluon block-sparse kernels (`kernels/sparse_joint_attention_{fwd,bwd}_hopper.py`): which calls they take
(CPU: the envelope in `dispatch.sparse_hopper_unsupported`, per pass), and on a Hopper GPU their outputs and
gradients against the float64 sparse reference on the same mask: full and partial blocks, key blocks gathered
(16/32/64) or split (256), odd N, padded text, rows that see nothing, no text, NaN outside the listed blocks.
Their offline sm_90 builds are checked in `test_sparse_build.py`."""

from dataclasses import replace

import pytest
import torch
from helpers import joint_inputs, rel_err
from jointattn.runtime.dispatch import choose_sparse, planned_problem, sparse_hopper_unsupported
from jointattn.runtime.sparse_layout import spatial_layout
from sparse_cases import block_mask_of, dense_of, masked_float64, random_element_mask

import jointattn


@pytest.mark.parametrize(
    "dh, q_block, kv_block, padded, reason",
    [
        (128, 128, 64, False, None),
        (128, 256, 16, False, None),
        (64, 128, 512, False, None),
        (128, 64, 64, False, "multiple of 128"),
        (128, 128, 48, False, "16, 32, 64 or a multiple of 128"),
        (128, 128, 192, False, "16, 32, 64 or a multiple of 128"),
        (128, 128, 64, True, "padded spatial set"),
        (96, 128, 64, False, "forward configs for dh 64, 128, 256"),
        (256, 128, 64, False, "sparse forward has configs for dh 64, 128;"),  # the dense forward's only
    ],
)
def test_envelope(dh, q_block, kv_block, padded, reason):
    problem = planned_problem(torch.bfloat16, 1, 24, 44520, 256, dh, padded=padded)
    got = sparse_hopper_unsupported(problem, q_block, kv_block, padded)
    assert (got is None) if reason is None else (reason in got), got


@pytest.mark.parametrize(
    "dh, q_block, kv_block, padded, reason",
    [
        (128, 128, 64, False, None),
        (128, 64, 64, False, None),  # the backward's query steps are 64 rows
        (64, 128, 512, False, None),
        (128, 128, 16, False, "multiple of 64"),  # a CTA's 64 keys sit in one key block
        (128, 96, 64, False, "multiple of 64"),
        (128, 128, 64, True, "padded spatial set"),
        (96, 128, 64, False, "backward configs for dh 64, 128;"),
        (256, 128, 64, False, "backward configs for dh 64, 128;"),
    ],
)
def test_backward_envelope(dh, q_block, kv_block, padded, reason):
    problem = planned_problem(torch.bfloat16, 1, 24, 44520, 256, dh, padded=padded, backward=True)
    got = sparse_hopper_unsupported(problem, q_block, kv_block, padded)
    assert (got is None) if reason is None else (reason in got), got


@pytest.mark.parametrize("dh", [64, 128])
def test_backward_schedule_per_key_block(dh):
    """Key blocks that hold whole 128-key CTAs take the dense backward's config and schedule (each Q/dO tile
    serving 128 keys); 64-key blocks take CTAs of 64 keys whose consumers alternate steps."""
    from jointattn.kernels.configs import hopper_backward_config, hopper_sparse_backward_config

    for kv_block in (128, 256, 512):
        config = hopper_sparse_backward_config(dh, kv_block)
        assert config == hopper_backward_config(dh) and not config.alternate_steps and config.block_n == 128
    for kv_block in (64, 192):
        config = hopper_sparse_backward_config(dh, kv_block)
        assert config.alternate_steps and config.block_n == 64, kv_block


def test_a_layout_without_partial_blocks_has_no_bits():
    """P = 0: the kernels are built without their partial path; the reference reads the full blocks alone."""
    from jointattn.runtime.sparse_layout import kernel_bits
    from jointattn.sparse import estimate_block_mask

    inputs = joint_inputs(1, 2, 300, 9, 32, dtype=torch.float64, seed=3)
    bm = estimate_block_mask(inputs[0], inputs[1], keep=0.4, block_size=(64, 32))
    layout = spatial_layout(bm, 300)
    assert layout.partial_bits.shape[3] == 0
    stand_in = kernel_bits(layout.partial_bits)
    assert stand_in.shape == layout.partial_bits.shape and stand_in.untyped_storage().nbytes() > 0
    got = jointattn.joint_attention(*inputs, block_mask=layout, runtime="reference")
    want = masked_float64(*inputs, dense_of(bm, 1, 2))
    for a, w, tol in zip(got, want, (1e-12, 1e-12, 1e-6)):  # lse is float32
        assert torch.allclose(a.double(), w, atol=tol)


def test_backward_envelope_needs_spatial_tokens():
    problem = planned_problem(torch.bfloat16, 1, 24, 0, 256, 128, backward=True)
    assert "no spatial tokens" in sparse_hopper_unsupported(problem, 128, 64, False)


def test_envelope_refuses_other_gpus_and_fp32():
    assert "9.x" in sparse_hopper_unsupported(
        planned_problem(torch.bfloat16, 1, 1, 256, 0, 64, arch="sm_80"), 128, 64, False
    )
    assert "float16 or bfloat16" in sparse_hopper_unsupported(
        planned_problem(torch.float32, 1, 1, 256, 0, 64), 128, 64, False
    )


@pytest.mark.parametrize(
    "dh, kv_block, padded, backward, path, why",
    [
        (128, 64, False, False, "hopper", "Gluon block-sparse forward"),
        (128, 64, False, True, "hopper", "Gluon block-sparse backward"),
        (128, 16, False, True, "triton", "the Hopper sparse backward needs a multiple of 64"),
        (128, 64, True, False, "triton", "padded spatial set"),
        (96, 64, False, False, "triton", "forward configs for dh 64, 128, 256"),
        (256, 64, False, False, "triton", "sparse forward has configs for dh 64, 128;"),
        (128, 24, False, False, "reference", "the kernels need multiples of 16"),
    ],
)
def test_the_sparse_choice_and_its_reason(dh, kv_block, padded, backward, path, why):
    """`choose_sparse`, which the sparse runtime's launch and explain's lines both follow."""
    problem = planned_problem(torch.bfloat16, 1, 24, 44520, 256, dh, padded=padded, backward=backward)
    choice = choose_sparse(problem, 128, kv_block, padded)
    assert choice.path == path and why in choice.reason, choice


@pytest.mark.gpu
def test_explain_names_the_hopper_kernels_for_spatial_lengths_of_n_at_run_time():
    """A layer fused with checked spatial lengths (Mochi's) runs the Gluon kernels when they are N at run time."""
    from jointattn.compiler.explain import _sparse_plan

    class Val:
        def __init__(self, shape, requires_grad=False):
            self.shape, self.requires_grad, self.device = shape, requires_grad, torch.device("cuda")
            self.dtype = torch.bfloat16

    class Node:
        def __init__(self, val):
            self.meta = {"val": val}

    q, jq = Node(Val((1, 24, 44520, 128))), Node(Val((1, 24, 256, 128)))
    args = [q, q, q, jq, jq, jq, *[None] * 5, 128, 64, None, "lengths_n", "lengths_l", "auto"]
    node = type("N", (), {"name": "block_sparse", "args": args})()
    line = _sparse_plan(node, "auto")
    assert "hopper" in line and "where every spatial length is N at run time, else triton" in line


def _hopper_gpu():
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9


hopper = pytest.mark.skipif(not _hopper_gpu(), reason="needs a Hopper GPU (compute capability 9.x)")


def _setup(bm, n, logical_l, inputs):
    """The layout on the GPU, the op's length keywords and the call `forward_kernel`/`backward_kernel` describe."""
    from jointattn.runtime.ops.contract import make_call

    layout = spatial_layout(bm, n, "cuda")
    lengths = {} if logical_l is None else dict(logical_l=torch.tensor(logical_l).cuda())
    call = make_call(*inputs, "rear", None, None, lengths.get("logical_l"), "reference")
    return layout, lengths, call


def _check(bm, b, nh, n, l, dh, *, dtype=torch.bfloat16, logical_l=None, inputs=None, tol=2e-2):  # noqa: E741
    from jointattn.runtime.sparse_triton_runtime import forward_kernel

    inputs = inputs or [t.cuda() for t in joint_inputs(b, nh, n, l, dh, dtype=dtype, seed=n + l + dh)]
    layout, lengths, call = _setup(bm, n, logical_l, inputs)
    assert forward_kernel(call, layout, call.q, call.joint_q) == "hopper"
    got = jointattn.joint_attention(*inputs, block_mask=layout, runtime="triton", **lengths)
    want = jointattn.joint_attention(
        *(t.double() for t in inputs), block_mask=layout, runtime="reference", **lengths
    )
    for name, a, w in zip(("out", "joint_out", "lse"), got, want):
        assert torch.equal(torch.isnan(a), torch.isnan(w)), name
        assert torch.equal(torch.isinf(a), torch.isinf(w)), name
        finite = torch.isfinite(w)
        assert rel_err(a[finite].double(), w[finite]) < tol, name
    return got, want


@pytest.mark.gpu
@hopper
@pytest.mark.parametrize("dh", [64, 128])
@pytest.mark.parametrize(
    "block_size", [(128, 64), (128, 16), (128, 32), (256, 128), (128, 256)], ids=lambda b: f"{b[0]}x{b[1]}"
)
def test_random_masks_match_the_float64_reference(dh, block_size):
    """Random element masks (full, partial and empty blocks, per head) at odd N, padded text per batch."""
    b, nh, n, l = 2, 3, 1337, 77  # noqa: E741
    dense = random_element_mask(1, nh, n, *block_size, seed=dh + block_size[1])
    bm = block_mask_of(dense.cuda(), block_size)
    assert int(bm.kv_num_blocks.sum()) > 0 and int(bm.full_kv_num_blocks.sum()) > 0
    _check(bm, b, nh, n, l, dh, logical_l=[50, 0])


@pytest.mark.gpu
@hopper
def test_spatial_lengths_of_n_run_the_gluon_kernels_forward_and_backward():
    """Mochi's layers carry spatial lengths of N (checked from its key mask): the Gluon kernels run them, with the
    same results as the reference; one shorter entry sends the call to the Triton kernels."""
    from jointattn.runtime.sparse_triton_runtime import backward_kernel, without_whole_spatial_lengths

    b, nh, n, l, dh = 2, 3, 1337, 77, 128  # noqa: E741
    bm = block_mask_of(random_element_mask(1, nh, n, 128, 64, seed=11).cuda(), (128, 64))
    inputs = [t.cuda().requires_grad_() for t in joint_inputs(b, nh, n, l, dh, dtype=torch.bfloat16, seed=4)]
    layout, _, call = _setup(bm, n, None, [t.detach() for t in inputs])
    lengths = dict(logical_n=torch.tensor([n, n]).cuda(), logical_l=torch.tensor([50, 77]).cuda())
    whole = without_whole_spatial_lengths(replace(call, **lengths))
    assert whole.logical_n is None and backward_kernel(whole, layout) == "hopper"
    shorter = replace(call, logical_n=torch.tensor([n, n - 1]).cuda())
    assert backward_kernel(without_whole_spatial_lengths(shorter), layout) == "triton"
    got = jointattn.joint_attention(*inputs, block_mask=layout, runtime="triton", **lengths)
    doubles = [t.detach().double().requires_grad_() for t in inputs]
    want = jointattn.joint_attention(*doubles, block_mask=layout, runtime="reference", **lengths)
    for a, w in zip(got, want):
        assert rel_err(a.double(), w) < 2e-2
    weights = [torch.randn_like(w) for w in want[:2]]
    grads = torch.autograd.grad(got[:2], inputs, [w.to(torch.bfloat16) for w in weights])
    expected = torch.autograd.grad(want[:2], doubles, weights)
    for a, w in zip(grads, expected):
        assert rel_err(a.double(), w) < 3e-2


@hopper
@pytest.mark.parametrize("dh", [64, 128])
def test_patterns_and_the_estimator(dh):
    from jointattn.sparse import estimate_block_mask, frame_window, tile_window

    b, nh, n, l = 1, 4, 2000, 100  # noqa: E741
    inputs = [t.cuda() for t in joint_inputs(b, nh, n, l, dh, dtype=torch.bfloat16, seed=3)]
    masks = [
        estimate_block_mask(inputs[0], inputs[1], keep=0.3, block_size=(128, 64)),
        estimate_block_mask(inputs[0], inputs[1], keep=0.3, block_size=(128, 128)),  # 128-key CTAs
        frame_window(150, 2, causal=False).block_mask(n, device="cuda", block_size=(128, 16)),
        frame_window(100, 3).block_mask(n, device="cuda", block_size=(128, 32)),
        tile_window((2, 20, 50), (1, 5, 9)).block_mask(n, device="cuda", block_size=(128, 64)),
    ]
    for bm in masks:
        _check(bm, b, nh, n, l, dh, logical_l=[37], inputs=inputs)


@pytest.mark.gpu
@hopper
def test_rows_that_see_nothing_no_text_and_fp16():
    n = 640
    dense = random_element_mask(1, 2, n, 128, 64, seed=5)
    dense[:, :, :128] = False  # query block 0 sees no spatial key; with no text it sees nothing
    (out, _, lse), _ = _check(
        block_mask_of(dense.cuda(), (128, 64)), 2, 2, n, 0, 128, dtype=torch.float16, tol=5e-3
    )
    assert (out[:, :, :128] == 0).all() and (lse[:, :, :128] == float("-inf")).all()


@pytest.mark.gpu
@hopper
@pytest.mark.parametrize("bad", ["k", "v"])
def test_nan_outside_the_listed_blocks_is_never_read(bad):
    """A NaN in a key block that a query block does not list never reaches it; the reference reads as the
    kernel does (see test_sparse_triton's NaN test), so NaN lands in the same places."""
    n, l = 512, 20  # noqa: E741
    dense = torch.zeros(1, 1, n, n, dtype=torch.bool)
    dense[:, :, :128, :64] = True  # query block 0: key block 0
    dense[:, :, 128:256, 64:128] = True  # query block 1: key block 1
    dense[:, :, 256:, :] = True  # query blocks 2, 3: everything
    inputs = [t.cuda() for t in joint_inputs(1, 2, n, l, 128, dtype=torch.bfloat16, seed=7)]
    poisoned = inputs[1 if bad == "k" else 2].clone()
    poisoned[:, :, 70] = float("nan")  # key block 1
    inputs[1 if bad == "k" else 2] = poisoned
    (out, joint_out, _), _ = _check(block_mask_of(dense.cuda(), (128, 64)), 1, 2, n, l, 128, inputs=inputs)
    assert torch.isfinite(out[:, :, :128]).all()  # query block 0 never lists key block 1
    if bad == "v":
        assert torch.isnan(out[:, :, 128:]).all() and torch.isnan(joint_out).all()


@pytest.mark.gpu
@hopper
def test_gradients_after_the_hopper_forward():
    """The backward (Triton's sparse kernels) runs on the out and lse the Gluon forward wrote."""
    b, nh, n, l, dh = 2, 2, 700, 40, 128  # noqa: E741
    bm = block_mask_of(random_element_mask(1, nh, n, 128, 32, seed=11).cuda(), (128, 32))
    layout = spatial_layout(bm, n, "cuda")
    inputs = [t.cuda() for t in joint_inputs(b, nh, n, l, dh, dtype=torch.bfloat16, seed=12)]
    lengths = dict(logical_l=torch.tensor([40, 9]).cuda())
    leaves = [t.detach().requires_grad_() for t in inputs]
    out = jointattn.joint_attention(*leaves, block_mask=layout, runtime="triton", **lengths)
    ref_leaves = [t.detach().double().requires_grad_() for t in inputs]
    ref = jointattn.joint_attention(*ref_leaves, block_mask=layout, runtime="reference", **lengths)
    g = [torch.randn_like(o) for o in ref[:2]]
    grads = torch.autograd.grad(out[:2], leaves, [x.to(torch.bfloat16) for x in g])
    ref_grads = torch.autograd.grad(ref[:2], ref_leaves, g)
    for got, want in zip(grads, ref_grads):
        assert rel_err(got, want) < 3e-2


def _check_backward(bm, b, nh, n, l, dh, *, dtype=torch.bfloat16, logical_l=None, inputs=None, tol=3e-2,  # noqa: E741
                    lse_grad=True):  # fmt: skip
    """The Gluon sparse backward's six gradients (through out, joint_out and, with lse_grad, lse) against
    autograd of the float64 reference on the same mask; NaN in the same places."""
    from jointattn.runtime.sparse_triton_runtime import backward_kernel

    inputs = inputs or [t.cuda() for t in joint_inputs(b, nh, n, l, dh, dtype=dtype, seed=n + l + dh + 1)]
    layout, lengths, call = _setup(bm, n, logical_l, inputs)
    assert backward_kernel(call, layout) == "hopper"
    leaves = [t.detach().requires_grad_() for t in inputs]
    got = jointattn.joint_attention(*leaves, block_mask=layout, runtime="triton", **lengths)
    ref_leaves = [t.detach().double().requires_grad_() for t in inputs]
    ref = jointattn.joint_attention(*ref_leaves, block_mask=layout, runtime="reference", **lengths)
    gen = torch.Generator(device="cuda").manual_seed(n)
    g = [torch.randn(o.shape, generator=gen, device="cuda", dtype=torch.float64) for o in ref]
    g[2] = torch.where(torch.isfinite(ref[2]), g[2], 0.0)  # rows that see nothing: lse = -inf, no gradient
    used = 3 if lse_grad else 2
    grads = torch.autograd.grad(got[:used], leaves, [x.to(o.dtype) for x, o in zip(g, got)][:used])
    ref_grads = torch.autograd.grad(ref[:used], ref_leaves, g[:used])
    for name, a, w in zip(("dq", "dk", "dv", "djq", "djk", "djv"), grads, ref_grads):
        assert a.shape == w.shape and a.dtype == dtype, name
        assert torch.equal(torch.isnan(a), torch.isnan(w)), name
        finite = ~torch.isnan(w)
        if w[finite].abs().sum() > 0:
            assert rel_err(a[finite].double(), w[finite]) < tol, name
        else:
            assert (a[finite] == 0).all(), name
    return grads, ref_grads


@pytest.mark.gpu
@hopper
@pytest.mark.parametrize("dh", [64, 128])
@pytest.mark.parametrize(
    "block_size", [(128, 64), (64, 64), (128, 128), (256, 128), (64, 256)], ids=lambda b: f"{b[0]}x{b[1]}"
)
def test_backward_random_masks_match_the_float64_reference(dh, block_size):
    """Random element masks (full, partial and empty blocks, per head) at odd N, padded text per batch (one batch
    row with no valid text), gradients through all three outputs."""
    b, nh, n, l = 2, 3, 1337, 77  # noqa: E741
    dense = random_element_mask(1, nh, n, *block_size, seed=dh + block_size[1] + 1)
    bm = block_mask_of(dense.cuda(), block_size)
    assert int(bm.kv_num_blocks.sum()) > 0 and int(bm.full_kv_num_blocks.sum()) > 0
    _check_backward(bm, b, nh, n, l, dh, logical_l=[50, 0])


@pytest.mark.gpu
@hopper
def test_backward_patterns_the_estimator_no_text_and_fp16():
    from jointattn.sparse import estimate_block_mask, frame_window, tile_window

    b, nh, n, l, dh = 1, 4, 2000, 100, 128  # noqa: E741
    inputs = [t.cuda() for t in joint_inputs(b, nh, n, l, dh, dtype=torch.bfloat16, seed=4)]
    masks = [
        estimate_block_mask(inputs[0], inputs[1], keep=0.3, block_size=(128, 64)),
        estimate_block_mask(inputs[0], inputs[1], keep=0.3, block_size=(128, 128)),  # 128-key CTAs
        frame_window(150, 2, causal=False).block_mask(n, device="cuda", block_size=(128, 64)),
        tile_window((2, 20, 50), (1, 5, 9)).block_mask(n, device="cuda", block_size=(64, 128)),
    ]
    for bm in masks:
        _check_backward(bm, b, nh, n, l, dh, logical_l=[37], inputs=inputs)
    dense = random_element_mask(1, 2, 640, 128, 64, seed=6)
    dense[:, :, :128] = False  # query block 0 sees nothing: no spatial key, no text
    _check_backward(block_mask_of(dense.cuda(), (128, 64)), 2, 2, 640, 0, 64, dtype=torch.float16, tol=1e-2)


@pytest.mark.gpu
@hopper
@pytest.mark.parametrize("bad", ["k", "v"])
def test_backward_nan_lands_where_the_reference_puts_it(bad):
    """As test_sparse_triton's NaN test, for the Gluon backward: a NaN in a key block that a query block does
    not list never reaches that block's gradients; in a listed block it does (a masked NaN value through
    0 * NaN, a masked NaN key not at all)."""
    n, l = 256, 5  # noqa: E741
    dense = torch.zeros(1, 1, n, n, dtype=torch.bool)
    dense[:, :, 0:64, 0:64] = True  # query block 0: key block 0, full
    dense[:, :, 64:128, 128:160] = True  # query block 1: key block 2, partial (keys 160..191 masked)
    dense[:, :, 128:192, 0:64] = True  # query block 2: key blocks 0 and 2, full
    dense[:, :, 128:192, 128:192] = True
    dense[:, :, 192:256, 64:128] = True  # query block 3: key block 1, full
    inputs = [t.cuda() for t in joint_inputs(1, 1, n, l, 64, dtype=torch.bfloat16, seed=9)]
    poisoned = inputs[2 if bad == "v" else 1].clone()
    poisoned[0, 0, 176] = float("nan")  # key block 2, a key query block 1 masks
    inputs[2 if bad == "v" else 1] = poisoned
    (dq, *_), _ = _check_backward(block_mask_of(dense.cuda(), (64, 64)), 1, 1, n, l, 64, inputs=inputs)
    assert torch.isfinite(dq[0, 0, :64]).all() and torch.isfinite(dq[0, 0, 192:]).all()
    if bad == "v":
        assert torch.isnan(dq[0, 0, 64:192]).all()


@pytest.mark.gpu
@hopper
def test_backward_in_the_models_layout_without_an_lse_gradient():
    """Inputs as views of [b, S, nh, dh] memory (what diffusers' attention processors hand over), gradients of
    out and joint_out only (the preprocess without dlse), a batch whose text is all padding."""
    b, nh, n, l, dh = 2, 4, 1000, 77, 128  # noqa: E741
    gen = torch.Generator().manual_seed(21)
    inputs = [
        torch.randn(b, s, nh, dh, generator=gen).to("cuda", torch.bfloat16).transpose(1, 2)
        for s in (n, n, n, l, l, l)
    ]
    assert not inputs[0].is_contiguous()
    bm = block_mask_of(random_element_mask(1, nh, n, 128, 64, seed=22).cuda(), (128, 64))
    _check_backward(bm, b, nh, n, l, dh, logical_l=[77, 0], inputs=inputs, lse_grad=False)


@pytest.mark.gpu
@hopper
def test_backward_a_nan_key_of_the_block_before_the_last_one_never_reaches_dq():
    """N not a multiple of the CTA's 64 keys: the last spatial block is loaded where it is (zero fill past N), not
    shifted back over the block before, whose keys the query blocks listing only the last block never read."""
    n, l = 212, 7  # noqa: E741  # key blocks 0..3 of 64, the last one 20 keys
    dense = torch.zeros(1, 1, n, n, dtype=torch.bool)
    dense[:, :, 0:64, 192:] = True  # query block 0: the last key block only
    dense[:, :, 64:, :192] = True  # the others: key blocks 0..2
    inputs = [t.cuda() for t in joint_inputs(1, 1, n, l, 64, dtype=torch.bfloat16, seed=10)]
    poisoned = inputs[1].clone()
    poisoned[0, 0, 150] = float("nan")  # key block 2, within the 64 rows before N
    inputs[1] = poisoned
    (dq, *_), _ = _check_backward(block_mask_of(dense.cuda(), (64, 64)), 1, 1, n, l, 64, inputs=inputs)
    assert torch.isfinite(dq[0, 0, :64]).all()


@pytest.mark.gpu
@hopper
@pytest.mark.parametrize("bad", ["k", "v"])
def test_backward_128_key_ctas_keep_nan_where_the_reference_puts_it(bad):
    """Key blocks of 128 run CTAs of 128 keys, one half per consumer: a NaN in the second half of a block
    that one query block lists as partial (the NaN key masked) and another does not list at all."""
    n, l = 384, 5  # noqa: E741  # key blocks 0, 1, 2 of 128
    dense = torch.zeros(1, 1, n, n, dtype=torch.bool)
    dense[:, :, 0:64, 0:128] = True  # query block 0: key block 0, full
    dense[:, :, 64:128, 256:320] = True  # query block 1: key block 2, partial (keys 320..383 masked)
    dense[:, :, 128:, 0:128] = True  # the others: key blocks 0 and 2, full
    dense[:, :, 128:, 256:] = True
    inputs = [t.cuda() for t in joint_inputs(1, 2, n, l, 128, dtype=torch.bfloat16, seed=11)]
    poisoned = inputs[2 if bad == "v" else 1].clone()
    poisoned[0, 1, 352] = float("nan")  # key block 2, second half; masked for query block 1
    inputs[2 if bad == "v" else 1] = poisoned
    (dq, *_), _ = _check_backward(block_mask_of(dense.cuda(), (64, 128)), 1, 2, n, l, 128, inputs=inputs)
    assert torch.isfinite(dq[0, 1, :64]).all() and torch.isfinite(dq[0, 0]).all()
    if bad == "v":
        assert torch.isnan(dq[0, 1, 64:128]).all()
