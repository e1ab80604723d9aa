"""Random BlockMasks and the float64 masked ground truth shared by the sparse suites.

`random_block_mask` draws an element mask with block structure (whole blocks kept, whole blocks dropped, and
partial blocks holding random elements), then lets flex_attention's `create_block_mask` classify the blocks, so
the tests see every kind of block. `masked_float64` is the unfused graph with that mask: cat -> attention over
the allowed keys -> slice, rows with no allowed key 0 and lse -inf; differentiable.
"""

from __future__ import annotations

import torch
from helpers import valid_mask
from torch.nn.attention.flex_attention import create_block_mask, create_mask


def random_element_mask(bm, hm, n, q_block, kv_block, seed, *, keep=0.4, partial=0.3):
    """[bm, hm, n, n] bool: per block, kept whole with `keep`, random elements with `partial`, else dropped."""
    g = torch.Generator().manual_seed(seed)
    qbn, kbn = -(-n // q_block), -(-n // kv_block)
    kind = torch.rand(bm, hm, qbn, kbn, generator=g)
    whole = (kind < keep).repeat_interleave(q_block, 2).repeat_interleave(kv_block, 3)[:, :, :n, :n]
    some = ((kind >= keep) & (kind < keep + partial)).repeat_interleave(q_block, 2)
    some = some.repeat_interleave(kv_block, 3)[:, :, :n, :n]
    noise = torch.rand(bm, hm, n, n, generator=g) < 0.5
    return whole | (some & noise)


def block_mask_of(dense, block_size):
    """A BlockMask on dense's device whose mask_mod reads `dense` [Bm, Hm, n, n] (B, H None where they
    broadcast)."""
    bm, hm, n, _ = dense.shape
    mask_mod = lambda b, h, q, kv: dense[b, h, q, kv]
    return create_block_mask(
        mask_mod,
        bm if bm > 1 else None,
        hm if hm > 1 else None,
        n,
        n,
        device=dense.device,
        BLOCK_SIZE=block_size,
    )


def dense_of(block_mask, b, nh):
    """The element mask flex_attention applies, [b, nh, n, n] on the CPU (from the BlockMask's own create_mask)."""
    n = block_mask.seq_lengths[0]
    bm, hm = block_mask.kv_num_blocks.shape[:2]
    device = block_mask.kv_num_blocks.device
    m = create_mask(block_mask.mask_mod, bm, hm, n, n, device=device).cpu()
    blocks = block_mask.to_dense().bool().cpu()
    q_block, kv_block = block_mask.BLOCK_SIZE
    listed = blocks.repeat_interleave(q_block, 2).repeat_interleave(kv_block, 3)[:, :, :n, :n]
    return (m & listed).expand(b, nh, n, n)


def masked_float64(
    q, k, v, joint_q, joint_k, joint_v, spatial_mask, *, scale=None, logical_n=None, logical_l=None
):
    """cat -> attention where allowed -> slice, in float64; spatial_mask [b, nh, N, N] over spatial q x k."""
    b, nh, n, dh = q.shape
    l = joint_q.shape[2]  # noqa: E741
    qq, kk, vv = (torch.cat([a, c], 2).double() for a, c in ((q, joint_q), (k, joint_k), (v, joint_v)))
    scale = scale if scale is not None else dh**-0.5
    valid = torch.cat([valid_mask(logical_n, n, b), valid_mask(logical_l, l, b)], 1)
    allowed = valid[:, None, None, :].expand(b, nh, n + l, n + l).clone()
    allowed[:, :, :n, :n] &= spatial_mask
    kk = torch.where(valid[:, None, :, None], kk, 0.0)
    vv = torch.where(valid[:, None, :, None], vv, 0.0)
    s = (qq @ kk.transpose(-1, -2)) * scale
    seen = allowed.any(-1, keepdim=True)
    s = torch.where(allowed, s, float("-inf"))
    s = torch.where(seen, s, 0.0)
    lse = torch.where(seen[..., 0], torch.logsumexp(s, -1), float("-inf"))
    o = (torch.softmax(s, -1) * seen) @ vv
    return o[:, :, :n], o[:, :, n:], lse
