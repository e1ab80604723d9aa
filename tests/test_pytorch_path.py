"""The FX pass leaves a joint attention to the original graph where the dispatcher would run it as cat -> SDPA ->
slice anyway (`passes/fx/pytorch_path.py`): the forward must measure "sdpa" fastest, and a training graph's
forward + backward must (`dispatch.choose_training`)."""

import pytest
import torch
import torch.nn.functional as F
from helpers import fx_fused_graph, joint_inputs
from jointattn.passes.fx import pytorch_path
from jointattn.runtime import dispatch
from jointattn.runtime.dispatch import planned_problem

import jointattn

B, H, N, L, D = 2, 4, 24, 7, 16


def joint(q, k, v, jq, jk, jv):
    o = F.scaled_dot_product_attention(torch.cat([q, jq], 2), torch.cat([k, jk], 2), torch.cat([v, jv], 2))
    return o[:, :, :N], o[:, :, N:]


@pytest.fixture
def measured_gpu(monkeypatch):
    """The pass plans as on an sm_90 GPU whose table holds `rows` (CPU fake tensors stand in for CUDA ones)."""
    rows = []
    monkeypatch.setattr(dispatch, "_table", lambda: {"rows": rows})
    monkeypatch.setattr(
        pytorch_path,
        "_problem",
        lambda q, jq, padded: planned_problem(
            torch.bfloat16, *q.shape[:3], jq.shape[2], q.shape[3], padded=padded
        ),
    )
    dispatch.reload_measurements()
    yield rows
    dispatch.reload_measurements()


def _row(pass_, **ms):
    return {"arch": "sm_90", "dtype": "bfloat16", "dh": D, "b_nh": B * H, "n": N, "l": L, "padded": False,
            "ms": ms, "pass": pass_}  # fmt: skip


def _decisions(requires_grad):
    inputs = joint_inputs(B, H, N, L, D, seed=3, requires_grad=requires_grad)
    torch._dynamo.reset()
    _, _, report = fx_fused_graph(joint, inputs)
    return report.decisions


def test_kept_where_sdpa_is_measured_fastest_for_every_pass_the_call_runs(measured_gpu):
    measured_gpu += [_row("forward", sdpa=0.1, triton=0.2), _row("backward", sdpa=0.5, triton=0.3)]
    (inference,) = _decisions(requires_grad=False)
    assert not inference.fused and inference.reason.startswith("left to PyTorch")
    assert "forward: fastest measured on sm_90" in inference.reason
    (training,) = _decisions(requires_grad=True)
    assert training.fused, "the Triton backward is faster here: the op runs it"


def test_training_kept_when_both_passes_pick_sdpa(measured_gpu):
    measured_gpu += [_row("forward", sdpa=0.1, triton=0.2), _row("backward", sdpa=0.3, triton=0.5)]
    (training,) = _decisions(requires_grad=True)
    assert not training.fused and "forward + backward: both passes pick sdpa" in training.reason


def test_training_kept_where_the_unfused_graph_wins_the_step_though_our_forward_wins_its_pass(measured_gpu):
    """The forward picks Triton, the backward SDPA; the op's sdpa backward joins the sets again, which the
    unfused graph (measured over forward + backward) does not: 1.0 ms against 0.2 + 0.9 (a compiled graph has
    no op layers at run time)."""
    measured_gpu += [_row("forward", sdpa=0.3, triton=0.2), _row("backward", sdpa=0.9, triton=1.5)]
    measured_gpu += [_row("fwd+bwd", sdpa=1.0)]
    (training,) = _decisions(requires_grad=True)
    assert not training.fused
    assert "forward + backward estimated 1.000 ms as the unfused graph" in training.reason
    assert "vs 1.100 through the op (triton 0.200 + sdpa 0.900 + its layers 0.0)" in training.reason
    (inference,) = _decisions(requires_grad=False)
    assert inference.fused, "without a backward our forward is the faster"
    measured_gpu[-1] = _row("fwd+bwd", sdpa=1.15)  # 0.05 of joins: now the op's 1.1 wins the step...
    dispatch.reload_measurements()
    (training,) = _decisions(requires_grad=True)
    assert not training.fused and "join the token sets again" in training.reason  # ...on the sdpa backward
    measured_gpu[1] = _row("backward", sdpa=0.9, triton=0.85)  # the op on its own backward: fused
    dispatch.reload_measurements()
    (training,) = _decisions(requires_grad=True)
    assert training.fused, training.reason


def test_a_training_graph_keeps_its_attention_where_the_backward_would_be_pytorchs(measured_gpu):
    """Our forward, then the sdpa backward, in a compiled training graph: the original graph stays (measured
    slower fused, `pytorch_path._sdpa_backward_in_training`); inference, and training on a backward of ours, are
    fused."""
    measured_gpu += [_row("forward", sdpa=0.3, triton=0.1), _row("backward", sdpa=0.5, triton=0.9)]
    dispatch.reload_measurements()
    reason = pytorch_path._sdpa_backward_in_training(planned_problem(torch.bfloat16, B, H, N, L, D))
    assert reason is not None and "backward: fastest measured on sm_90" in reason
    (inference,) = _decisions(requires_grad=False)
    assert inference.fused
    (training,) = _decisions(requires_grad=True)
    assert not training.fused and "join the token sets again" in training.reason
    measured_gpu[1] = _row("backward", sdpa=0.5, triton=0.4)
    dispatch.reload_measurements()
    (training,) = _decisions(requires_grad=True)
    assert training.fused, training.reason


def test_fused_where_a_kernel_of_ours_is_faster_or_nothing_was_measured(measured_gpu):
    (unmeasured,) = _decisions(requires_grad=False)
    assert unmeasured.fused, "no measurement proves the PyTorch path faster"
    measured_gpu += [_row("forward", sdpa=0.3, triton=0.2)]
    (ours_faster,) = _decisions(requires_grad=False)
    assert ours_faster.fused


def test_a_named_runtime_is_never_overruled(measured_gpu):
    measured_gpu += [_row("forward", sdpa=0.1, triton=0.2)]
    from jointattn.passes.fx import fuse_joint_attention

    inputs = joint_inputs(B, H, N, L, D, seed=3)
    reports = []

    def backend(gm, example_inputs):
        reports.append(fuse_joint_attention(gm, runtime="reference"))
        return gm.forward

    torch._dynamo.reset()
    torch.compile(joint, backend=backend)(*inputs)
    assert reports[0].decisions[0].fused


def test_cpu_graphs_are_never_left_for_speed():
    (decision,) = _decisions(requires_grad=False)
    assert decision.fused


def test_an_exported_program_calls_the_op_whatever_this_gpu_measured(measured_gpu):
    """`jointattn.export` makes an artifact for other machines: it fuses where the compile backend would keep
    PyTorch's path on this one."""
    measured_gpu += [_row("forward", sdpa=0.1, triton=0.2)]
    (kept,) = _decisions(requires_grad=False)
    assert not kept.fused

    class Joint(torch.nn.Module):
        def forward(self, *inputs):
            return joint(*inputs)

    exported = jointattn.export(Joint(), tuple(joint_inputs(B, H, N, L, D, seed=3)))
    assert exported.report.fused == 1
    assert any("joint_attention" in str(n.target) for n in exported.program.graph.nodes)


def test_a_padded_attention_is_fused_even_where_the_sdpa_path_is_fastest(measured_gpu):
    """The sdpa path runs padded calls as unpad -> SDPA -> pad; the original padded graph (a key mask here) is
    not that, so the pass fuses it whatever the table says."""
    measured_gpu += [_row("forward", sdpa=0.1, triton=0.2), _row("backward", sdpa=0.1, triton=0.3)]
    measured_gpu += [dict(r, padded=True) for r in list(measured_gpu)]

    def masked(q, k, v, jq, jk, jv):
        mask = torch.ones(B, 1, 1, N + L, dtype=torch.bool)
        mask[..., N + 3 :] = False
        o = F.scaled_dot_product_attention(
            torch.cat([q, jq], 2), torch.cat([k, jk], 2), torch.cat([v, jv], 2), attn_mask=mask
        )
        return o[:, :, :N], o[:, :, N:]

    torch._dynamo.reset()
    _, _, report = fx_fused_graph(masked, joint_inputs(B, H, N, L, D, seed=3))
    (decision,) = report.decisions
    assert decision.fused, decision.reason
