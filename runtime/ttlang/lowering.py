"""The op on the TT-Lang kernels: inputs laid out for the device, one launch or a ring, outputs assembled.

Entry point: `joint_attention(q, k, v, joint_q, joint_k, joint_v, *, scale, logical_n=None, logical_l=None,
q_chunk=None, k_chunk=None) -> (out, joint_out, lse)`, the op's contract (out, joint_out in q's dtype, lse
float32 [b, nh, N + L], natural log), on one device or, with `config.current().ring_size` R >= 2, on a ring of R.
Chunk sizes are in tiles; None takes `config.chunk_sizes`. Also `plan(...)`: the plan(s) a call runs, which the
cost count (`cost.py`) reads.

Valid lengths become shape metadata of the launch (a TT-Lang kernel has no index primitive to compare positions
with): batches are grouped by their (valid_n, valid_l) pair, one request per group, so that every trip count of a
launch is a constant; the plan reads only the valid key tiles, and the upload copies only valid key and value
rows (`layout.py`), so padded rows of the inputs never reach the device.
"""

from __future__ import annotations

import torch
from jointattn.kernels.ttlang.schedule import TILE, batch_groups, check_l1, plan_joint_attention, ring_plans

from . import config
from .backend import execute
from .layout import from_device_layout, likeness_tiles, lse_from_device_layout, mask_tiles, to_device_layout


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
    """A list of the plans one call runs: per group of batches sharing valid lengths (`batch_groups`), one plan,
    or every (step, device) plan of a ring. Raises ValueError for chunk sizes that do not fit a core's L1."""
    settings = config.current()
    q_chunk, k_chunk = _chunks(n, l, dh, b, nh, dtype, q_chunk, k_chunk)
    check_l1(q_chunk, k_chunk, dh, dtype)  # before anything runs (the runtime's `unsupported` calls this)
    ring = settings.ring_size
    plans = []
    for batches, vn, vl in batch_groups(valid_n, valid_l):
        chunks = dict(valid_l=vl, q_chunk=q_chunk, k_chunk=k_chunk, grid=settings.grid)
        if ring == 1:
            plans.append(plan_joint_attention(len(batches), nh, n, l, dh, valid_n=vn, **chunks))
        else:
            steps = ring_plans(len(batches), nh, -(-n // ring), l, dh, ring=ring, valid_n=vn, **chunks)
            plans += [p for step in steps for p in step]
    return plans


def joint_attention(
    q, k, v, joint_q, joint_k, joint_v, *, scale, logical_n=None, logical_l=None, q_chunk=None, k_chunk=None
):
    b, nh, n, dh = q.shape
    l = joint_q.shape[2]  # noqa: E741
    valid_n, valid_l = lengths(logical_n, b, n), lengths(logical_l, b, l)
    dtype = config.device_dtype(q.dtype)
    q_chunk, k_chunk = _chunks(n, l, dh, b, nh, dtype, q_chunk, k_chunk)
    check_l1(q_chunk, k_chunk, dh, dtype)
    out, joint_out = q.new_empty((b, nh, n, dh)), q.new_empty((b, nh, l, dh))
    lse = torch.empty((b, nh, n + l), dtype=torch.float32)
    for batches, vn, vl in batch_groups(valid_n, valid_l):
        # One request per group of batches sharing valid lengths: every trip count of its launches is a constant.
        idx = torch.tensor(batches)
        group = [t.index_select(0, idx) for t in (q, k, v, joint_q, joint_k, joint_v)]
        o, jo, m, jm = _run_group(group, vn, vl, scale, dtype, q_chunk, k_chunk)[0]
        out[idx], joint_out[idx] = o.to(q.dtype), jo.to(q.dtype)
        lse[idx] = torch.cat([m, jm], dim=-1).float()
    return out, joint_out, lse


def ring_joint_outputs(q, k, v, joint_q, joint_k, joint_v, *, scale, logical_n=None, logical_l=None):
    """Every device's joint_out [b, nh, L, dh] of a ring call (`config.current().ring_size` >= 2), to check
    that the replicated result agrees across devices."""
    b, nh, n, dh = q.shape
    l = joint_q.shape[2]  # noqa: E741
    valid_n, valid_l = lengths(logical_n, b, n), lengths(logical_l, b, l)
    dtype = config.device_dtype(q.dtype)
    q_chunk, k_chunk = _chunks(n, l, dh, b, nh, dtype, None, None)
    per_device = [q.new_empty((b, nh, l, dh)) for _ in range(config.current().ring_size)]
    for batches, vn, vl in batch_groups(valid_n, valid_l):
        idx = torch.tensor(batches)
        group = [t.index_select(0, idx) for t in (q, k, v, joint_q, joint_k, joint_v)]
        for d, (_, jo, _, _) in enumerate(_run_group(group, vn, vl, scale, dtype, q_chunk, k_chunk)):
            per_device[d][idx] = jo
    return per_device


def _run_group(group, vn, vl, scale, dtype, q_chunk, k_chunk):
    """Batches sharing valid lengths `vn`, `vl`, on one device or a ring. Returns, per device (one without a ring),
    (out [g, nh, N, dh], joint_out [g, nh, L, dh], lse [g, nh, N], joint lse [g, nh, L]); a ring's out and lse
    are the whole sequence, gathered from every device."""
    q, k, v, joint_q, joint_k, joint_v = group
    g, nh, n, dh = q.shape
    l = joint_q.shape[2]  # noqa: E741
    bf16 = dtype == "bfloat16"
    settings = config.current()
    ring = settings.ring_size
    joint = _joint_inputs(
        joint_q, joint_k, joint_v, vl, bf16, mask_tiles(*likeness_tiles(q_chunk, k_chunk, dh))
    )
    if ring == 1:
        request = {
            "kind": "joint",
            "plan": plan_joint_attention(
                g,
                nh,
                n,
                l,
                dh,
                valid_n=vn,
                valid_l=vl,
                q_chunk=q_chunk,
                k_chunk=k_chunk,
                grid=settings.grid,
            ),  # fmt: skip
            "scale": scale,
            "dtype": dtype,
            "inputs": [
                _nonempty(to_device_layout(q, bfloat16=bf16)),
                _nonempty(to_device_layout(k, [vn] * g, bfloat16=bf16)),
                _nonempty(to_device_layout(v, [vn] * g, bfloat16=bf16)),
                *joint,
            ],
        }
        per_device = [execute(request)]
        o, _, m, _ = per_device[0]
        spatial = [(from_device_layout(o, g, nh, n, dh), lse_from_device_layout(m, g, nh, n))]
    else:
        per_device = _ring(q, k, v, joint, l, vn, vl, ring, scale, dtype, q_chunk, k_chunk, settings.grid)
        rows = -(-n // ring)
        out = torch.cat([from_device_layout(o[0], g, nh, rows, dh) for o in per_device], dim=2)[:, :, :n]
        lse = torch.cat([lse_from_device_layout(o[2], g, nh, rows) for o in per_device], dim=-1)[:, :, :n]
        spatial = [(out, lse)] * ring
    return [
        (o, from_device_layout(jo, g, nh, l, dh), m, lse_from_device_layout(jm, g, nh, l))
        for (o, m), (_, jo, _, jm) in zip(spatial, per_device, strict=True)
    ]


def _ring(q, k, v, joint, l, vn, vl, ring, scale, dtype, q_chunk, k_chunk, grid):  # noqa: E741
    """Spatial rows padded to ring * Nr and sharded; device d's K/V valid rows counted within its shard."""
    g, nh, n, dh = q.shape
    rows = -(-n // ring)
    bf16 = dtype == "bfloat16"
    pad = rows * ring - n

    def padded(t):
        return torch.nn.functional.pad(t, (0, 0, 0, pad)) if pad else t

    qq, kk, vv = padded(q), padded(k), padded(v)
    shards = []
    for d in range(ring):
        part = slice(d * rows, (d + 1) * rows)
        valid = [min(max(vn - d * rows, 0), rows)] * g
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
        "valid_n": vn,
        "valid_l": vl,
        "sizes": (g, nh, rows, l, dh),
        "scale": scale,
        "q_chunk": q_chunk,
        "k_chunk": k_chunk,
        "grid": grid,
        "dtype": dtype,
    }
    return execute(request)


def _joint_inputs(joint_q, joint_k, joint_v, valid_l: int, bf16: bool, masks) -> list[torch.Tensor]:
    """joint_q, joint_k, joint_v and the mask tiles in the device layout: the same on every device."""
    g = joint_q.shape[0]
    return [
        _nonempty(to_device_layout(joint_q, bfloat16=bf16)),
        _nonempty(to_device_layout(joint_k, [valid_l] * g, bfloat16=bf16)),
        _nonempty(to_device_layout(joint_v, [valid_l] * g, bfloat16=bf16)),
        masks,
    ]


def _nonempty(t: torch.Tensor) -> torch.Tensor:
    """An empty token set still gets one tile of zeros: TT-NN has no tiled tensor without rows (never read)."""
    return t if t.shape[0] else t.new_zeros((TILE, t.shape[1]))
