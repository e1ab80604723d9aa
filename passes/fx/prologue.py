"""Post-grad pass: the QK-norm + RoPE prologue of an attention becomes one `jointattn::rms_norm_rope` call.

Entry points: `fuse_prologues(graph) -> int` (how many it replaced) and `PROLOGUE_PASS`, the
`CustomGraphPass` the backend hands inductor as `post_grad_custom_post_pass`.

Why post-grad: at ATen level, after AOT autograd, the prologue is a fixed sequence of ATen ops whatever the model
code's spelling, and a training graph's saved intermediates show up as outside users (then nothing is replaced:
inductor's code stays, and the op never needs a backward here). Why at all: for Mochi's form inductor emits a
kernel 6x slower than one pass over q/k (`kernels/rms_norm_rope.py`).

The form matched, anchored at the view that interleaves the rotated pairs back (x `[b, S, nh, dh]`; every
cast optional, present exactly where x's dtype is not float32):
    xf = float(x); y = to_x_dtype(x * rsqrt(mean(xf ** 2, [-1], keepdim) + eps) [* weight])    (or y = x)
    e, o = float(y[..., 0::2]), float(y[..., 1::2])
    out = view(cat([unsqueeze(to_x_dtype(e*cos - o*sin), -1), unsqueeze(to_x_dtype(e*sin + o*cos), -1)], -1))
with every product in float32, cos/sin broadcasting to `[b, S, nh, dh/2]`, and no matched intermediate used
outside the match. Anything else is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files
from torch.fx.experimental.symbolic_shapes import statically_known_true

from .axes import same_shape
from .nodes import arg, same, shape, tensor_val

aten = torch.ops.aten
prims = torch.ops.prims

VIEWS = (aten.view.default, aten.reshape.default, aten._unsafe_view.default)
# Devices whose tensors the op runs its Triton kernel on; elsewhere inductor's own code is kept (tests widen this).
DEVICES = {"cuda"}


@dataclass
class Prologue:
    x: fx.Node
    weight: fx.Node | None
    eps: float | None
    cos: fx.Node | None
    sin: fx.Node | None
    nodes: set[fx.Node] = field(default_factory=set)  # the matched nodes, anchor included


def fuse_prologues(graph: fx.Graph) -> int:
    """Replaces every matched prologue with the op; returns how many."""
    from jointattn.runtime import rms_norm_rope  # noqa: F401  (registers the op)

    replaced = 0
    for node in list(graph.nodes):
        prologue = match_prologue(node)
        if prologue is None:
            continue
        with graph.inserting_before(node):
            fused = graph.call_function(
                torch.ops.jointattn.rms_norm_rope.default,
                (prologue.x, prologue.weight, prologue.eps, prologue.cos, prologue.sin),
            )
        fused.meta["val"] = node.meta["val"]
        node.replace_all_uses_with(fused)
        _erase(prologue.nodes)
        replaced += 1
    return replaced


def match_prologue(out: fx.Node) -> Prologue | None:
    """The prologue whose last node is `out`, or None."""
    if out.op != "call_function" or out.target not in VIEWS or _dtype(out) is None:
        return None
    dtype = _dtype(out)
    cat = out.args[0]
    if not _is(cat, aten.cat.default) or len(cat.args[0]) != 2 or not _last_dim(cat, arg(cat, 1, "dim", 0)):
        return None
    halves = [_unsqueezed_last(part) for part in cat.args[0]]
    if None in halves:
        return None
    first, second = (_cast_from(h, dtype) for h in halves)
    if not (
        _is(first, aten.sub.Tensor)
        and _is(second, aten.add.Tensor)
        and _unscaled(first)
        and _unscaled(second)
    ):
        return None
    rotation = _rotation(first, second)
    if rotation is None:
        return None
    y, cos, sin, rotation_nodes = rotation
    if (
        _dtype(y) != dtype
        or len(shape(y)) != 4
        or not same_shape(shape(out), shape(y))
        or not _even(shape(y)[3])
    ):
        return None
    prologue = _norm(y, dtype) or Prologue(x=y, weight=None, eps=None, cos=None, sin=None)
    prologue.cos, prologue.sin = cos, sin
    prologue.nodes |= {out, cat, *cat.args[0], *halves, first, second, *rotation_nodes}
    if (
        not _tables_fit(prologue)
        or _device(prologue.x) not in DEVICES
        or not _used_inside(prologue.nodes, out)
    ):
        return None
    return prologue


def _rotation(first: fx.Node, second: fx.Node):
    """(y, cos, sin, nodes) when first = e*cos - o*sin and second = e*sin + o*cos (float32 products)."""
    products = [first.args[0], first.args[1], *second.args[:2]]
    if not all(_is(p, aten.mul.Tensor) and _dtype(p) == torch.float32 for p in products):
        return None
    split = [_half_and_table(p) for p in products]
    if None in split:
        return None
    (e1, cos), (o1, sin), *rest = split
    if e1[1] != 0 or o1[1] != 1 or e1[0] is not o1[0]:
        return None
    by_start = {half[1]: (half, table) for half, table in rest}
    if set(by_start) != {0, 1}:
        return None
    (e2, sin2), (o2, cos2) = by_start[0], by_start[1]
    if e2[2] is not e1[2] or o2[2] is not o1[2] or sin2 is not sin or cos2 is not cos:
        return None
    nodes = {*products, e1[2], o1[2], *e1[3], *o1[3]}
    return e1[0], cos, sin, nodes


def _half_and_table(product: fx.Node):
    """((y, start, half, half's nodes), table) for product = half * table with half = float(y[..., start::2])."""
    a, b = product.args[:2]
    for half, table in ((a, b), (b, a)):
        parsed = _half(half)
        if parsed is not None and isinstance(table, fx.Node):
            return parsed, table
    return None


def _half(node) -> tuple | None:
    """(y, start, node, nodes) when node = float32(y[..., start::2]), start 0 or 1, over y's whole last dim."""
    if not isinstance(node, fx.Node) or _dtype(node) != torch.float32:
        return None
    sliced = _cast_from(node, torch.float32)
    if not _is(sliced, aten.slice.Tensor):
        return None
    y, dim, start, end, step = (list(sliced.args) + [0, None, None, 1][len(sliced.args) - 1 :])[:5]
    if not (_last_dim(y, dim) and step == 2 and start in (0, 1)):
        return None
    if end is not None and not statically_known_true(end >= shape(y)[-1]):
        return None
    return y, start, node, {node, sliced}


def _norm(y: fx.Node, dtype: torch.dtype) -> Prologue | None:
    """The RMS norm y = to_dtype(x * rsqrt(mean(float(x)**2, -1, keepdim) + eps) [* weight]), or None."""
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):  # float(x) * r is x * r only for these
        return None
    scaled = _cast_from(y, dtype)
    if not _is(scaled, aten.mul.Tensor) or _dtype(scaled) != torch.float32:
        return None
    weight, normed = None, scaled
    for a, b in ((scaled.args[0], scaled.args[1]), (scaled.args[1], scaled.args[0])):
        if _is(a, aten.mul.Tensor) and isinstance(b, fx.Node) and shape(b) == shape(y)[-1:]:
            weight, normed = b, a
            break
    for operand, inverse in ((normed.args[0], normed.args[1]), (normed.args[1], normed.args[0])):
        x = _cast_from(operand, torch.float32)  # x * r, or float(x) * r (the same product)
        eps_nodes = _inverse_rms(inverse, x)
        if (
            eps_nodes is not None
            and isinstance(x, fx.Node)
            and _dtype(x) == dtype
            and same_shape(shape(x), shape(y))
        ):
            eps, nodes = eps_nodes
            cast = {operand} if operand is not x else set()
            return Prologue(
                x=x, weight=weight, eps=eps, cos=None, sin=None, nodes={y, scaled, normed, *cast, *nodes}
            )
    return None


def _inverse_rms(node, x) -> tuple[float, set] | None:
    """(eps, nodes) when node = rsqrt(mean(float32(x) ** 2, [-1], keepdim=True) + eps)."""
    if (
        not _is(node, aten.rsqrt.default)
        or not _is(node.args[0], aten.add.Tensor)
        or not _unscaled(node.args[0])
    ):
        return None
    add = node.args[0]
    mean, eps = add.args[:2]
    if not isinstance(eps, float) or not _is(mean, aten.mean.dim):
        return None
    if not all(_dtype(n) == torch.float32 for n in (node, add, mean)):  # e.g. mean(..., dtype=float16)
        return None
    dims = mean.args[1]
    keepdim = mean.args[2] if len(mean.args) > 2 else mean.kwargs.get("keepdim", False)
    if not (keepdim and len(dims) == 1 and _last_dim(mean.args[0], dims[0])):
        return None
    square = mean.args[0]
    if not _is(square, aten.pow.Tensor_Scalar) or square.args[1] != 2 or _dtype(square) != torch.float32:
        return None
    if _cast_from(square.args[0], torch.float32) is not x:
        return None
    nodes = {node, add, mean, square} | ({square.args[0]} if square.args[0] is not x else set())
    return eps, nodes


def _tables_fit(prologue: Prologue) -> bool:
    """cos/sin broadcast to [b, S, nh, dh/2] without growing it."""
    sizes = shape(prologue.x)
    pairs = (*sizes[:3], sizes[3] // 2)
    try:
        return all(
            same_shape(torch.broadcast_shapes(shape(t), pairs), pairs)
            and _is_float(t)
            and _device(t) == _device(prologue.x)
            for t in (prologue.cos, prologue.sin)
        )
    except RuntimeError:
        return False


def _used_inside(nodes: set[fx.Node], out: fx.Node) -> bool:
    return all(user in nodes for node in nodes if node is not out for user in node.users)


def _erase(nodes: set[fx.Node]) -> None:
    pending = set(nodes)
    while pending:
        dead = {n for n in pending if not n.users}
        if not dead:
            return
        for n in dead:
            n.graph.erase_node(n)
        pending -= dead


def _cast_from(node, dtype: torch.dtype):
    """node's input when node casts to dtype (the model's `.to(dtype)`/`.float()`), else node."""
    if _is(node, prims.convert_element_type.default) and node.args[1] == dtype:
        return node.args[0]
    return node


def _unsqueezed_last(node):
    if _is(node, aten.unsqueeze.default) and _last_dim(node, node.args[1]):
        return node.args[0]
    return None


def _unscaled(node: fx.Node) -> bool:
    """add/sub without an `alpha` factor on the second operand."""
    return len(node.args) == 2 and node.kwargs.get("alpha", 1) == 1


def _even(size) -> bool:
    return same(size % 2, 0)


def _is(node, target) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target == target


def _dtype(node):
    t = tensor_val(node)
    return t.dtype if t is not None else None


def _is_float(node) -> bool:
    dtype = _dtype(node)
    return dtype is not None and dtype.is_floating_point and dtype != torch.float64


def _device(node) -> str | None:
    t = tensor_val(node)
    return t.device.type if t is not None else None


def _last_dim(node, dim) -> bool:
    """dim (possibly negative) is the last dim of node's value."""
    rank = len(shape(node))
    return isinstance(dim, int) and rank > 0 and dim in (-1, rank - 1)


class ProloguePass(CustomGraphPass):
    """`fuse_prologues` as inductor's post-grad custom pass (hashable for inductor's FX graph cache)."""

    def __call__(self, graph: fx.Graph) -> None:
        fuse_prologues(graph)

    def uuid(self):
        return (get_hash_for_files((__file__,)), tuple(sorted(DEVICES)))


class ChainedPass(CustomGraphPass):
    """Several post-grad passes in order (ours, then one the user configured)."""

    def __init__(self, passes):
        self.passes = tuple(passes)

    def __call__(self, graph: fx.Graph) -> None:
        for graph_pass in self.passes:
            graph_pass(graph)

    def uuid(self):
        uuids = [p.uuid() if isinstance(p, CustomGraphPass) else None for p in self.passes]
        return None if None in uuids else tuple(uuids)


PROLOGUE_PASS = ProloguePass()

__all__ = [
    "fuse_prologues",
    "match_prologue",
    "Prologue",
    "ProloguePass",
    "ChainedPass",
    "PROLOGUE_PASS",
    "DEVICES",
]
