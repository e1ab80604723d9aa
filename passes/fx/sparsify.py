"""The sparsity pass: fused joint attentions -> `jointattn::block_sparse_joint_attention`, per a `Sparsity`
plan (`jointattn.sparse.plan`), after the fusion pass has run on the same graph.

Entry point: `apply_sparsity(gm, sparsity) -> list[str]`, one line per layer (each fused
`jointattn::joint_attention` in graph order) saying what it became and why. A pattern's layout is built here,
once, for the layer's static N on the layer's device, and reaches the graph through a
`jointattn::layout_constant` call (AOTAutograd's fake tracing takes no real tensor constants); an estimate
becomes a `jointattn::estimate_kv_blocks` call on the layer's q and k whose outputs are the op's full-block
lists (`estimate_kv_blocks_reused`, with a slot of its own per layer, for `estimate(..., every=k)`). With
`dense_calls`, a `jointattn::dense_calls_flag` per layer counts its calls and tells the sparse op to run the
first ones dense. A layer stays dense, with the reason, when it is excluded by the plan or when N is symbolic
(a pattern needs it at compile time). A layer whose key mask is checked at run time (`masked_joint_attention`, Mochi's)
goes sparse with the checked lengths; `jointattn::prefix_lengths` refuses, at run time, a mask that is not
prefix padding (the dense op would have run the exact masked path).
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from ...runtime import ops
from ...runtime.sparse_layout import spatial_layout
from .nodes import GraphBuilder, fake_mode_of, shape, tensor_val


def apply_sparsity(gm: fx.GraphModule, sparsity) -> list[str]:
    from ...sparse.estimate import Estimate
    from ...sparse.plan import Sparsity

    plan = Sparsity.of(sparsity)
    graph = gm.graph
    build = GraphBuilder(graph, fake_mode_of(graph))
    lines = []
    layer = 0
    for node in list(graph.nodes):
        masked = node.target is ops.MASKED_JOINT_ATTENTION
        if node.target is not ops.JOINT_ATTENTION and not masked:
            continue
        index, layer = layer, layer + 1
        reason = plan.why_dense(index)
        n, l = shape(node.args[0])[2], shape(node.args[3])[2]  # noqa: E741
        if reason is None and not isinstance(plan.mask, Estimate) and not isinstance(n, int):
            reason = f"N is symbolic ({n}); a pattern's mask is built for a static N"
        if reason is None:
            reason = _spatial_unclear(n, l, plan.spatial_tokens)
        if reason is None and not isinstance(plan.mask, Estimate) and plan.mask.check_n is not None:
            try:
                plan.mask.check_n(n)
            except ValueError as e:
                reason = str(e)
        if reason is not None:
            lines.append(f"layer {index}: {node.name}: dense ({reason})")
            continue
        with graph.inserting_before(node):
            if masked:  # a run-time-checked key mask: its lengths, refused at run time unless a prefix
                q, k, v, jq, jk, jv, _mask, _joint_mask, lengths_n, lengths_l, is_prefix, scale, runtime = (
                    node.args
                )
                checked = build.call(ops.PREFIX_LENGTHS, (lengths_n, lengths_l, is_prefix))
                valid_n = build.call(operator.getitem, (checked, 0))
                valid_l = build.call(operator.getitem, (checked, 1))
            else:
                q, k, v, jq, jk, jv, _strategy, scale, valid_n, valid_l, runtime = node.args
            if isinstance(plan.mask, Estimate):
                layout_args = _estimated_layout(build, node, plan.mask, valid_n)
                kept = f"decided at run time by {_estimator_name(q, plan.mask)}" + (
                    f", re-estimated every {plan.mask.every} calls" if plan.mask.every > 1 else ""
                )
            else:
                layout_args, kept = _pattern_layout(build, node, plan, n)
            dense_now = ()
            if plan.dense_calls:  # this layer's first calls dense: a per-layer counter decides at run time
                from ...runtime.ops.sparse_schedule import new_dense_calls_slot

                dense_now = (build.call(ops.DENSE_CALLS_FLAG, (q, new_dense_calls_slot(), plan.dense_calls)),)
            args = (q, k, v, jq, jk, jv, *layout_args, scale, valid_n, valid_l, _sparse_runtime(runtime))
            sparse = build.call(ops.BLOCK_SPARSE_JOINT_ATTENTION, (*args, *dense_now))
        node.replace_all_uses_with(sparse)
        graph.erase_node(node)
        runs = (
            ""
            if runtime in ("auto", "reference", "triton")
            else f"; runtime {runtime!r} has no sparse op: auto"
        )
        first = f"; dense for its first {plan.dense_calls} calls" if plan.dense_calls else ""
        lines.append(
            f"layer {index}: {node.name}: {plan.mask.name} over the {n} spatial tokens (the other set has {l}), "
            f"spatial key blocks kept: {kept}{first}{runs}"
        )
    graph.lint()
    gm.recompile()
    return lines


def _spatial_unclear(n, l, spatial_tokens) -> str | None:  # noqa: E741
    """Why the op's spatial set (the fusion took the longer token set) may not be the image, or None."""
    if spatial_tokens is not None:
        if n == spatial_tokens:
            return None
        return (
            f"the op's spatial set has {n} tokens, not spatial_tokens={spatial_tokens} (the fusion takes the longer "
            "token set as spatial)"
        )
    # Without the count, only a spatial set at least twice the other's length is taken as the image: video and
    # large images (Mochi 44520 vs 256, SD3.5 4096 vs 333) pass; where the prompt is about as long as the image
    # (SD3 at 256², 256 image vs 333 text tokens) the longer set may be the text, and the layer stays dense.
    if not (isinstance(n, int) and isinstance(l, int)) or n < 2 * l:
        return (
            f"token sets of {n} and {l}: which one is spatial is not clear from the lengths; name it with "
            "Sparsity(..., spatial_tokens=N)"
        )
    return None


def _sparse_runtime(runtime: str) -> str:
    """The sparse op's runtimes are auto, reference and triton; a fused op's other names run as "auto"."""
    return runtime if runtime in ("auto", "reference", "triton") else "auto"


def _pattern_layout(build: GraphBuilder, node: fx.Node, plan, n: int):
    from ...runtime.ops.sparse import register_layout

    q = node.args[0]
    device = tensor_val(q).device
    layout = spatial_layout(plan.mask.block_mask(n, device=device, block_size=plan.block_size), n, device)
    found = build.call(ops.LAYOUT_CONSTANT, (register_layout(layout), q))
    nodes = [build.call(operator.getitem, (found, i)) for i in range(5)]
    return (*nodes, layout.q_block, layout.kv_block), f"{layout.kept_fraction(n):.1%}"


def _estimator_name(q: fx.Node, estimate) -> str:
    """Which implementation estimates this layer's mask, as `sparse_estimate.estimator_kernels` picks it now (the
    device and N of the traced q; JOINTATTN_ESTIMATOR as set at compile time)."""
    from ...runtime.sparse_estimate import estimator_kernels

    q_val = tensor_val(q)
    if not isinstance(q_val.shape[2], int):
        return "the torch path or the Triton kernels (N is symbolic)"
    kernels = estimator_kernels(q_val, estimate.block_size[1])
    return "the Triton kernels" if kernels == "triton" else "the torch path"


def _estimated_layout(build: GraphBuilder, node: fx.Node, estimate, valid_n):
    """The estimator's op on the layer's q and k (keys past `valid_n` left out), as the sparse op's lists."""
    q, k = node.args[0], node.args[1]
    n = shape(q)[2]
    q_block, kv_block = estimate.block_size
    scale = node.args[11] if node.target is ops.MASKED_JOINT_ATTENTION else node.args[7]
    args = (q, k, estimate.keep, estimate.cdf, q_block, kv_block, scale, valid_n)
    if estimate.every > 1:  # re-estimated every few calls of this layer, reused in between
        from ...runtime.ops.sparse_schedule import new_estimate_slot

        found = build.call(ops.ESTIMATE_KV_BLOCKS_REUSED, (*args, new_estimate_slot(), estimate.every))
    else:
        found = build.call(ops.ESTIMATE_KV_BLOCKS, args)
    count = build.call(operator.getitem, (found, 0))
    indices = build.call(operator.getitem, (found, 1))
    # No partial blocks: one empty list and no bits (P = 0), [1, 1, QBn, ...] (broadcast over batch and heads).
    qbn = (
        build.call(operator.floordiv, (build.add(n, q_block - 1), q_block))
        if not isinstance(n, int)
        else -(-n // q_block)
    )
    device = tensor_val(q).device
    words = -(-kv_block // 32)
    zeros = lambda *size: build.call(torch.zeros, size, {"dtype": torch.int32, "device": device})
    empty_num = zeros(1, 1, qbn)
    empty_idx = zeros(1, 1, qbn, 1)
    empty_bits = zeros(1, 1, qbn, 0, q_block, words)
    return (empty_num, empty_idx, count, indices, empty_bits, q_block, kv_block)
