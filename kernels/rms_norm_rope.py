"""RMS-norm and rotary embedding of one q or k tensor in one pass: the position-wise prologue of joint attention.

Entry point: `rms_norm_rope(x, weight, eps, cos, sin, out=None)`, x `[b, S, nh, dh]` (dh contiguous), weight
`[dh]` or None, cos/sin broadcastable to `[b, S, nh, dh/2]` (any strides; pair p of head h at position s of sample
i rotates by (cos, sin)[i, s, h, p]), eps None for RoPE alone, cos/sin None for the norm alone. It computes what diffusers'
`MochiRMSNorm`/`RMSNorm` followed by the interleaved-pairs rotary embedding compute, rounding where they round
(the norm's result is cast to x's dtype before the rotation, the rotation computes in float32).

Why a kernel of ours: for Mochi's form inductor emits one 2-D tiled kernel with stride-2 loads and stores per
pair, several times slower on a Mochi-sized layer (the measurements: `benchmarks/NOTES-models.md`, "Second
session"). Here one program holds whole rows (dh in registers), splits the pairs with `tl.split` and reads and
writes every element once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

ROWS_PER_PROGRAM = 16


@triton.jit
def rms_norm_rope_kernel(
    x_ptr,
    weight_ptr,
    cos_ptr,
    sin_ptr,
    out_ptr,
    rows,
    seq,
    heads,
    sx_b,
    sx_s,
    sx_h,
    so_b,
    so_s,
    so_h,
    sc_b,
    sc_s,
    sc_h,
    sc_p,
    ss_b,
    ss_s,
    ss_h,
    ss_p,
    eps,
    DH: tl.constexpr,
    NORM: tl.constexpr,
    WEIGHT: tl.constexpr,
    ROPE: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    in_range = r < rows
    h = r % heads
    s = (r // heads) % seq
    b = r // (heads * seq)
    d = tl.arange(0, DH)
    x = tl.load(
        x_ptr + (b * sx_b + s * sx_s + h * sx_h)[:, None] + d[None, :], mask=in_range[:, None], other=0.0
    )
    y = x.to(tl.float32)
    if NORM:
        inv_rms = 1.0 / tl.sqrt(tl.sum(y * y, axis=1) / DH + eps)
        y = y * inv_rms[:, None]
        if WEIGHT:
            y = y * tl.load(weight_ptr + d).to(tl.float32)[None, :]
        y = y.to(x.dtype).to(tl.float32)
    if ROPE:
        p = tl.arange(0, DH // 2)
        cos = tl.load(
            cos_ptr + (b * sc_b + s * sc_s + h * sc_h)[:, None] + p[None, :] * sc_p,
            mask=in_range[:, None],
            other=0.0,
        )
        sin = tl.load(
            sin_ptr + (b * ss_b + s * ss_s + h * ss_h)[:, None] + p[None, :] * ss_p,
            mask=in_range[:, None],
            other=0.0,
        )
        even, odd = tl.split(tl.reshape(y, (BLOCK_R, DH // 2, 2)))
        rotated_even = (even * cos - odd * sin).to(x.dtype)
        rotated_odd = (even * sin + odd * cos).to(x.dtype)
        y = tl.reshape(tl.join(rotated_even, rotated_odd), (BLOCK_R, DH))
    tl.store(
        out_ptr + (b * so_b + s * so_s + h * so_h)[:, None] + d[None, :],
        y.to(out_ptr.dtype.element_ty),
        mask=in_range[:, None],
    )


def rms_norm_rope(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    eps: float | None,
    cos: torch.Tensor | None,
    sin: torch.Tensor | None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Launches the kernel on x `[b, S, nh, dh]`; writes `out` (a new contiguous tensor by default)."""
    b, seq, heads, dh = x.shape
    if x.stride(3) != 1 or dh & (dh - 1) or dh < 2:
        raise ValueError(
            f"rms_norm_rope: x must have a contiguous power-of-two last dim; got {tuple(x.shape)}"
        )
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if out is None else out
    rope = cos is not None
    if rope:
        cos, sin = (t.expand(b, seq, heads, dh // 2) for t in (cos, sin))
    norm = eps is not None
    rows = b * seq * heads
    grid = (triton.cdiv(rows, ROWS_PER_PROGRAM),)
    rms_norm_rope_kernel[grid](
        x,
        weight if weight is not None else x,
        cos if rope else x,
        sin if rope else x,
        out,
        rows,
        seq,
        heads,
        x.stride(0),
        x.stride(1),
        x.stride(2),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        *(cos.stride() if rope else (0, 0, 0, 0)),
        *(sin.stride() if rope else (0, 0, 0, 0)),
        eps if norm else 0.0,
        DH=dh,
        NORM=norm,
        WEIGHT=weight is not None,
        ROPE=rope,
        BLOCK_R=ROWS_PER_PROGRAM,
        num_warps=4,
    )
    return out
