"""Ring joint attention over R devices with the TT-Lang operation, as ttnn's
`ring_joint_scaled_dot_product_attention` arranges it: spatial tokens sharded, joint tokens replicated, K/V
shards passed around the ring, partial results merged by log-sum-exp, `logical_n` counting the valid spatial
tokens before sharding.

Entry point: `ring_joint_attention(ttnn, shards, joint, *, valid_n, valid_l, sizes, scale, q_chunk, k_chunk,
grid, dtype) -> per-device outputs`, for batches that share their valid lengths `valid_n`, `valid_l` (ints; the
runtime makes one ring per distinct pair). `shards[d]` = (q, k, v) of device d: spatial rows [d * Nr, (d + 1) * Nr)
with Nr = ceil(N / R), in the device layout (`jointattn.runtime.ttlang.layout`, keys and values zero past their
valid rows); `joint` = (joint_q, joint_k, joint_v, mask_tiles), the same on every device.

Step s on device d attends its queries (its spatial shard and all joint queries) to the K/V shard that started
on device (d - s) mod R, whose valid rows are clamp(logical_n - origin * Nr, 0, Nr), and, at step 0 only, to the
joint keys, so they count once. The merge is the kernel's own online softmax: a step starts from the (out, lse)
the previous one left on the device (`Launch.carry`: only once earlier steps saw a valid key) and continues it, so no separate merge pass reads partial results back. Every device computes joint_out;
the copies agree to rounding (each device merges the shards in its own order).

Passing K/V: tt-lang-sim's mesh APIs are stubs (its `ttnnsim` runs every operation as on one device and models no
fabric), and TT-Lang has no pipes between devices yet (spec, functionality matrix: "PipeNet on multidevice grid:
N/S"). So each device here is its own set of DRAM tensors and its own launches, and a pass hands the K/V tensors
a device holds to the next one (`_pass_to_next`); on hardware that is one `ttnn.point_to_point` per device per
step, which the simulator does not have.
"""

from __future__ import annotations

from .launch import output_tensors, run, upload
from .schedule import ring_plans


def _pass_to_next(held: list) -> list:
    """Device d receives what device d - 1 held (a fabric transfer on hardware; a hand-over here)."""
    return [held[(d - 1) % len(held)] for d in range(len(held))]


def ring_joint_attention(
    ttnn,
    shards,
    joint,
    *,
    valid_n: int,
    valid_l: int,
    sizes: tuple[int, int, int, int, int],
    scale: float,
    q_chunk: int,
    k_chunk: int,
    grid: tuple[int, int],
    dtype: str,
):
    """Returns, per device, its four outputs as host tensors (out, joint_out, lse, joint_lse)."""
    b, nh, shard_rows, l, dh = sizes  # noqa: E741
    ring = len(shards)
    plans = ring_plans(
        b, nh, shard_rows, l, dh,
        ring=ring, valid_n=valid_n, valid_l=valid_l, q_chunk=q_chunk, k_chunk=k_chunk, grid=grid,
    )  # fmt: skip
    mesh = ttnn.open_mesh_device(ttnn.MeshShape(1, ring))
    # Every tensor below belongs to one device of the mesh: queries[d], held[d], joint_tensors[d], outputs[d].
    queries = [upload(ttnn, mesh, q, dtype) for q, _, _ in shards]
    held = [(upload(ttnn, mesh, k, dtype), upload(ttnn, mesh, v, dtype)) for _, k, v in shards]
    joint_tensors = [[upload(ttnn, mesh, t, dtype) for t in joint] for _ in range(ring)]
    outputs = [output_tensors(ttnn, mesh, plans[0][d], dtype) for d in range(ring)]
    for step_plans in plans:
        for d, plan in enumerate(step_plans):
            jq, jk, jv, mask = joint_tensors[d]
            k, v = held[d]
            run(plan, scale, [queries[d], k, v, jq, jk, jv, mask], outputs[d])
        held = _pass_to_next(held)
    ttnn.close_mesh_device(mesh)
    return [[ttnn.to_torch(t) for t in device_outputs] for device_outputs in outputs]
