"""The exact reference of block-sparse joint attention: `reference.py`'s formulas with one more mask.

A spatial query attends the spatial keys its `SpatialLayout` allows (full blocks, and partial blocks where
mask_mod said so) and every text key; a text query attends every key; absent keys (past a valid length) are
absent for all. A row that sees no key gets 0 and lse -inf, as in the dense op. A spatial query block reads only
the key blocks its lists name, as the kernels do (so NaN in a skipped block never reaches it). Scores are formed a
block of query rows at a time (spatial rows one query block at a time), and the element mask of those rows only,
so memory stays bounded at any N.
"""

from __future__ import annotations

import torch

from .reference import _joined, _row_block, _scores, _softmax
from .sparse_layout import SpatialLayout, block_maps, element_mask


def _chunks(n: int, s_total: int, q_block: int, step: int):
    """Row ranges of the joined sequence: the spatial rows one query block at a time (each reads its own key
    blocks), then the text rows `step` at a time."""
    for start in range(0, n, q_block):
        yield start, min(n, start + q_block)
    for start in range(n, s_total, step):
        yield start, min(s_total, start + step)


def _row_mask(layout: SpatialLayout, maps, start: int, stop: int, n: int, s_total: int, device):
    """[Bm, Hm, rows, S] bool for the joined rows [start, stop): spatial rows masked on spatial keys only."""
    bm_, hm = layout.kv_num_blocks.shape[:2]
    allowed = torch.ones((bm_, hm, stop - start, s_total), dtype=torch.bool, device=device)
    spatial_stop = min(stop, n)
    if start < spatial_stop:
        rows = torch.arange(start, spatial_stop, device=device)
        allowed[:, :, : spatial_stop - start, :n] = element_mask(layout, maps, rows, n)
    return allowed


def _listed_keys(layout: SpatialLayout, maps, start: int, n: int, s_total: int, device):
    """[Bm, Hm, S, 1] bool: the keys a chunk starting at row `start` reads. A spatial query block reads the key
    blocks its lists name (full or partial) and every text key; text rows read every key. None: every key."""
    if start >= n:
        return None
    full, slot = maps
    qb = start // layout.q_block
    blocks = full[:, :, qb] | (slot[:, :, qb] >= 0)  # [Bm, Hm, KBn]
    spatial = blocks[..., torch.arange(n, device=device) // layout.kv_block]
    text = torch.ones((*spatial.shape[:2], s_total - n), dtype=torch.bool, device=device)
    return torch.cat([spatial, text], -1)[..., None]


def _unread_as_zero(t, listed):
    """`t` [b, nh, S, dh] with the rows a chunk does not read replaced by zeros (NaN in them never counts)."""
    return t if listed is None else torch.where(listed, t, torch.zeros((), dtype=t.dtype, device=t.device))


def _masked_scores(qb, kk, scale, key_bias, allowed):
    s = _scores(qb, kk, scale, key_bias)
    return s.masked_fill(~allowed, float("-inf"))


def sparse_reference_forward(q, k, v, joint_q, joint_k, joint_v, scale: float, key_bias, layout):
    """(out [b,nh,N,dh], joint_out [b,nh,L,dh], lse [b,nh,N+L]) in the accumulation dtype; differentiable.

    What a row reads is what the kernels read: the keys and values of the blocks its query block lists, and the
    text keys (a NaN in a block the mask leaves out never reaches it; in a listed block it does, masked or not,
    as in flex_attention)."""
    qq, kk, vv = _joined(q, k, v, joint_q, joint_k, joint_v, key_bias)
    b, nh, s_total, dh = qq.shape
    n = q.shape[2]
    layout = layout.expanded(b, nh)
    maps = block_maps(layout, n)
    outs, lses = [], []
    for start, stop in _chunks(n, s_total, layout.q_block, _row_block(b, nh, s_total)):
        allowed = _row_mask(layout, maps, start, stop, n, s_total, qq.device)
        listed = _listed_keys(layout, maps, start, n, s_total, qq.device)
        k_read, v_read = _unread_as_zero(kk, listed), _unread_as_zero(vv, listed)
        p, lse = _softmax(_masked_scores(qq[:, :, start:stop], k_read, scale, key_bias, allowed))
        outs.append(torch.matmul(p, v_read))
        lses.append(lse)
    out, lse = torch.cat(outs, 2), torch.cat(lses, 2)
    return out[:, :, :n], out[:, :, n:], lse


def sparse_reference_backward(
    grad_out, grad_joint_out, grad_lse, q, k, v, joint_q, joint_k, joint_v, scale, key_bias, layout
):
    """Exact gradients of (out, joint_out, lse) w.r.t. the six inputs (see `reference.reference_backward`); a key
    receives gradient only from the rows that read it, as in the kernels."""
    qq, kk, vv = _joined(q, k, v, joint_q, joint_k, joint_v, key_bias)
    acc = qq.dtype
    b, nh, s_total, dh = qq.shape
    n = q.shape[2]
    layout = layout.expanded(b, nh)
    maps = block_maps(layout, n)
    d_o = torch.cat([grad_out, grad_joint_out], dim=2).to(acc)
    d_lse = grad_lse.to(acc) if grad_lse is not None else None
    dq = torch.empty_like(qq)
    dk = torch.zeros_like(kk)
    dv = torch.zeros_like(vv)
    for start, stop in _chunks(n, s_total, layout.q_block, _row_block(b, nh, s_total)):
        rows = slice(start, stop)
        allowed = _row_mask(layout, maps, start, stop, n, s_total, qq.device)
        listed = _listed_keys(layout, maps, start, n, s_total, qq.device)
        k_read, v_read = _unread_as_zero(kk, listed), _unread_as_zero(vv, listed)
        p, _ = _softmax(_masked_scores(qq[:, :, rows], k_read, scale, key_bias, allowed))
        o = torch.matmul(p, v_read)
        d_p = torch.matmul(d_o[:, :, rows], v_read.transpose(-1, -2))
        delta = (d_o[:, :, rows] * o).sum(-1)
        if d_lse is not None:
            delta = delta - d_lse[:, :, rows]
        d_s = p * (d_p - delta[..., None])
        dq[:, :, rows] = torch.matmul(d_s, k_read) * scale
        dk += _unread_as_zero(torch.matmul(d_s.transpose(-1, -2), qq[:, :, rows]) * scale, listed)
        dv += _unread_as_zero(torch.matmul(p.transpose(-1, -2), d_o[:, :, rows]), listed)
    return dq[:, :, :n], dk[:, :, :n], dv[:, :, :n], dq[:, :, n:], dk[:, :, n:], dv[:, :, n:]


class SparseReferenceRuntime:
    """The "reference" runtime of the sparse op (any device, float32/float64 accumulation)."""

    name = "reference"

    def unsupported(self, call, layout) -> str | None:
        return None

    def forward(self, call, layout, out, joint_out, lse) -> None:
        o, jo, m = sparse_reference_forward(*call.tensors, call.scale, call.key_bias(), layout)
        out.copy_(o)
        joint_out.copy_(jo)
        lse.copy_(m)

    def backward(self, call, layout, out, joint_out, lse, grad_out, grad_joint_out, grad_lse):
        grads = sparse_reference_backward(
            grad_out, grad_joint_out, grad_lse, *call.tensors, call.scale, call.key_bias(), layout
        )
        return tuple(g.to(t.dtype) for g, t in zip(grads, call.tensors))
