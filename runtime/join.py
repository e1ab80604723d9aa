"""The sdpa path's joins: pairs of token sets concatenated along the sequence, in one launch where it pays.

`join_pairs([(a, b, rows_a, rows_b), ...])` returns cat([a[:, :, :rows_a], b[:, :, :rows_b]], dim=2) for each
pair (contiguous, or in the private layout where asked). Large calls on a GPU go to one Triton launch
(`kernels/join_sets.py`: 4.4-5.5x torch.cat's speed on the models' strided layouts, on the H200); small ones, CPU
tensors and anything the kernel does not take go to torch.cat, whose host time is lower (a small call's joins are
host time, not copy time).

The private layout (`empty_joined(..., private=True)`): contiguous but for a batch stride padded by
`PRIVATE_BATCH_PAD` elements, which no tensor PyTorch or a model makes has. Why: torch 2.11 caches cuDNN's SDPA
backward graph keyed by q, k and v's sizes and strides alone, and bakes the first call's O and dO strides into it.
A later call with the same q, k, v key but another dO layout runs that graph on its own dO and gets wrong gradients
without an error (measured on the H200: `benchmarks/compiled_backward_check.py`, `benchmarks/NOTES-dispatch.md`).
The op's and the shortcut's q, k and v for cuDNN's backward come in this layout, so their graphs are their own.
"""

from __future__ import annotations

import torch

MAX_PAIRS = 5
# Joined bytes from which the kernel runs. Below, a call is host time: the kernel's launch (~70 µs a call in
# do_bench at the small point on the H200, most likely Triton's binder for its 80 arguments; not profiled) costs
# more than torch.cat's, and the copies it saves (torch.cat moves ~0.68 TB/s, the kernel 3-3.8) are shorter: at (2, 24, 1024, 333, 64) the forward's
# three joins (25 MB) ran 0.197 ms a call through the kernel against 0.138 through torch.cat
# (`benchmarks/results/join-h200.json`, `never_slower-join-h200.json`).
KERNEL_MIN_BYTES = 64 << 20
# Elements added to the private layout's batch stride: 128 bytes in bf16 / fp16, so every batch entry stays as
# aligned as a packed tensor's (cuDNN wants 16-byte aligned strides).
PRIVATE_BATCH_PAD = 64
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def join_pairs(pairs, private=frozenset()) -> list[torch.Tensor]:
    """The joined tensors of `pairs` ((a, b, rows_a, rows_b): [b, nh, >= rows_a, dh] and [b, nh, >= rows_b, dh]
    of one dtype, device, batch, heads and head size), in order; those whose index is in `private` in the private
    layout (`empty_joined`), the others contiguous."""
    if kernel_takes(pairs):
        return launch_join(pairs, private)
    joined = []
    for i, (a, b, ra, rb) in enumerate(pairs):
        # torch.cat into a tensor of the right size keeps its strides (no resize, no restride)
        out = empty_joined(a, ra + rb, private=True) if i in private else None
        joined.append(torch.cat([first(a, ra), first(b, rb)], dim=2, out=out))
    return joined


def empty_joined(like, rows: int, private: bool = False) -> torch.Tensor:
    """An uninitialized [b, nh, rows, dh] tensor like `like`: contiguous, or in the private layout."""
    b, nh, _, dh = like.shape
    if not private:
        return like.new_empty(b, nh, rows, dh)
    strides = _private_strides(nh, rows, dh)
    return like.new_empty(b * strides[0]).as_strided((b, nh, rows, dh), strides)


def is_private(t) -> bool:
    """Whether t [b, nh, S, dh] is in the private layout (its strides exactly; size-1 dims included)."""
    return t.stride() == _private_strides(*t.shape[1:])


def _private_strides(nh: int, rows: int, dh: int) -> tuple[int, int, int, int]:
    """The private layout's strides: packed, the batch stride plus `PRIVATE_BATCH_PAD`."""
    return (nh * rows * dh + PRIVATE_BATCH_PAD, rows * dh, dh, 1)


def to_private(t) -> torch.Tensor:
    """t itself in the private layout, or a copy of it in that layout."""
    return t if is_private(t) else empty_joined(t, t.shape[2], private=True).copy_(t)


def first(t, rows: int):
    """t's first `rows` tokens (itself when that is all of them)."""
    return t if rows == t.shape[2] else t.narrow(2, 0, rows)


def kernel_takes(pairs) -> bool:
    """Whether `join_pairs` runs these pairs as one kernel launch (large, on a GPU, a dtype and size it takes)."""
    a = pairs[0][0]
    if a.device.type != "cuda" or a.dtype not in _DTYPES or len(pairs) > MAX_PAIRS or a.shape[3] > 256:
        return False
    joined = sum(ra + rb for _, _, ra, rb in pairs) * a.shape[0] * a.shape[1] * a.shape[3] * a.element_size()
    return joined >= KERNEL_MIN_BYTES and _triton_ready()


def _triton_ready() -> bool:
    try:
        from ..kernels.join_sets import join_sets_kernel  # noqa: F401
    except ImportError:  # pragma: no cover - no Triton on this machine
        return False
    return True


def launch_join(pairs, private=frozenset()) -> list[torch.Tensor]:
    """`join_pairs` through the Triton kernel (any device Triton runs on, the interpreter included)."""
    import triton

    from ..kernels.join_sets import join_sets_kernel
    from . import fast_launch

    if not 1 <= len(pairs) <= MAX_PAIRS:
        raise ValueError(f"launch_join: pairs must number 1 to {MAX_PAIRS}, got {len(pairs)}")
    b, nh, _, dh = pairs[0][0].shape
    outs = [empty_joined(a, ra + rb, i in private) for i, (a, _, ra, rb) in enumerate(pairs)]
    # The kernel's five slots: those past len(pairs) repeat the first pair, never read (the grid stops there).
    unused = MAX_PAIRS - len(pairs)
    tensors, rows, strides = [], [], []
    for (a, jb, ra, rb), o in zip(list(pairs) + [pairs[0]] * unused, outs + [outs[0]] * unused, strict=True):
        tensors += [a, jb, o]
        rows += [ra, rb]
        strides += [*a.stride(), *jb.stride()]
    block_d = triton.next_power_of_2(dh)
    block_r = max(8192 // block_d, 16)
    longest = max(ra + rb for _, _, ra, rb in pairs)
    if longest == 0 or b * nh == 0:
        return outs
    grid = (triton.cdiv(longest, block_r), b * nh, len(pairs))
    fast_launch.launch(
        join_sets_kernel, grid, *tensors, *rows, *strides, nh, HEAD_DIM=dh, BLOCK_R=block_r, BLOCK_D=block_d,
        PRIVATE_MASK=sum(1 << i for i in private if i < len(pairs)), BATCH_PAD=PRIVATE_BATCH_PAD,
    )  # fmt: skip
    return outs
