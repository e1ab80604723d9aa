"""A BlockMask from any mask_mod over N tokens, in bounded memory (flex's `create_block_mask` materializes the
whole N x N mask at once: 2 GB at Mochi's N = 44520): query blocks are classified a chunk at a time, each key
block as full (every element allowed), partial (some) or skipped (none)."""

from __future__ import annotations

import torch
from torch.nn.attention.flex_attention import BlockMask

_ELEMENT_BUDGET = 1 << 26  # mask_mod elements evaluated at once


def block_mask_from_mod(mask_mod, n: int, block_size=(128, 64), device=None) -> BlockMask:
    """The BlockMask of `mask_mod(b, h, q_idx, kv_idx)` (broadcasting over index tensors; same for every batch
    element and head) for n spatial tokens, with blocks of `block_size` = (query block, key block)."""
    q_block, kv_block = (block_size, block_size) if isinstance(block_size, int) else block_size
    if n < 1 or q_block < 1 or kv_block < 1:
        raise ValueError(f"block_mask_from_mod: n and block sizes must be positive; got n={n}, {block_size}")
    device = torch.device(device if device is not None else "cpu")
    qbn, kbn = -(-n // q_block), -(-n // kv_block)
    padded_k = kbn * kv_block
    cols = torch.arange(padded_k, device=device)
    zero = torch.zeros((), dtype=torch.long, device=device)
    any_, all_ = [], []
    step = max(1, _ELEMENT_BUDGET // (q_block * padded_k))
    for start in range(0, qbn, step):
        rows = torch.arange(start * q_block, min(qbn, start + step) * q_block, device=device)
        m = torch.as_tensor(
            mask_mod(zero, zero, rows.clamp(max=n - 1)[:, None], cols.clamp(max=n - 1)[None, :])
        )
        m = m.to(torch.bool).expand(len(rows), padded_k)
        inside = (rows < n)[:, None] & (cols < n)[None, :]
        m = (m & inside).view(-1, q_block, kbn, kv_block)
        any_.append(m.any(3).any(1))
        # A block is full when every element inside N is allowed (elements past N do not exist).
        all_.append((m | ~inside.view(-1, q_block, kbn, kv_block)).all(3).all(1))
    some, every = torch.cat(any_), torch.cat(all_)
    full = some & every
    partial = some & ~every
    return BlockMask.from_kv_blocks(
        *_lists(partial), *_lists(full), BLOCK_SIZE=(q_block, kv_block), mask_mod=mask_mod, seq_lengths=(n, n)
    )


def _lists(blocks: torch.Tensor):
    """[QBn, KBn] bool -> (num [1, 1, QBn] int32, indices [1, 1, QBn, KBn] int32, the listed blocks first)."""
    num = blocks.sum(-1).to(torch.int32)
    order = torch.argsort((~blocks).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return num[None, None], order[None, None].contiguous()
