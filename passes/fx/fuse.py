"""The FX fusion pass: cat -> scaled_dot_product_attention -> split  ==>  jointattn::joint_attention.

Entry point: `fuse_joint_attention(gm, runtime="auto") -> FusionReport`. It sees Dynamo's torch-level graph
(inside the `jointattn` torch.compile backend, before AOTAutograd, so the op's own autograd formula is used
for training) and equally ATen graphs such as `torch.export`'s; `nodes.op_name` hides the difference.

For each SDPA:
1. the SDPA flags and shapes are checked against the shared rules (`passes/rules.py`);
2. q, k and v are resolved into their two token sets (`parts.PartResolver`: through RoPE, casts, views);
3. a mask, if any, must be a key-padding mask; per token set it becomes nothing, proven valid lengths, or
   a run-time-checked mask (`masks.py`);
4. the output's consumers are followed to the slices/splits that take the token sets back out; a range that
   crosses the boundary refuses the fusion (`parts.plan_outputs`);
5. where the dispatcher would run the call as PyTorch's SDPA anyway (small sizes on a measured GPU), the
   original graph is kept (`pytorch_path.py`);
6. the op is inserted, each consumer gets its part directly, and whatever still wants the whole sequence gets
   a concat of the two outputs. Nodes this leaves dead are removed; nothing else in the graph is touched.
Each SDPA gets a `Decision` (`passes/decisions.py`, shared with the MLIR pass, which prints the same sentences).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx

from ...runtime import ops  # the ops this pass emits
from ..decisions import CHECKED_MASK, NO_PADDING, PROVEN_LENGTHS, Decision, FusionReport, summarize
from ..rules import (
    refuse_key_mask_shape,
    refuse_mask_constant_over_keys,
    refuse_part_lengths,
    refuse_sdpa_flags,
    refuse_shapes,
    spatial_part,
)
from .axes import TUPLE_PRODUCERS, handler_for
from .masks import KeyPadding, classify
from .mutations import MutationGuard, original_inputs
from .nodes import GraphBuilder, arg, fake_mode_of, op_name, same, shape, tensor_val, val
from .parts import CAT_NAMES, OutputPlan, PartResolver, Parts, fold_concat, is_metadata_assert, plan_outputs
from .pytorch_path import left_to_pytorch
from .ranges import SPLITS
from .unpad import drop_unbacked_asserts, find_unpad_loops, loop_attentions, rewrite_unpad_loop

SEQ = 2  # the sequence dim of SDPA's [b, nh, S, dh] inputs


@dataclass(frozen=True)
class SdpaCall:
    query: fx.Node
    key: fx.Node
    value: fx.Node
    attn_mask: object
    dropout_p: object
    is_causal: object
    scale: object
    enable_gqa: object


def sdpa_call(node: fx.Node) -> SdpaCall:
    """SDPA's arguments, positional or keyword, at either IR level (same parameter order)."""
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    defaults = (None, None, None, None, 0.0, False, None, False)
    return SdpaCall(*(arg(node, i, n, d) for i, (n, d) in enumerate(zip(names, defaults))))


class _Refused(Exception):
    pass


def fuse_joint_attention(
    gm: fx.GraphModule, *, runtime: str = "auto", keep_pytorch_paths: bool = True
) -> FusionReport:
    """Replaces every joint attention in `gm` with `jointattn::joint_attention`; returns what it decided.

    keep_pytorch_paths=False fuses also where the dispatcher would run PyTorch's SDPA anyway (step 5): the
    sparsity pass needs the op to make a layer sparse, and an exported program is for other machines."""
    graph = gm.graph
    build = GraphBuilder(graph, fake_mode_of(graph))
    resolver = PartResolver(build)
    report = FusionReport()
    guard = MutationGuard(graph)
    unpadded, kept_loops = {}, {}
    shared_masks = {}
    for loop in find_unpad_loops(graph):
        hazard = _unpad_hazard(guard, loop)
        if hazard is not None:
            kept_loops.update({sdpa: hazard for sdpa in loop_attentions(loop)})
            continue
        sdpa, rejoined = rewrite_unpad_loop(build, loop, shared_masks)
        unpadded[sdpa] = rejoined
        _prune(graph, [loop.batch_cat, *drop_unbacked_asserts(graph, loop)])
    for node in list(graph.nodes):
        if op_name(node) == "scaled_dot_product_attention":
            try:
                decision = _fuse(node, resolver, runtime, guard, keep_pytorch_paths)
            except _Refused as e:
                decision = Decision(node.name, False, str(e))
            if node in unpadded:
                note = "per-sample nonzero/pad loop read as key padding"
            elif node in kept_loops:
                note = f"per-sample nonzero/pad loop left as it is: {kept_loops[node]}"
            else:
                note = None
            if note is not None:
                decision = Decision(decision.node, decision.fused, f"{note}; {decision.reason}")
            report.decisions.append(decision)
    for rejoined in unpadded.values():
        _prune(graph, fold_concat(rejoined, SEQ, resolver))
    _prune(graph, build.created)
    graph.lint()
    gm.recompile()
    return report


def _check(reason: str | None, prefix: str = "") -> None:
    if reason is not None:
        raise _Refused(prefix + reason)


def _unpad_hazard(guard: MutationGuard, loop) -> str | None:
    """The loop's rewrite reads its full-batch sources at the batch cat and hands the cat's range users the
    new result's parts: both must be invisible to in-place writes."""
    s = loop.sample
    reads = {*s.dense, *s.gathered, s.mask}
    mutation = guard.writes_to_family(loop.batch_cat)
    if mutation is not None:
        return f"{mutation.describe(loop.batch_cat)}"
    return guard.input_hazard(reads, [loop.batch_cat], loop.batch_cat)


def _fuse(
    node: fx.Node, resolver: PartResolver, runtime: str, guard: MutationGuard, keep_pytorch_paths: bool = True
) -> Decision:
    build = resolver.build
    call = sdpa_call(node)
    _check(
        refuse_sdpa_flags(
            dropout_p=val(call.dropout_p),
            is_causal=val(call.is_causal),
            enable_gqa=val(call.enable_gqa),
            has_scale_node=isinstance(call.scale, fx.Node),
        )
    )
    q_shape, k_shape, v_shape = shape(call.query), shape(call.key), shape(call.value)
    _check(refuse_shapes(q_shape, k_shape, v_shape))
    sets = {}
    for name, x in (("q", call.query), ("k", call.key), ("v", call.value)):
        resolved = resolver.resolve(x, SEQ)
        _check(resolved if isinstance(resolved, str) else None, f"{name} is not a concat of token sets: ")
        sets[name] = resolved
    _check(refuse_part_lengths(sets["q"].lengths, sets["k"].lengths, sets["v"].lengths))
    lengths = sets["q"].lengths
    padding = _key_padding(node, call.attn_mask, sets["k"], q_shape, resolver)
    plan = plan_outputs(node, SEQ, lengths)
    _check(plan if isinstance(plan, str) else None, "outputs: ")

    spatial = spatial_part(lengths)
    joint = 1 - spatial
    token_sets = [sets[name].nodes[part] for part in (spatial, joint) for name in ("q", "k", "v")]
    if keep_pytorch_paths:
        _check(left_to_pytorch(token_sets, _padding_summary(padding) != NO_PADDING, runtime))

    with build.graph.inserting_before(node):
        op = _insert_op(
            build, sets, spatial, joint, padding, call.scale, runtime, lengths, resolver.padding_checks
        )
        _check(_mutation_hazard(guard, op, node, call, plan, build))
        parts = [None, None]
        parts[spatial] = build.call(operator.getitem, (op, 0))
        parts[joint] = build.call(operator.getitem, (op, 1))
        whole = build.call(torch.cat, ([parts[0], parts[1]],), {"dim": SEQ})
    node.replace_all_uses_with(whole)
    bypassed = fold_concat(whole, SEQ, resolver)
    _prune(build.graph, [*bypassed, node])  # consumers handed their part; the SDPA and what only fed it
    rejoined = len(whole.users)
    _prune(build.graph, [whole])
    return Decision(
        node.name, True, summarize(lengths, spatial, _padding_summary(padding), plan.parts_used, rejoined)
    )


def _mutation_hazard(guard: MutationGuard, op, sdpa, call: SdpaCall, plan: OutputPlan, build) -> str | None:
    """Why in-place work in the graph would see other values once `op` replaces `sdpa` (see mutations.py)."""
    reads = original_inputs(op, set(build.created))
    replaced = [x for x in (call.query, call.key, call.value, call.attn_mask) if isinstance(x, fx.Node)]
    chain = [user for users in plan.chains.values() for user, _ in users]
    return guard.input_hazard(reads, replaced, sdpa) or guard.output_hazard(sdpa, chain, plan.whole_uses > 0)


def _key_padding(
    sdpa: fx.Node, mask, key_sets: Parts, q_shape, resolver: PartResolver
) -> list[KeyPadding] | None:
    """Per token set: how its keys' padding reaches the op; None without a mask."""
    if mask is None:
        return None
    if not isinstance(mask, fx.Node) or tensor_val(mask) is None:
        raise _Refused("attn_mask is not a tensor")
    mask_shape = shape(mask)
    _check(refuse_key_mask_shape(mask_shape, q_shape))
    if tensor_val(mask).requires_grad:
        raise _Refused("attn_mask requires grad (a learned bias, not padding)")
    _check(refuse_mask_constant_over_keys(not same(mask_shape[-1], 1)))
    axis = len(mask_shape) - 1
    resolved = resolver.resolve(mask, axis)
    lengths = key_sets.lengths
    if (
        not isinstance(resolved, Parts)
        or len(resolved.lengths) != len(lengths)
        or not all(same(a, b) for a, b in zip(resolved.lengths, lengths))
    ):
        # Not assembled from per-set pieces: a position-dependent operand like any other, sliced per set.
        resolved = resolver.slice_like(mask, axis, key_sets, SEQ, before=sdpa)
    return [_classify(p, n) for p, n in zip(resolved.nodes, lengths)]


def _classify(part: fx.Node, size) -> KeyPadding:
    found = classify(part, size)
    if found.kind == "lengths" and not _is_integer(found.lengths):
        return KeyPadding("check", part)
    return found


def _is_integer(node) -> bool:
    t = tensor_val(node)
    return (
        t is not None and not t.dtype.is_floating_point and not t.dtype.is_complex and t.dtype != torch.bool
    )


def _insert_op(build, sets, spatial, joint, padding, scale, runtime, lengths, checks):
    q, k, v = sets["q"].nodes, sets["k"].nodes, sets["v"].nodes
    tensors = (q[spatial], k[spatial], v[spatial], q[joint], k[joint], v[joint])
    batch = build.size(q[spatial], 0)
    try:
        if padding is not None and any(p.kind == "check" for p in padding):
            masks = (padding[spatial].source, padding[joint].source)
            check = _padding_check(build, checks, masks, batch, lengths[spatial], lengths[joint])
            return build.call(ops.MASKED_JOINT_ATTENTION, (*tensors, *masks, *check, scale, runtime))
        valid = [None, None]
        if padding is not None:
            for i, p in enumerate(padding):
                if p.kind == "lengths":
                    valid[i] = _valid_lengths(build, p.lengths, lengths[i], batch)
        return build.call(
            ops.JOINT_ATTENTION,
            (*tensors, "rear", scale, valid[spatial], valid[joint], runtime),
        )
    except (ValueError, TypeError) as e:
        raise _Refused(f"the op rejects these inputs: {e}") from e


def _padding_check(build: GraphBuilder, checks: dict, masks, batch, n, l):  # noqa: E741
    """One run-time prefix check per distinct pair of mask parts: layers sharing a mask share its one sync."""
    if masks not in checks:
        check = build.call(ops.KEY_PADDING_LENGTHS, (*masks, batch, n, l))
        checks[masks] = tuple(build.call(operator.getitem, (check, i)) for i in range(3))
    return checks[masks]


def _valid_lengths(build: GraphBuilder, lengths: fx.Node, size, batch) -> fx.Node:
    """`arange(S) < lengths` admits min(max(lengths, 0), S) keys: clamp, and broadcast a batch of one."""
    clamped = build.call(torch.clamp, (lengths,), {"min": 0, "max": size})
    if not same(shape(clamped)[0], batch):
        clamped = build.call("expand", (clamped, batch), method=True)
    return clamped


def _padding_summary(padding: list[KeyPadding] | None) -> str:
    if padding is None or all(p.kind == "all" for p in padding):
        return NO_PADDING
    return CHECKED_MASK if any(p.kind == "check" for p in padding) else PROVEN_LENGTHS


def _removable(node: fx.Node) -> bool:
    """Pure ops of the kinds this pass creates or bypasses; never in-place, random or side-effecting ones."""
    name = op_name(node)
    if node.op not in ("call_function", "call_method") or name is None or name.endswith("_"):
        return False
    if name == "scaled_dot_product_attention":  # tagged random for its dropout; without dropout it is pure
        return val(sdpa_call(node).dropout_p) == 0.0
    if node.op == "call_function" and node.is_impure():
        return False
    return (
        name in CAT_NAMES
        or name in SPLITS
        or name in TUPLE_PRODUCERS
        or name
        in (
            "getitem",
            "sym_size",
            "sym_sum",
            "slice",
            "clamp",
            "expand",
            "pad",
            "nonzero",
            "key_padding_lengths",
            "joint_attention",  # a fusion refused after the op was built (mutations.py) leaves it dead
            "masked_joint_attention",
        )
        or handler_for(node) is not None
    )


def _prune(graph: fx.Graph, seeds) -> None:
    """Erases nodes among `seeds` (and their inputs, transitively) that are dead and known to be pure."""
    work = [n for n in seeds if isinstance(n, fx.Node)]
    while work:
        node = work.pop()
        if node.graph is not graph or _erased(node) or not _removable(node):
            continue
        if any(not is_metadata_assert(u) for u in node.users):
            continue
        for check in list(node.users):  # a dtype/device assert on a value nobody computes any more
            graph.erase_node(check)
        inputs = [a for a in node.all_input_nodes]
        graph.erase_node(node)
        node.meta["_jointattn_erased"] = True
        work.extend(inputs)


def _erased(node: fx.Node) -> bool:
    return node.meta.get("_jointattn_erased", False)
