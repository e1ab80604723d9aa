"""The op on the TT-Lang kernels: inputs laid out for the device, one launch or a ring, outputs assembled.

Entry point: `joint_attention(q, k, v, joint_q, joint_k, joint_v, *, scale, logical_n=None, logical_l=None,
q_chunk=None, k_chunk=None) -> (out, joint_out, lse)`, the op's contract (out, joint_out in q's dtype, lse
float32 [b, nh, N + L], natural log), on one device or, with `config.current().ring_size` R >= 2, on a ring of R.
Chunk sizes are in tiles; None takes `config.chunk_sizes`. Also `plan(...)`: the plan(s) a call runs, which the
cost count (`cost.py`) reads.

Valid lengths become shape metadata of the launch (a TT-Lang kernel has no index primitive to compare positions
with): the plan reads only the valid key tiles of each batch, and the upload copies only valid key and value rows
(`layout.py`), so padded rows of the inputs never reach the device.
"""

from __future__ import annotations

import torch
from jointattn.kernels.ttlang.schedule import TILE, plan_joint_attention, ring_plans

from . import config
from .backend import execute
from .layout import from_device_layout, lse_from_device_layout, mask_tiles, to_device_layout


def lengths(value, b: int, full: int) -> tuple[int, ...]:
    if value is None:
        return (full,) * b
    if isinstance(value, int):
        return (value,) * b
    return tuple(int(x) for x in value.reshape(-1).tolist())


def _chunks(n, l, dh, b, nh, dtype, q_chunk, k_chunk):  # noqa: E741
    chosen = config.chunk_sizes(n, l, dh, b=b, nh=nh, dtype=dtype)
    return (q_chunk or chosen[0], k_chunk or chosen[1])


def plan(b, nh, n, l, dh, *, valid_n, valid_l, dtype="bfloat16", q_chunk=None, k_chunk=None):  # noqa: E741
    """A list of the plans one call runs: one launch, or every (step, device) launch of a ring."""
    settings = config.current()
    q_chunk, k_chunk = _chunks(n, l, dh, b, nh, dtype, q_chunk, k_chunk)
    ring = settings.ring_size
    if ring == 1:
        return [
            plan_joint_attention(
                b,
                nh,
                n,
                l,
                dh,
                valid_n=valid_n,
                valid_l=valid_l,
                q_chunk=q_chunk,
                k_chunk=k_chunk,
                grid=settings.grid,
            )
        ]
    rows = -(-n // ring)
    steps = ring_plans(
        b, nh, rows, l, dh,
        ring=ring, valid_n=valid_n, valid_l=valid_l, q_chunk=q_chunk, k_chunk=k_chunk, grid=settings.grid,
    )  # fmt: skip
    return [p for step in steps for p in step]


def joint_attention(
    q, k, v, joint_q, joint_k, joint_v, *, scale, logical_n=None, logical_l=None, q_chunk=None, k_chunk=None
):
    b, nh, n, dh = q.shape
    l = joint_q.shape[2]  # noqa: E741
    valid_n, valid_l = lengths(logical_n, b, n), lengths(logical_l, b, l)
    dtype = config.device_dtype(q.dtype)
    bf16 = dtype == "bfloat16"
    plans = plan(
        b, nh, n, l, dh, valid_n=valid_n, valid_l=valid_l, dtype=dtype, q_chunk=q_chunk, k_chunk=k_chunk
    )
    joint = _joint_inputs(joint_q, joint_k, joint_v, valid_l, bf16)
    ring = config.current().ring_size
    if ring == 1:
        spatial = [
            _nonempty(to_device_layout(q, bfloat16=bf16)),
            _nonempty(to_device_layout(k, list(valid_n), bfloat16=bf16)),
            _nonempty(to_device_layout(v, list(valid_n), bfloat16=bf16)),
        ]
        request = {
            "kind": "joint",
            "plan": plans[0],
            "scale": scale,
            "dtype": dtype,
            "inputs": spatial + joint,
        }
        o, jo, m, jm = execute(request)
        out = from_device_layout(o, b, nh, n, dh)
        lse = [lse_from_device_layout(m, b, nh, n)]
    else:
        out, lse, per_device = _ring(q, k, v, joint, valid_n, valid_l, ring, scale, dtype, plans[0])
        # joint_out is replicated: every device computed it (kernels/ttlang/ring.py); device 0's is returned.
        _, jo, _, jm = per_device[0]
    joint_out = from_device_layout(jo, b, nh, l, dh)
    lse = torch.cat([*lse, lse_from_device_layout(jm, b, nh, l)], dim=-1)
    return out.to(q.dtype), joint_out.to(q.dtype), lse.float()


def _ring(q, k, v, joint, valid_n, valid_l, ring, scale, dtype, first_plan):
    """Spatial rows padded to ring * Nr and sharded; device d's K/V valid rows counted within its shard."""
    b, nh, n, dh = q.shape
    rows = -(-n // ring)
    bf16 = dtype == "bfloat16"
    pad = rows * ring - n

    def padded(t):
        return torch.nn.functional.pad(t, (0, 0, 0, pad)) if pad else t

    qq, kk, vv = padded(q), padded(k), padded(v)
    shards = []
    for d in range(ring):
        part = slice(d * rows, (d + 1) * rows)
        valid = [min(max(x - d * rows, 0), rows) for x in valid_n]
        shards.append(
            (
                _nonempty(to_device_layout(qq[:, :, part], bfloat16=bf16)),
                _nonempty(to_device_layout(kk[:, :, part], valid, bfloat16=bf16)),
                _nonempty(to_device_layout(vv[:, :, part], valid, bfloat16=bf16)),
            )
        )
    request = {
        "kind": "ring",
        "shards": shards,
        "joint": joint,
        "valid_n": list(valid_n),
        "valid_l": list(valid_l),
        "sizes": (b, nh, rows, first_plan.l, dh),
        "scale": scale,
        "q_chunk": first_plan.q_chunk,
        "k_chunk": first_plan.k_chunk,
        "grid": first_plan.grid,
        "dtype": dtype,
    }
    per_device = execute(request)
    out = torch.cat([from_device_layout(o[0], b, nh, rows, dh) for o in per_device], dim=2)[:, :, :n]
    lse = torch.cat([lse_from_device_layout(o[2], b, nh, rows) for o in per_device], dim=-1)[:, :, :n]
    return out, [lse], per_device


def ring_joint_outputs(q, k, v, joint_q, joint_k, joint_v, *, scale, logical_n=None, logical_l=None):
    """Every device's joint_out [b, nh, L, dh] of a ring call (`config.current().ring_size` >= 2), to check
    that the replicated result agrees across devices."""
    b, nh, n, dh = q.shape
    l = joint_q.shape[2]  # noqa: E741
    valid_n, valid_l = lengths(logical_n, b, n), lengths(logical_l, b, l)
    dtype = config.device_dtype(q.dtype)
    bf16 = dtype == "bfloat16"
    plans = plan(b, nh, n, l, dh, valid_n=valid_n, valid_l=valid_l, dtype=dtype)
    joint = _joint_inputs(joint_q, joint_k, joint_v, valid_l, bf16)
    ring = config.current().ring_size
    _, _, per_device = _ring(q, k, v, joint, valid_n, valid_l, ring, scale, dtype, plans[0])
    return [from_device_layout(o[1], b, nh, l, dh) for o in per_device]


def _joint_inputs(joint_q, joint_k, joint_v, valid_l, bf16: bool) -> list[torch.Tensor]:
    """joint_q, joint_k, joint_v and the mask tiles in the device layout: the same on every device."""
    return [
        _nonempty(to_device_layout(joint_q, bfloat16=bf16)),
        _nonempty(to_device_layout(joint_k, list(valid_l), bfloat16=bf16)),
        _nonempty(to_device_layout(joint_v, list(valid_l), bfloat16=bf16)),
        mask_tiles(),
    ]


def _nonempty(t: torch.Tensor) -> torch.Tensor:
    """An empty token set still gets one tile of zeros: TT-NN has no tiled tensor without rows (never read)."""
    return t if t.shape[0] else t.new_zeros((TILE, t.shape[1]))
