"""The device calls joint attention lowers to, with the configuration the runtime would choose, shared by the
plain and the masked lowering (`lower_joint_attention.py`, `lower_masked.py`).

Entry point: `target_call(target, tensors, scale, logical_n, logical_l) -> Operation` (not inserted):
- "ttnn": `ttnn.joint_scaled_dot_product_attention`, the program config's chunk sizes from
  `jointattn.runtime.ttnn.config.sdpa_chunk_sizes(N, L, dh, b=, nh=)` and the compute-kernel settings of
  `config.current()` (the choices the ttnn runtime makes at run time, now visible in the IR);
- "triton": `jointattn_triton.launch_forward` with `jointattn.kernels.configs.forward_launch_config(dh, dtype,
  N, L)` as its launch config;
- "ttlang": `jointattn_ttlang.joint_attention` with the chunk sizes (tiles), grid and ring size of
  `jointattn.runtime.ttlang.config` (`chunk_sizes(N, L, dh, b=, nh=, dtype=)`).
Also `joint_sizes(q, joint_q)` (b, nh, N, L, dh, or why they are not known), `resolved_scale`, and
`unsupported_by_target(target, q)`: the target runtime's own limits (the Triton kernels' dtypes and head dims,
`runtime/triton_runtime.py`), checked before anything is rewritten.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.ir import Operation, SSAValue

from .dialects.jointattn_triton import LaunchConfigAttr, LaunchForwardOp
from .dialects.jointattn_ttlang import TtlangConfigAttr, TtlangJointAttentionOp
from .dialects.torch_types import DYNAMIC, torch_dtype
from .dialects.ttnn import ComputeKernelConfigAttr, JointSDPAOp, SDPAProgramConfigAttr
from .ir_values import const_float, is_none, shape_of

TARGETS = ("ttnn", "triton", "ttlang")


def joint_sizes(q: SSAValue, joint_q: SSAValue) -> tuple[int, int, int, int, int] | str:
    b, nh, n, dh = shape_of(q)
    l = shape_of(joint_q)[2]  # noqa: E741
    if DYNAMIC in (b, nh, n, dh, l):
        return f"sizes must be known at compile time to choose a device config; got {q.type}, {joint_q.type}"
    return b, nh, n, l, dh


def resolved_scale(scale: SSAValue, q: SSAValue) -> float | str:
    """The float scale of an operator-form op's `scale` operand (none: SDPA's 1/sqrt(dh)), or why not known."""
    if is_none(scale):
        dh = shape_of(q)[3]
        return "the default scale needs a head dim known at compile time" if dh == DYNAMIC else dh**-0.5
    value = const_float(scale)
    return "scale is computed at run time (the lowering needs a constant)" if value is None else value


def unsupported_by_target(target: str, q: SSAValue) -> str | None:
    """Why `target`'s kernels cannot take a joint attention on `q` (its dtype, its head dim), or None. `q`'s
    sizes are known (`joint_sizes` passed). The Triton kernels' limits are the dispatcher's
    (`jointattn.runtime.dispatch`), asked for a CUDA GPU."""
    if target != "triton":
        return None
    from jointattn.runtime.dispatch import planned_problem, unsupported

    element_type = q.type.element_type
    try:
        dtype = torch_dtype(element_type)
    except ValueError:
        return f"the Triton kernels take float16, bfloat16 or float32; got {element_type}"
    b, nh, n, dh = shape_of(q)
    return unsupported("triton", planned_problem(dtype, b, nh, n, 0, dh))


def target_call(
    target: str,
    tensors: Sequence[SSAValue],
    scale: float,
    logical_n: SSAValue | None,
    logical_l: SSAValue | None,
    *,
    gpu: str = "sm_90",
) -> Operation:
    """The `target`'s joint-attention call on `tensors` (q, k, v, joint_q, joint_k, joint_v); for "triton" with the
    kernel the dispatcher plans on a GPU of architecture `gpu` (`triton_choice`)."""
    if target == "ttnn":
        return _ttnn_joint_sdpa(tensors, scale, logical_n, logical_l)
    if target == "ttlang":
        return _ttlang_joint_attention(tensors, scale, logical_n, logical_l)
    return _triton_launch(tensors, scale, logical_n, logical_l, gpu)


def _ttnn_joint_sdpa(tensors, scale, logical_n, logical_l) -> JointSDPAOp:
    from jointattn.runtime.ttnn import config

    b, nh, n, l, dh = joint_sizes(tensors[0], tensors[3])  # noqa: E741
    q_chunk, k_chunk = config.sdpa_chunk_sizes(n, l, dh, b=b, nh=nh)
    settings = config.current()
    return JointSDPAOp(
        tensors,
        scale=scale,
        program_config=SDPAProgramConfigAttr(q_chunk, k_chunk, settings.exp_approx_mode),
        compute_kernel_config=ComputeKernelConfigAttr(
            settings.math_fidelity,
            settings.math_approx_mode,
            settings.fp32_dest_acc_en,
            settings.packer_l1_acc,
        ),
        logical_n=logical_n,
        logical_l=logical_l,
    )


def triton_choice(tensors, logical_n, logical_l, gpu: str = "sm_90", scale: float = 1.0):
    """The dispatcher's choice (`jointattn.runtime.dispatch`) among the NVIDIA paths for this attention's types
    and sizes on a GPU of architecture `gpu`: the same answer the runtime gives a call of those sizes there."""
    from jointattn.runtime.dispatch import Problem, choose, planned_problem

    b, nh, n, l, dh = joint_sizes(tensors[0], tensors[3])  # noqa: E741
    dtype = torch_dtype(tensors[0].type.element_type)
    problem = planned_problem(
        dtype, b, nh, n, l, dh, arch=gpu, padded=logical_n is not None or logical_l is not None
    )
    problem = Problem(**{**problem.__dict__, "positive_scale": scale > 0})
    return choose(problem, allowed=("hopper", "triton", "sdpa"))


def _triton_launch(tensors, scale, logical_n, logical_l, gpu: str = "sm_90") -> LaunchForwardOp:
    from jointattn.kernels.configs import forward_launch_config

    _, _, n, l, dh = joint_sizes(tensors[0], tensors[3])  # noqa: E741
    chosen = forward_launch_config(dh, torch_dtype(tensors[0].type.element_type), n, l)
    return LaunchForwardOp(
        tensors,
        scale=scale,
        config=LaunchConfigAttr(chosen.block_m, chosen.block_n, chosen.num_warps, chosen.num_stages),
        kernel=triton_choice(tensors, logical_n, logical_l, gpu, scale).path,
        logical_n=logical_n,
        logical_l=logical_l,
    )


def _ttlang_joint_attention(tensors, scale, logical_n, logical_l) -> TtlangJointAttentionOp:
    from jointattn.runtime.ttlang import config

    b, nh, n, l, dh = joint_sizes(tensors[0], tensors[3])  # noqa: E741
    dtype = config.device_dtype(torch_dtype(tensors[0].type.element_type))
    q_chunk, k_chunk = config.chunk_sizes(n, l, dh, b=b, nh=nh, dtype=dtype)
    settings = config.current()
    return TtlangJointAttentionOp(
        tensors,
        scale=scale,
        config=TtlangConfigAttr(q_chunk, k_chunk, *settings.grid, settings.ring_size),
        logical_n=logical_n,
        logical_l=logical_l,
    )
