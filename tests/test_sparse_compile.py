"""`torch.compile(model, backend="jointattn", options={"sparsity": ...})`: the selected layers' fused joint
attentions become block-sparse (a pattern's mask built at compile time, or the estimator at run time), the
others stay dense; numbers against the eager model with the same masks written out; `jointattn.explain`
reports each layer."""

import pytest
import torch
import torch.nn.functional as F
from helpers import count_op_calls
from jointattn.sparse import Sparsity, estimate, frame_window

import jointattn

DIM, HEADS, N, L = 16, 2, 40, 5


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(DIM, 3 * DIM)
        self.text_qkv = torch.nn.Linear(DIM, 3 * DIM)
        self.mask = None  # the eager reference sets the joint mask it expects the sparse op to apply

    def forward(self, image, text):
        b, n, dim = image.shape
        split = lambda x: x.view(b, -1, HEADS, dim // HEADS).transpose(1, 2)
        q, k, v = (split(t) for t in self.qkv(image).chunk(3, dim=-1))
        tq, tk, tv = (split(t) for t in self.text_qkv(text).chunk(3, dim=-1))
        o = F.scaled_dot_product_attention(
            torch.cat([q, tq], 2), torch.cat([k, tk], 2), torch.cat([v, tv], 2), attn_mask=self.mask
        )
        o = o.transpose(1, 2).reshape(b, -1, dim)
        return image + o[:, :n], text + o[:, n:]


class Stack(torch.nn.Module):
    def __init__(self, depth=3):
        super().__init__()
        self.layers = torch.nn.ModuleList(Layer() for _ in range(depth))

    def forward(self, image, text):
        for layer in self.layers:
            image, text = layer(image, text)
        return image, text


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, N, DIM, generator=g), torch.randn(2, L, DIM, generator=g)


def _joint_mask(spatial):
    mask = torch.ones(N + L, N + L, dtype=torch.bool)
    mask[:N, :N] = spatial
    return mask


def _reference(model, masks, inputs):
    for layer, mask in zip(model.layers, masks):
        layer.mask = mask
    try:
        return model(*inputs)
    finally:
        for layer in model.layers:
            layer.mask = None


@pytest.mark.parametrize("inner", ["eager", "inductor"])
def test_pattern_on_all_but_the_first_layer(inner):
    torch.manual_seed(0)
    model = Stack()
    pattern = frame_window(8, 2)
    sparsity = Sparsity(pattern, dense_layers=1, block_size=(16, 16))
    compiled = torch.compile(model, backend="jointattn", options={"sparsity": sparsity, "inner": inner})
    inputs = _inputs()
    compiled(*inputs)
    got, sparse_calls = count_op_calls(compiled, *inputs, op="jointattn::block_sparse_joint_attention")
    assert sparse_calls == 2
    spatial = pattern.dense(N)
    want = _reference(model, [None, _joint_mask(spatial), _joint_mask(spatial)], inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_training_through_the_sparse_layers_matches_eager_gradients():
    torch.manual_seed(1)
    model = Stack(depth=2)
    pattern = frame_window(10, 1, causal=False)
    compiled = torch.compile(model, backend="jointattn", options={"sparsity": pattern, "inner": "eager"})
    inputs = [t.requires_grad_() for t in _inputs(1)]
    loss = sum(o.square().sum() for o in compiled(*inputs))
    grads = torch.autograd.grad(loss, [*inputs, *model.parameters()])
    ref_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    mask = _joint_mask(pattern.dense(N))
    ref_loss = sum(o.square().sum() for o in _reference(model, [mask, mask], ref_inputs))
    ref_grads = torch.autograd.grad(ref_loss, [*ref_inputs, *model.parameters()])
    for g, w in zip(grads, ref_grads):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_estimator_keeping_everything_is_the_dense_model_and_keeping_less_is_not():
    torch.manual_seed(2)
    model = Stack(depth=2)
    inputs = _inputs(2)
    want = model(*inputs)
    full = torch.compile(
        model,
        backend="jointattn",
        options={"sparsity": estimate(keep=1.0, block_size=(16, 16)), "inner": "eager"},
    )
    full(*inputs)  # compiles (the profiler would also count the fake kernels' calls)
    got, calls = count_op_calls(full, *inputs, op="jointattn::estimate_kv_blocks")
    assert calls == 2
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()
    third = torch.compile(
        model,
        backend="jointattn",
        options={"sparsity": estimate(keep=0.3, block_size=(16, 16)), "inner": "eager"},
    )
    assert (third(*inputs)[0] - want[0]).abs().max() > 1e-3


def test_explain_reports_sparsity_per_layer():
    model = Stack()
    sparsity = {"mask": frame_window(8, 2), "layers": [2], "block_size": (16, 16)}
    report = jointattn.explain(model, *_inputs(), sparsity=sparsity)
    lines = report.sparsity
    assert len(lines) == 3
    assert "layer 0" in lines[0] and "dense (not in layers=[2])" in lines[0]
    assert "layer 2" in lines[2] and "frame_window(frame_tokens=8, window=2, causal)" in lines[2]
    assert "spatial key blocks kept: " in lines[2] and "%" in lines[2]
    assert "sparsity layer 2" in str(report)
    sparse_plans = [p for p in report.dispatch if "block-sparse" in p]
    assert len(sparse_plans) == 1 and "reference (off CUDA" in sparse_plans[0]  # on a GPU: `choose_sparse`


def test_bad_sparsity_options_are_named():
    with pytest.raises(Exception, match="sparsity: mask must be a jointattn.sparse pattern"):
        torch.compile(Stack(), backend="jointattn", options={"sparsity": "frames"})(*_inputs())


def test_mochi_key_masks_checked_at_run_time_go_sparse_with_their_lengths():
    """Mochi's per-sample text padding reaches the op as a run-time-checked mask; its sparse layers take the
    checked lengths. A window over every frame is the dense model; a one-frame window is not."""
    from jointattn import model_zoo

    case = model_zoo.build("mochi", "tiny")  # 3 frames of 6 tokens; text 5 and 2 of 7 valid
    with torch.no_grad():
        want = case.model(**case.inputs).sample
    results = {}
    for window in (3, 1):
        torch._dynamo.reset()
        sparsity = Sparsity(frame_window(6, window, causal=False), block_size=(16, 16))
        with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True), torch.no_grad():
            compiled = torch.compile(
                case.model, backend="jointattn", options={"sparsity": sparsity, "inner": "eager"}
            )
            compiled(**case.inputs)
            out, calls = count_op_calls(compiled, op="jointattn::block_sparse_joint_attention", **case.inputs)
        assert calls == 2
        results[window] = out.sample
    torch.testing.assert_close(results[3], want, rtol=1e-4, atol=1e-5)
    assert (results[1] - want).abs().max() > 1e-3


def test_a_mask_that_is_not_prefix_padding_is_refused_by_a_sparse_layer():
    lengths = torch.tensor([3, 2])
    with pytest.raises(ValueError, match="not prefix padding"):
        torch.ops.jointattn.prefix_lengths(lengths, lengths, torch.tensor(False))


def test_layers_the_dispatcher_would_leave_to_pytorch_are_fused_when_sparsity_asks(monkeypatch):
    """Where the dispatcher measured PyTorch's SDPA faster (small sizes on a GPU) the fusion pass keeps the
    original graph; a sparsity plan needs the op, so with one the pass fuses anyway."""
    import jointattn.passes.fx.fuse as fuse

    monkeypatch.setattr(fuse, "left_to_pytorch", lambda *args: "left to PyTorch (stand-in)")
    model, inputs = Stack(depth=2), _inputs(3)
    assert jointattn.explain(model, *inputs).fused == 0
    report = jointattn.explain(model, *inputs, sparsity=Sparsity(frame_window(8, 2), block_size=(16, 16)))
    assert report.fused == 2 and all("frame_window" in line for line in report.sparsity)


@pytest.mark.parametrize(
    "image, text, spatial_tokens, sparse",
    [
        (24, 40, None, False),  # the text is the longer set: it would be taken as spatial
        (40, 24, None, False),  # the image is longer, but not twice the text: unclear from the lengths
        (40, 24, 40, True),  # named: sparse
        (24, 40, 24, False),  # named, but the op's spatial set (the longer one) is the text
        (40, 5, None, True),  # a clear majority: sparse
    ],
)
def test_the_mask_goes_on_the_image_or_the_layer_stays_dense(image, text, spatial_tokens, sparse):
    """The fusion takes the longer token set as spatial: with a prompt as long as the image (SD3 at 256²: 256
    image vs 333 text tokens) that may be the text, and the pattern must not land on it."""
    g = torch.Generator().manual_seed(3)
    inputs = torch.randn(2, image, DIM, generator=g), torch.randn(2, text, DIM, generator=g)
    plan = Sparsity(frame_window(8, 1), block_size=(16, 16), spatial_tokens=spatial_tokens)
    (line,) = jointattn.explain(Stack(depth=1), *inputs, sparsity=plan).sparsity
    assert ("dense" not in line) == sparse, line
    if sparse:
        assert f"over the {image} spatial tokens" in line


def _with_estimated_masks(model, inputs, sources=None):
    """Eager: each layer's spatial mask estimated (keep=0.3, 16x16 blocks) from its own q and k, or from
    sources[i]; returns the outputs and the (q, k) each layer's mask came from."""
    from jointattn.sparse import estimate_block_mask

    image, text = inputs
    used = []
    for i, layer in enumerate(model.layers):
        b, n, dim = image.shape
        q, k, _ = (
            t.view(b, n, HEADS, dim // HEADS).transpose(1, 2) for t in layer.qkv(image).chunk(3, dim=-1)
        )
        source = sources[i] if sources else (q.detach(), k.detach())
        used.append(source)
        blocks = estimate_block_mask(*source, keep=0.3, block_size=(16, 16)).to_dense().bool()
        spatial = blocks.repeat_interleave(16, 2).repeat_interleave(16, 3)[:, :, :n, :n]
        mask = torch.ones(b, HEADS, n + L, n + L, dtype=torch.bool)
        mask[:, :, :n, :n] = spatial
        layer.mask = mask
        try:
            image, text = layer(image, text)
        finally:
            layer.mask = None
    return (image, text), used


def test_an_estimate_reused_across_calls_is_refreshed_every_k_calls():
    """estimate(every=2): each layer's mask comes from its own q and k on calls 1, 3, ... and is reused on
    calls 2, 4, ...; compiled outputs equal the eager model run with exactly those masks."""
    torch.manual_seed(4)
    model = Stack(depth=2)
    compiled = torch.compile(
        model,
        backend="jointattn",
        options={"sparsity": estimate(keep=0.3, block_size=(16, 16), every=2), "inner": "eager"},
    )
    first, second, third = _inputs(10), _inputs(11), _inputs(12)
    with torch.no_grad():
        want1, used1 = _with_estimated_masks(model, first)
        want2, _ = _with_estimated_masks(model, second, sources=used1)  # call 2 reuses call 1's masks
        fresh2, _ = _with_estimated_masks(model, second)
        want3, _ = _with_estimated_masks(model, third)  # call 3 estimates afresh
        got = [compiled(*x) for x in (first, second, third)]
    assert (fresh2[0] - want2[0]).abs().max() > 1e-4, "the test needs masks that differ between calls"
    for g, w in zip(got, (want1, want2, want3)):
        for a, b in zip(g, w):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_the_reused_estimate_op_refreshes_on_schedule_and_on_a_new_shape():
    from jointattn.runtime.ops.sparse import estimate_kv_blocks
    from jointattn.runtime.ops.sparse_schedule import new_estimate_slot

    slot = new_estimate_slot()
    op = torch.ops.jointattn.estimate_kv_blocks_reused
    g = torch.Generator().manual_seed(5)
    qk = [(torch.randn(1, 2, 48, 8, generator=g), torch.randn(1, 2, 48, 8, generator=g)) for _ in range(3)]
    fresh = [estimate_kv_blocks(q, k, 0.3, None, 16, 16) for q, k in qk]
    assert not torch.equal(fresh[0][1], fresh[1][1])
    got = [op(q, k, 0.3, None, 16, 16, None, None, slot, 2) for q, k in qk]
    for call, expected in zip(got, (fresh[0], fresh[0], fresh[2])):
        assert all(torch.equal(a, b) for a, b in zip(call, expected))
    longer = torch.randn(1, 2, 64, 8, generator=g)
    count, indices = op(longer, longer, 0.3, None, 16, 16, None, None, slot, 2)  # call 4: another N, fresh
    assert indices.shape == (1, 2, 4, 4)
    assert torch.Tag.cudagraph_unsafe in op.default.tags
    with pytest.raises(ValueError, match="every must be a positive int"):
        estimate(keep=0.3, every=0)


def test_explain_names_the_reuse_and_the_estimators_implementation(monkeypatch):
    plan = estimate(keep=0.5, block_size=(16, 16), every=4)
    report = jointattn.explain(Stack(depth=1), *_inputs(), sparsity=plan)
    assert "every=4" in report.sparsity[0] and "re-estimated every 4 calls" in report.sparsity[0]
    assert "decided at run time by the torch path" in report.sparsity[0]  # CPU tensors
    monkeypatch.setenv("JOINTATTN_ESTIMATOR", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the kernels run on CPU tensors only in the interpreter
    report = jointattn.explain(Stack(depth=1), *_inputs(), sparsity=plan)
    assert "decided at run time by the Triton kernels" in report.sparsity[0]


@pytest.mark.parametrize("inner", ["eager", "inductor"])
def test_the_first_calls_of_each_layer_run_dense(inner):
    """Sparsity(..., dense_calls=2): calls 1 and 2 equal the dense model, call 3 the masked one; training
    through a dense call and a sparse call matches eager gradients with the same masks."""
    torch.manual_seed(6)
    model = Stack(depth=2)
    pattern = frame_window(10, 1, causal=False)
    sparsity = Sparsity(pattern, block_size=(16, 16), dense_calls=2)
    compiled = torch.compile(model, backend="jointattn", options={"sparsity": sparsity, "inner": inner})
    mask = _joint_mask(pattern.dense(N))
    for call, seed in enumerate((20, 21, 22, 23)):
        inputs = [t.requires_grad_() for t in _inputs(seed)]
        got = compiled(*inputs)
        ref_inputs = [t.detach().clone().requires_grad_() for t in inputs]
        want = _reference(model, [None, None] if call < 2 else [mask, mask], ref_inputs)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
        if call in (1, 2):  # the last dense call and the first sparse one, trained through
            grads = torch.autograd.grad(sum(o.square().sum() for o in got), inputs)
            ref_grads = torch.autograd.grad(sum(o.square().sum() for o in want), ref_inputs)
            for g, w in zip(grads, ref_grads):
                torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    dense_out = _reference(model, [None, None], _inputs(23))
    assert (got[0] - dense_out[0]).abs().max() > 1e-3  # the mask matters at this size


def test_dense_calls_are_named_and_checked():
    report = jointattn.explain(
        Stack(depth=1), *_inputs(), sparsity=Sparsity(frame_window(8, 2), block_size=(16, 16), dense_calls=3)
    )
    assert "dense for its first 3 calls" in report.sparsity[0]
    with pytest.raises(ValueError, match="dense_calls must be an int >= 0"):
        Sparsity(frame_window(8, 2), dense_calls=-1)
    assert Sparsity.of({"mask": frame_window(8, 2), "dense_calls": 1}).dense_calls == 1
