"""Per-sample unpadding around attention  ==>  one batched attention with a key-padding mask.

Mochi (diffusers' `MochiAttnProcessor2_0`) loops over the batch: it gathers the valid text tokens of sample i
with `nonzero(mask[i])`, concatenates them after the video tokens, runs SDPA, pads the result back to full
length with zeros and rebuilds the batch with `cat`. Traced with `capture_dynamic_output_shape_ops`, Dynamo
unrolls that loop into b data-dependent-shape attentions. For each sample this is attention over the video
keys plus the valid text keys (a key-padding mask: key order does not matter without causality), with the
valid text rows' outputs compacted to the front and zeros after. This rewrite builds exactly that:

    o   = sdpa(cat([Q, JQ], 2), cat([K, JK], 2), cat([V, JV], 2), attn_mask=cat([ones, mask != 0], 1)[:, None, None, :])
    out = cat([o[:, :, :N], compact_valid_rows(o[:, :, N:], mask != 0)], 2)

No per-sample loop and no data-dependent shape remain; the fusion pass then turns that SDPA into the op, with
the mask checked at run time and handed over as valid lengths when it is a prefix (the tokenizer's case).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F

from ...runtime.ops import compact_valid_rows
from .nodes import GraphBuilder, arg, latest, normalize_dim, op_name, same, shape, val
from .parts import CAT_NAMES, cat_parts
from .ranges import range_of

_INDEX_VIEWS = ("flatten", "view", "reshape", "squeeze", "unsqueeze", "contiguous")


@dataclass(frozen=True)
class _Sample:
    dense: tuple  # (Q, K, V): the full-batch tensors sample i's dense tokens are sliced from
    gathered: tuple  # (JQ, JK, JV): the full-batch tensors its valid tokens are gathered from
    dense_first: bool
    mask: fx.Node
    scale: object


@dataclass(frozen=True)
class UnpadLoop:
    batch_cat: fx.Node
    sample: _Sample  # identical for every i (checked)
    nonzeros: tuple  # each sample's `nonzero`: its size asserts go with the loop


def find_unpad_loops(graph: fx.Graph) -> list[UnpadLoop]:
    loops = []
    for node in graph.nodes:
        if op_name(node) in CAT_NAMES and cat_parts(node, 0) is not None:
            loop = _match(node)
            if loop is not None:
                loops.append(loop)
    return loops


def _match(batch_cat: fx.Node) -> UnpadLoop | None:
    items = cat_parts(batch_cat, 0)
    samples, nonzeros = [], []
    for i, item in enumerate(items):
        found = _match_sample(item, i)
        if found is None:
            return None
        samples.append(found[0])
        nonzeros.append(found[1])
    first = samples[0]
    if any(s != first for s in samples) or len(items) != shape(first.dense[0])[0]:
        return None
    # Each sample must be padded back to exactly N + L rows, the length the rewrite produces.
    if not same(shape(batch_cat)[2], shape(first.dense[0])[2] + shape(first.mask)[1]):
        return None
    return UnpadLoop(batch_cat, first, tuple(nonzeros))


def loop_attentions(loop: UnpadLoop) -> list[fx.Node]:
    """The per-sample SDPA calls of a loop (what each padded item of the batch cat pads)."""
    return [item.args[0] for item in cat_parts(loop.batch_cat, 0)]


def _zero_pad(item: fx.Node):
    """`F.pad(x, pad)` / `aten.pad` with zeros, or `aten.constant_pad_nd(x, pad, 0)`: the pad list, else None."""
    name = op_name(item)
    if (
        name == "pad"
        and arg(item, 2, "mode", "constant") == "constant"
        and arg(item, 3, "value", None) in (None, 0, 0.0)
    ):
        return arg(item, 1, "pad")
    if name == "constant_pad_nd" and arg(item, 2, "value", 0) in (0, 0.0):
        return arg(item, 1, "pad")
    return None


def _match_sample(item: fx.Node, i: int):
    """Sample i: pad(sdpa(cat(Q[i:i+1], JQ[i:i+1, :, idx_i]), ...), (0, 0, 0, rest)) with idx_i = nonzero(mask[i])."""
    pad = _zero_pad(item)
    if not isinstance(pad, (list, tuple)) or len(pad) != 4 or any(p != 0 for p in pad[:3]):
        return None
    sdpa = item.args[0]
    if not isinstance(sdpa, fx.Node) or op_name(sdpa) != "scaled_dot_product_attention":
        return None
    from .fuse import sdpa_call  # the SDPA argument reader lives with the fusion

    call = sdpa_call(sdpa)
    if (
        call.attn_mask is not None
        or val(call.dropout_p) != 0.0
        or val(call.is_causal)
        or val(call.enable_gqa)
    ):
        return None
    if isinstance(call.scale, fx.Node):
        return None
    split = [_split(x, i) for x in (call.query, call.key, call.value)]
    if any(s is None for s in split):
        return None
    (q, jq, idx_q, first_q), (k, jk, idx_k, first_k), (v, jv, idx_v, first_v) = split
    if not (idx_q is idx_k is idx_v) or not (first_q == first_k == first_v):
        return None
    row = _mask_row(idx_q)
    if row is None or row[1] != i:
        return None
    mask, _, nonzero = row
    return _Sample((q, k, v), (jq, jk, jv), first_q, mask, call.scale), nonzero


def _split(x: fx.Node, i: int):
    """cat([X[i:i+1], JX[i:i+1, :, idx]], 2) (either order) -> (X, JX, idx, dense_first)."""
    parts = cat_parts(x, 2) if isinstance(x, fx.Node) else None
    if parts is None or len(parts) != 2:
        return None
    for dense_first, (dense, gathered) in ((True, parts), (False, parts[::-1])):
        r = range_of(dense)
        g = _gathered(gathered, i)
        if r is not None and r.axis == 0 and r.start == i and r.end == i + 1 and g is not None:
            return r.source, g[0], g[1], dense_first
    return None


def _gathered(node: fx.Node, i: int):
    """JX[i:i+1, :, idx, :] -> (JX, idx); at ATen level `index(slice(JX, 0, i, i+1), [None, None, idx])`."""
    if op_name(node) == "index" and isinstance(node.args[1], (list, tuple)):
        r = range_of(node.args[0]) if isinstance(node.args[0], fx.Node) else None
        indices = list(node.args[1])
        if r is None or r.axis != 0 or r.start != i or r.end != i + 1 or len(indices) not in (3, 4):
            return None
        idx = indices[2]
        if (
            indices[:2] != [None, None]
            or any(x is not None for x in indices[3:])
            or not isinstance(idx, fx.Node)
        ):
            return None
        return r.source, idx
    if op_name(node) != "getitem" or not isinstance(val(node.args[0]), torch.Tensor):
        return None
    index = node.args[1]
    if not isinstance(index, tuple) or len(index) not in (3, 4):
        return None
    b_slice, h_slice, idx = index[0], index[1], index[2]
    rest = index[3:]
    if b_slice != slice(i, i + 1, None) or h_slice != slice(None) or any(r != slice(None) for r in rest):
        return None
    if not isinstance(idx, fx.Node) or len(shape(idx)) != 1:
        return None
    return node.args[0], idx


def _peel_index_views(node):
    while isinstance(node, fx.Node) and op_name(node) in _INDEX_VIEWS:
        node = node.args[0]
    return node


def _mask_row(idx: fx.Node):
    """idx = flatten(nonzero(flatten(mask[i][None, :]))) -> (mask, i, the nonzero node)."""
    nz = _peel_index_views(idx)
    if not isinstance(nz, fx.Node) or op_name(nz) != "nonzero" or arg(nz, 1, "as_tuple", False):
        return None
    if len(shape(nz.args[0])) != 1:  # nonzero of a [1, L] row flattens to (0, j0, 0, j1, ...): another gather
        return None
    row = _peel_index_views(nz.args[0])
    while (
        isinstance(row, fx.Node)
        and op_name(row) == "getitem"
        and isinstance(row.args[1], tuple)
        and all(c is None or c == slice(None) for c in row.args[1])
    ):
        row = _peel_index_views(row.args[0])
    if not isinstance(row, fx.Node):
        return None
    if op_name(row) == "getitem" and isinstance(row.args[1], int):
        mask, i = row.args
    elif op_name(row) == "select" and normalize_dim(arg(row, 1, "dim"), len(shape(row.args[0]))) == 0:
        mask, i = row.args[0], arg(row, 2, "index")
    else:
        return None
    if not isinstance(mask, fx.Node) or len(shape(mask)) != 2 or not isinstance(i, int):
        return None
    return mask, i, nz


def rewrite_unpad_loop(build: GraphBuilder, loop: UnpadLoop, shared: dict) -> tuple[fx.Node, fx.Node]:
    """Replaces the loop by the batched masked attention; returns the new SDPA and the re-joined output.

    `shared` keeps the key-padding mask built from each mask input, so that every layer reading the same
    mask uses the same mask node (and the fusion then emits a single run-time check for all of them)."""
    s = loop.sample
    graph = build.graph
    order = (lambda d, g: [d, g]) if s.dense_first else (lambda d, g: [g, d])
    with graph.inserting_before(loop.batch_cat):
        q, k, v = (build.call(torch.cat, (order(d, g),), {"dim": 2}) for d, g in zip(s.dense, s.gathered))
        n = build.size(s.dense[0], 2)
    key = (s.mask, s.dense_first, shape(s.dense[0])[2])
    if key not in shared:
        with graph.inserting_before(latest(graph, [s.mask, s.dense[0]]).next):
            text_valid = build.call(torch.ne, (s.mask, 0))
            dense_valid = build.call(
                "new_ones", (text_valid, (build.size(s.mask, 0), build.size(s.dense[0], 2))), method=True
            )
            key_valid = build.call(torch.cat, (order(dense_valid, text_valid), 1), {})
            mask = build.call(operator.getitem, (key_valid, (slice(None), None, None, slice(None))))
        shared[key] = (text_valid, key_valid, mask)
    text_valid, key_valid, mask = shared[key]
    with graph.inserting_before(loop.batch_cat):
        o = build.call(F.scaled_dot_product_attention, (q, k, v), {"attn_mask": mask, "scale": s.scale})
        if s.dense_first:
            # [dense, valid text, zeros]: only the text rows move.
            dense = build.call(torch.ops.aten.slice.Tensor, (o, 2, 0, n))
            text = build.call(torch.ops.aten.slice.Tensor, (o, 2, n, build.size(o, 2)))
            out = build.call(
                torch.cat, ([dense, build.call(compact_valid_rows, (text, text_valid))],), {"dim": 2}
            )
        else:
            # [valid text, dense, zeros]: the zeros F.pad adds land after the dense rows.
            out = build.call(compact_valid_rows, (o, key_valid))
    loop.batch_cat.replace_all_uses_with(out)
    return o, out


def drop_unbacked_asserts(graph: fx.Graph, loop: UnpadLoop) -> list[fx.Node]:
    """Erases the range asserts Dynamo added for the sizes of the loop's `nonzero` results (they constrain
    symbols nothing uses any more); returns their inputs, now possibly dead."""
    freed = []
    for node in list(graph.nodes):
        if node.target is torch.ops.aten._assert_scalar.default and _depends_only_on(
            node, set(loop.nonzeros)
        ):
            freed += node.all_input_nodes
            graph.erase_node(node)
    return freed


def _depends_only_on(node: fx.Node, sources: set) -> bool:
    seen, work, hit = set(), list(node.all_input_nodes), False
    while work:
        n = work.pop()
        if n in seen:
            continue
        seen.add(n)
        if n in sources:
            hit = True
            continue
        if n.op != "call_function" or op_name(n) not in (
            "sym_size",
            "ge",
            "le",
            "gt",
            "lt",
            "eq",
            "bitwise_and",
            "sym_sum",
            "add",
            "sub",
        ):
            return False
        work.extend(n.all_input_nodes)
    return hit
