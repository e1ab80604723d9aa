"""Stock diffusers models (tiny, random weights, built offline) compiled with `backend="jointattn"`.

For SD3 (RMS qk-norm, a dual-attention layer, a context_pre_only last block), Flux (text first, RoPE on the
concatenated q/k) and Mochi (per-sample nonzero/pad loop, text padding that differs per batch element):
every joint-attention layer runs as one `jointattn::joint_attention` call, the model compiles to one graph,
and the outputs equal eager's and a float64 run's. The same through `torch.export`.
"""

import pytest
import torch
from helpers import count_op_calls, rel_err
from jointattn.compiler.backend import REPORTS

import jointattn
from jointattn import model_zoo

MODELS = ["sd3", "flux", "mochi"]


@pytest.fixture(autouse=True)
def _mochi_in_one_graph():
    # The README's one line for Mochi: lets Dynamo keep `nonzero` in the graph instead of breaking there.
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        yield


def _sample(out):
    return out[0] if isinstance(out, tuple) else out.sample


@pytest.mark.parametrize("name", MODELS)
def test_every_joint_attention_fused_in_one_graph_and_exact(name):
    case = model_zoo.build(name)
    compiled = torch.compile(case.model, backend="jointattn")
    before = len(REPORTS)
    with torch.no_grad():
        eager = _sample(case.model(**case.inputs))
        compiled(**case.inputs)
        out, calls = count_op_calls(lambda: _sample(compiled(**case.inputs)))
    assert calls == case.joint_layers
    assert len(REPORTS) - before == 1, "more than one graph: a graph break"
    assert REPORTS[-1].fused == case.joint_layers, str(REPORTS[-1])
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-5)

    exact = model_zoo.build(name, dtype=torch.float64)
    with torch.no_grad():
        reference = _sample(exact.model(**exact.inputs))
    assert rel_err(out, reference) < 1e-5


def test_mochi_non_prefix_text_mask_still_matches_the_stock_code():
    """A mask with holes: the stock code gathers the valid tokens; the fused graph takes its exact path."""
    case = model_zoo.build("mochi")
    mask = torch.tensor([[1, 0, 1, 1, 0, 0, 1], [0, 1, 0, 0, 0, 0, 0]])
    inputs = {**case.inputs, "encoder_attention_mask": mask}
    compiled = torch.compile(case.model, backend="jointattn")
    with torch.no_grad():
        compiled(**case.inputs)
        torch.testing.assert_close(
            _sample(compiled(**inputs)), _sample(case.model(**inputs)), rtol=1e-4, atol=1e-5
        )


def test_mochi_runs_the_length_based_op_for_tokenizer_style_padding():
    case = model_zoo.build("mochi")
    compiled = torch.compile(case.model, backend="jointattn")
    with torch.no_grad():
        compiled(**case.inputs)
        _, checked = count_op_calls(lambda: compiled(**case.inputs), op="jointattn::masked_joint_attention")
        _, nonzero = count_op_calls(lambda: compiled(**case.inputs), op="aten::nonzero")
    assert checked == case.joint_layers
    assert nonzero == 0, "the per-sample gather is gone"


@pytest.mark.parametrize("name", MODELS)
def test_export_carries_the_fused_op(name):
    case = model_zoo.build(name)
    fused = jointattn.export(case.model, (), case.inputs)
    ops = (torch.ops.jointattn.joint_attention.default, torch.ops.jointattn.masked_joint_attention.default)
    calls = sum(n.target in ops for n in fused.program.graph.nodes)
    assert calls == case.joint_layers
    with torch.no_grad():
        torch.testing.assert_close(
            _sample(fused.program.module()(**case.inputs)),
            _sample(case.model(**case.inputs)),
            rtol=1e-4,
            atol=1e-5,
        )


def test_fine_tuning_through_the_compiled_model():
    """Gradients of a compiled SD3 match eager: the op's backward is what AOTAutograd uses."""
    case = model_zoo.build("sd3")
    model = case.model.train()
    compiled = torch.compile(model, backend="jointattn")
    grads = []
    for fn in (model, compiled):
        model.zero_grad()
        _sample(fn(**case.inputs)).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-3, atol=1e-5, msg=name)
