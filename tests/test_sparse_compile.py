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
