"""A `BlockMask` over the N spatial tokens as the tensors the sparse joint-attention op takes.

`torch.nn.attention.flex_attention.BlockMask` is not a tensor, so it cannot cross a custom op's boundary. Its
meaning is flex_attention's: a key block listed in `full_kv_indices` is attended whole, a key block listed in
`kv_indices` (a partial block) is attended where `mask_mod(b, h, q_idx, kv_idx)` is True, any other block is
skipped. `SpatialLayout` keeps the block lists as they are and replaces `mask_mod` by its answers on the
partial blocks only, evaluated once here (`partial_bits`: one bit per query x key of each listed partial
block, packed 32 keys to an int32 word). So the kernels never call Python, and the exact answer of a partial
block costs memory proportional to the partial blocks, not to N².

`mask_mod` is called with broadcast index tensors (not vmapped one element at a time): elementwise torch code
(comparisons, arithmetic, indexing a tensor by q_idx/kv_idx) works, Python control flow on the indices does not.
Indices past N are never asked (clamped to N - 1 and masked out).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor

WORD_BITS = 32
_BITS_BUDGET = 1 << 26  # mask_mod elements evaluated at once while building the bits


@dataclass(frozen=True)
class SpatialLayout:
    """A block mask over N spatial tokens, as tensors. Leading dims [Bm, Hm] are 1 (broadcast) or b / nh, per
    tensor (`expanded` makes them one shape).

    kv_num_blocks [Bm, Hm, QBn] int32, kv_indices [Bm, Hm, QBn, KBn] int32: the partial blocks per query block;
    full_kv_num_blocks / full_kv_indices: likewise for the full blocks (zero counts if the mask has none);
    partial_bits [Bm, Hm, QBn, P, q_block, W] int32: bit (c % 32) of word c // 32 of row r of slot p is
    mask_mod's answer for query qb * q_block + r and key kv_indices[..., p] * kv_block + c. P = 0 where no
    query block lists a partial block: the kernels then leave the partial path out (at compile time, where
    its registers cost spills)."""

    kv_num_blocks: Tensor
    kv_indices: Tensor
    full_kv_num_blocks: Tensor
    full_kv_indices: Tensor
    partial_bits: Tensor
    q_block: int
    kv_block: int

    @property
    def tensors(self) -> tuple[Tensor, ...]:
        return (
            self.kv_num_blocks,
            self.kv_indices,
            self.full_kv_num_blocks,
            self.full_kv_indices,
            self.partial_bits,
        )

    def expanded(self, b: int, nh: int) -> SpatialLayout:
        """The same layout with every tensor's [1 or b, 1 or nh] leading dims broadcast to [b, nh] (views)."""
        t = [x.expand(b, nh, *x.shape[2:]) for x in self.tensors]
        return SpatialLayout(*t, self.q_block, self.kv_block)

    def kept_fraction(self, n: int) -> float:
        """Share of the N x N spatial scores the mask keeps (counting whole listed blocks: what is computed)."""
        blocks = (self.kv_num_blocks + self.full_kv_num_blocks).sum().item()
        total = self.kv_num_blocks.numel() * -(-n // self.kv_block)
        return blocks / max(1, total)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def spatial_layout(block_mask, n: int, device=None) -> SpatialLayout:
    """The layout of `block_mask`: a flex_attention `BlockMask` with Q_LEN = KV_LEN = n, a `jointattn.sparse`
    pattern (anything with `.block_mask(n, device)`), or a `SpatialLayout` (returned as is). Built once per
    object, N and device (it evaluates mask_mod and syncs once)."""
    if isinstance(block_mask, SpatialLayout):
        return block_mask
    from torch.nn.attention.flex_attention import BlockMask

    is_pattern = callable(getattr(block_mask, "block_mask", None))
    if not is_pattern and not isinstance(block_mask, BlockMask):
        raise TypeError(
            f"joint_attention: block_mask must be a flex_attention BlockMask, a jointattn.sparse pattern or a "
            f"SpatialLayout; got {type(block_mask).__name__}"
        )
    if not is_pattern and tuple(block_mask.seq_lengths) != (n, n):
        raise ValueError(
            f"joint_attention: block_mask must cover the N={n} spatial tokens (Q_LEN = KV_LEN = N); "
            f"got seq_lengths {tuple(block_mask.seq_lengths)}"
        )
    if device is None:
        device = "cpu" if is_pattern else block_mask.kv_num_blocks.device
    key = (n, torch.device(device))
    try:
        cached = _CACHE.setdefault(block_mask, {})
    except TypeError:  # not weak-referenceable or hashable: build every time
        cached = {}
    if key not in cached:
        bm = block_mask.block_mask(n, device=key[1]) if is_pattern else block_mask
        cached[key] = _build(bm, n, key[1])
    return cached[key]


def _build(bm, n: int, device) -> SpatialLayout:
    q_block, kv_block = (int(s) for s in bm.BLOCK_SIZE)
    num, idx = bm.kv_num_blocks.to(device, torch.int32), bm.kv_indices.to(device, torch.int32)
    if num.dim() != 3 or idx.dim() != 4:
        raise ValueError(
            f"joint_attention: block_mask has kv_num_blocks of shape {tuple(num.shape)}; expected 3-D"
        )
    if num.shape[-1] < -(-n // q_block) or idx.shape[-1] < -(-n // kv_block):
        raise ValueError(
            f"joint_attention: block_mask has {num.shape[-1]} query and {idx.shape[-1]} key blocks; "
            f"N={n} with blocks {q_block}x{kv_block} needs {-(-n // q_block)} and {-(-n // kv_block)}"
        )
    if bm.full_kv_num_blocks is None:
        full_num, full_idx = torch.zeros_like(num), torch.zeros_like(idx[..., :1])
    else:
        full_num = bm.full_kv_num_blocks.to(device, torch.int32)
        full_idx = bm.full_kv_indices.to(device, torch.int32)
    bits = partial_bits(bm.mask_mod, num, idx, q_block, kv_block, n)
    return SpatialLayout(
        num.contiguous(),
        idx.contiguous(),
        full_num.contiguous(),
        full_idx.contiguous(),
        bits,
        q_block,
        kv_block,
    )


def partial_bits(mask_mod, num: Tensor, idx: Tensor, q_block: int, kv_block: int, n: int) -> Tensor:
    """mask_mod's answers on each listed partial block, packed (see `SpatialLayout.partial_bits`)."""
    bm_, hm, qbn = num.shape
    slots = int(num.max().item()) if num.numel() else 0
    words = -(-kv_block // WORD_BITS)
    device = num.device
    out = torch.zeros((bm_, hm, qbn, slots, q_block, words), dtype=torch.int32, device=device)
    if slots == 0:
        return out
    b_idx = torch.arange(bm_, device=device).view(bm_, 1, 1, 1, 1, 1)
    h_idx = torch.arange(hm, device=device).view(1, hm, 1, 1, 1, 1)
    rows = torch.arange(q_block, device=device)
    cols = torch.arange(words * WORD_BITS, device=device)
    step = max(1, _BITS_BUDGET // max(1, bm_ * hm * slots * q_block * words * WORD_BITS))
    for start in range(0, qbn, step):
        qbs = torch.arange(start, min(qbn, start + step), device=device)
        q_idx = (qbs[:, None] * q_block + rows).view(1, 1, -1, 1, q_block, 1)
        kv_blk = idx[:, :, start : start + len(qbs), :slots]  # [Bm, Hm, Q, P]
        kv_idx = kv_blk[..., None, None] * kv_block + cols.view(1, 1, 1, 1, 1, -1)
        inside = (q_idx < n) & (kv_idx < n) & (cols < kv_block).view(1, 1, 1, 1, 1, -1)
        inside = inside & (
            torch.arange(slots, device=device).view(1, 1, 1, -1, 1, 1)
            < num[:, :, start : start + len(qbs), None, None, None]
        )
        allowed = mask_mod(b_idx, h_idx, q_idx.clamp(max=n - 1), kv_idx.clamp(max=n - 1))
        allowed = torch.as_tensor(allowed, device=device).to(torch.bool) & inside
        out[:, :, start : start + len(qbs)] = pack_bits(allowed.expand(inside.shape))
    return out


def kernel_bits(bits: Tensor) -> Tensor:
    """`partial_bits` as a kernel's pointer argument: a layout without partial blocks has none (P = 0), and the
    kernels, which then never read them, still take an address of real memory (the strides stay the tensor's)."""
    if bits.numel():
        return bits
    key = (bits.device, bits.dtype)
    if key not in _STAND_INS:
        _STAND_INS[key] = bits.new_zeros(1)
    return _STAND_INS[key].as_strided(bits.shape, bits.stride())


_STAND_INS: dict = {}  # (device, dtype) -> one zero element: the pointer of bits that are never read


def pack_bits(mask: Tensor) -> Tensor:
    """[..., 32 * W] bool -> [..., W] int32 (bit c of word w: element 32 w + c; bit 31 is the sign bit)."""
    m = mask.reshape(*mask.shape[:-1], -1, WORD_BITS).to(torch.int64)
    weights = torch.tensor(
        [1 << c for c in range(WORD_BITS - 1)] + [-(1 << 31)], dtype=torch.int64, device=mask.device
    )
    return (m * weights).sum(-1).to(torch.int32)


def block_maps(layout: SpatialLayout, n: int):
    """(full [Bm, Hm, QBn, KBn] bool, slot [Bm, Hm, QBn, KBn] int64: the partial slot of a block, -1 if none)."""
    num, idx, fnum, fidx = layout.tensors[:4]
    kbn = -(-n // layout.kv_block)
    shape = (*num.shape, kbn + 1)  # one spare column takes the unused list entries
    p = torch.arange(idx.shape[-1], device=idx.device)
    # Entries past the count, and block indices past the last key block (flex's BlockMask._adjust leaves such
    # entries when it shortens a mask), land in the spare column: they name no key.
    cols = torch.where((p < num[..., None]) & (idx >= 0) & (idx < kbn), idx.long(), kbn)
    slot = torch.full(shape, -1, dtype=torch.int64, device=idx.device)
    slot.scatter_(-1, cols, p.expand_as(cols).clone())
    fp = torch.arange(fidx.shape[-1], device=fidx.device)
    fcols = torch.where((fp < fnum[..., None]) & (fidx >= 0) & (fidx < kbn), fidx.long(), kbn)
    full = torch.zeros(shape, dtype=torch.bool, device=idx.device)
    full.scatter_(-1, fcols, torch.ones_like(fcols, dtype=torch.bool))
    return full[..., :kbn], slot[..., :kbn]


def element_mask(layout: SpatialLayout, maps, rows: Tensor, n: int) -> Tensor:
    """Which spatial keys each of the spatial query `rows` may attend: [Bm, Hm, len(rows), N] bool."""
    full, slot = maps
    qb = rows // layout.q_block
    cols = torch.arange(n, device=rows.device)
    kb = cols // layout.kv_block
    f = full[:, :, qb][..., kb]  # [Bm, Hm, R, N]
    s = slot[:, :, qb][..., kb]
    bits = layout.partial_bits  # [Bm, Hm, QBn, P, QB, W]
    if bits.shape[3] == 0:  # no partial blocks
        return f
    bm_, hm = bits.shape[:2]
    c_in = cols % layout.kv_block
    word = bits[
        torch.arange(bm_, device=rows.device).view(-1, 1, 1, 1),
        torch.arange(hm, device=rows.device).view(1, -1, 1, 1),
        qb.view(1, 1, -1, 1),
        s.clamp(min=0),
        (rows % layout.q_block).view(1, 1, -1, 1),
        (c_in // WORD_BITS).view(1, 1, 1, -1),
    ]
    partial = ((word >> (c_in % WORD_BITS).to(torch.int32)) & 1).bool() & (s >= 0)
    return f | partial
