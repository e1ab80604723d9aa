"""The FX fusion pass on hand-written blocks: every form real code writes is fused, everything that is not
joint attention is left alone, and the compiled block computes what eager computes.

Each case is a plain module, most of them from tests/joint_cases.py (the forms the MLIR pass is checked on
too); `run_case` compiles it with the backend (eager inner compiler: this file tests the pass;
test_backend.py covers inductor), counts `jointattn::joint_attention` calls with the profiler, and compares
with eager on fresh random inputs.
"""

import pytest
import torch
from helpers import count_op_calls, fx_fused_graph
from joint_cases import (
    FUSED,
    MASKS_NOT_PADDING,
    NOT_JOINT,
    BoolPrefixMask,
    FluxRope,
    L,
    MaskInput,
    N,
    TextFirstNegativeDimSplit,
    as_additive,
    as_bool,
    cat_inputs,
    prefix_valid,
    rope_inputs,
)


def run_case(module, inputs, *, fused, op="jointattn::joint_attention", dynamic=None):
    from jointattn.compiler.backend import REPORTS

    compiled = torch.compile(module, backend="jointattn", options={"inner": "eager"}, dynamic=dynamic)
    expected = module(*inputs)
    compiled(*inputs)  # compile outside the profiler
    got, calls = count_op_calls(compiled, *inputs, op=op)
    assert calls == fused, f"{calls} {op} calls, expected {fused}\n{REPORTS[-1]}"
    for e, g in zip(
        expected if isinstance(expected, tuple) else (expected,), got if isinstance(got, tuple) else (got,)
    ):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    return REPORTS[-1]


# --- forms that are joint attention (tests/joint_cases.py) --------------------------------------------


@pytest.mark.parametrize("case", list(FUSED))
def test_fused(case):
    block, inputs = FUSED[case]
    report = run_case(block(), inputs(), fused=1)
    assert report.fused == 1


def test_flux_rope_leaves_no_concat_and_no_whole_sequence_rope():
    """The concat moved below RoPE and vanished: RoPE now runs per token set on slices of cos/sin."""
    gm, _, _ = fx_fused_graph(FluxRope(), rope_inputs())
    targets = [n.target for n in gm.graph.nodes if n.op in ("call_function", "call_method")]
    assert torch.cat not in targets, targets
    assert targets.count("unbind") == 4  # q and k, each per token set


def test_text_first_outputs_come_back_in_model_order():
    report = run_case(TextFirstNegativeDimSplit(), cat_inputs(), fused=1)
    assert "text-first" in str(report)


# --- key-padding masks -------------------------------------------------------------------------------


def test_proven_prefix_mask_becomes_valid_lengths():
    report = run_case(BoolPrefixMask(), (*cat_inputs(), torch.tensor([3, 0])), fused=1)
    assert "valid lengths proven" in str(report)


def _padding_mask(image_lengths, text_lengths, additive, prefix=True):
    valid = prefix_valid(image_lengths, text_lengths)
    if not prefix:
        valid[:, N + 1] = False  # a hole inside the text tokens
        valid[:, N] = True
    return as_additive(valid) if additive else as_bool(valid)


@pytest.mark.parametrize("additive", [False, True], ids=["bool", "additive"])
def test_prefix_mask_input_checked_at_run_time_uses_the_lengths(additive):
    mask = _padding_mask([N, 9], [2, L], additive)
    run_case(MaskInput(), (*cat_inputs(), mask), fused=1, op="jointattn::masked_joint_attention")
    compiled = torch.compile(MaskInput(), backend="jointattn", options={"inner": "eager"})
    compiled(*cat_inputs(), mask)
    _, inner_calls = count_op_calls(compiled, *cat_inputs(), mask)
    assert inner_calls == 1  # the prefix check passed: the length-based op ran


def test_non_prefix_mask_takes_the_exact_path():
    mask = _padding_mask([N, 9], [3, L], additive=False, prefix=False)
    run_case(MaskInput(), (*cat_inputs(), mask), fused=1, op="jointattn::masked_joint_attention")
    compiled = torch.compile(MaskInput(), backend="jointattn", options={"inner": "eager"})
    compiled(*cat_inputs(), mask)
    _, inner_calls = count_op_calls(compiled, *cat_inputs(), mask)
    assert inner_calls == 0


# --- what is not joint attention ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "module,extra,reason",
    [
        *((block(), (), reason) for block, reason in NOT_JOINT.values()),
        *((MaskInput(), (mask(),), reason) for mask, reason in MASKS_NOT_PADDING.values()),
    ],
    ids=[*NOT_JOINT, *MASKS_NOT_PADDING],
)
def test_not_fused(module, extra, reason):
    from jointattn.compiler.backend import REPORTS

    inputs = (*cat_inputs(), *extra)
    compiled = torch.compile(module, backend="jointattn", options={"inner": "eager"})
    compiled(*inputs)
    got, calls = count_op_calls(compiled, *inputs)
    assert calls == 0
    assert reason in str(REPORTS[-1]), str(REPORTS[-1])
    if "dropout" not in reason:  # dropout draws random numbers: nothing to compare
        want = module(*inputs)
        for g, w in zip(
            got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)
        ):
            torch.testing.assert_close(g, w)
