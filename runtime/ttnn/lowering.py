"""joint_attention on Tenstorrent devices through ttnn: torch tensors in, ttnn ops, torch tensors out.

Entry points (both take CPU torch tensors q, k, v [b,nh,N,dh] and joint_q, joint_k, joint_v [b,nh,L,dh], and
return (out [b,nh,N,dh], joint_out [b,nh,L,dh], lse [b,nh,N+L] float32), the op's three outputs):
- `joint_sdpa(...)`: one device, `ttnn.transformer.joint_scaled_dot_product_attention`.
- `ring_joint_sdpa(...)`: a (1, ring_size) mesh, `ttnn.transformer.ring_joint_scaled_dot_product_attention`,
  spatial tokens sharded over the devices (dim 2), joint tokens replicated.
- `close_devices()`: closes what the lowering opened (it keeps one device/mesh open across calls; also at exit).

Steps: check everything ttnn would refuse, before any device call (`_check_inputs`); group the batch by its
valid lengths (ttnn takes one length per call); per group lay the tokens out (`packing.py`: valid lengths become
shapes or logical_n/logical_l, padded rows and the lse come from sink tokens and two value channels); upload
(`from_torch`: bfloat16 or bfloat8_b, TILE layout, DRAM, on the device/mesh); call the op with the program and
compute configs of `config.py`; read back (`to_torch`) and decode. Every ttnn call is made on the module
`module.load_ttnn()` returns (the real ttnn, or its emulation), methods of ttnn objects included: they are called
through their class (`ttnn.MeshDevice.compute_with_storage_grid_size(device)`), so a test that wraps the module
(`jointattn.testing.ttnn_recording`) sees every call.
"""

from __future__ import annotations

import atexit
import math

import torch

from ..validation import check_length_arg, check_tensors
from . import config
from .module import load_ttnn
from .packing import Plan, normalizer_channels, plan_ring, plan_single

_open: dict[tuple, object] = {}


def _device(api, device):
    """The caller's device, or the one this module keeps open (opened on first use)."""
    if device is not None:
        return device
    key = (api.__name__, "device")  # per ttnn: a device of the emulation is no use to the real ttnn
    if key not in _open:
        _open[key] = (api, api.open_device(device_id=0))
    return _open[key][1]


def _mesh(api, mesh, ring_size: int):
    if mesh is not None:
        return mesh
    key = (api.__name__, "mesh", ring_size)
    if key not in _open:
        for other in [k for k in _open if k[:2] == key[:2]]:  # one mesh at a time: its devices may overlap
            _close(other)
        # CCL ops (the ring's all-gather) need a fabric, set before the mesh opens.
        api.set_fabric_config(api.FabricConfig.FABRIC_1D)
        _open[key] = (api, api.open_mesh_device(mesh_shape=api.MeshShape(1, ring_size)))
    return _open[key][1]


def _close(key) -> None:
    api, handle = _open.pop(key)
    if key[1] == "device":
        api.close_device(handle)
    else:
        api.close_mesh_device(handle)


def close_devices() -> None:
    for key in list(_open):
        _close(key)


atexit.register(close_devices)


# --- checks before any device call ---------------------------------------------------------------------------


def _lengths(name: str, value, shape, device) -> list[int]:
    check_length_arg(name, value, shape, device)
    full = shape.n if name == "logical_n" else shape.l
    if value is None:
        return [full] * shape.b
    if isinstance(value, int):
        return [value] * shape.b
    return [int(x) for x in value.tolist()]


def _check_inputs(tensors, scale, logical_n, logical_l, joint_strategy, chunks):
    if joint_strategy != "rear":
        raise ValueError(
            f"ttnn lowering: joint_strategy must be 'rear' (joint tokens after the spatial ones), the only strategy "
            f"ttnn's joint SDPA implements; got {joint_strategy!r}"
        )
    shape = check_tensors(*tensors)  # six tensors, one dtype and device, equal heads and head dim
    q = tensors[0]
    if q.device.type != "cpu":
        raise ValueError(
            f"ttnn lowering: q, k, v, joint_q, joint_k, joint_v must be CPU tensors (ttnn.from_torch "
            f"uploads them); got tensors on {q.device}"
        )
    if (
        isinstance(scale, bool)
        or not isinstance(scale, (int, float))
        or not math.isfinite(scale)
        or scale <= 0
    ):
        raise ValueError(
            "ttnn lowering: scale must be a finite float > 0 (ttnn folds it into exp((s - max) * scale) with the "
            f"max of unscaled scores, which a scale <= 0 breaks); got {scale!r}"
        )
    for name, value in chunks.items():
        config.check_chunk(name, value)
    return (
        shape,
        _lengths("logical_n", logical_n, shape, q.device),
        _lengths("logical_l", logical_l, shape, q.device),
    )


def _groups(ns: list[int], ls: list[int]) -> dict[tuple[int, int], list[int]]:
    """Batch indices by (valid N, valid L): one device call per distinct pair."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, pair in enumerate(zip(ns, ls, strict=True)):
        groups.setdefault(pair, []).append(i)
    return groups


# --- shared per-call steps -----------------------------------------------------------------------------------


def _chunks(plan: Plan, explicit: dict, cores: int, ring_size: int) -> tuple[int, int]:
    s = config.current()
    rows_n = plan.spatial[0].shape[2] // ring_size
    choice = config.choose_chunks(
        rows_n,
        plan.joint[0].shape[2],
        plan.channels.width,
        b=plan.spatial[0].shape[0],
        nh=plan.spatial[0].shape[1],
        cores=cores,
        dtype=s.dtype,
        ring_size=ring_size,
    )
    q = explicit["q_chunk_size"] or s.q_chunk_size or choice[0]
    k = explicit["k_chunk_size"] or s.k_chunk_size or choice[1]
    return q, k


def _device_grid(api, device) -> tuple[int, int]:
    full = api.MeshDevice.compute_with_storage_grid_size(device)
    wanted = config.current().grid
    if wanted is not None and (wanted[0] > full.x or wanted[1] > full.y):
        raise ValueError(f"ttnn settings: grid {wanted} exceeds the device's {full.x}x{full.y} cores")
    return wanted or (full.x, full.y)


def _upload(api, t: torch.Tensor, device, mapper=None):
    return api.from_torch(
        t,
        dtype=config.device_dtype(api),
        layout=api.TILE_LAYOUT,
        device=device,
        memory_config=api.DRAM_MEMORY_CONFIG,
        mesh_mapper=mapper,
        pad_value=0.0,
    )


def _run_groups(tensors, ns, ls, make_plan, run_plan):
    q, joint_q = tensors[0], tensors[3]
    b, nh, big_n, dh = q.shape
    big_l = joint_q.shape[2]
    out = torch.zeros(b, nh, big_n, dh)
    joint_out = torch.zeros(b, nh, big_l, dh)
    lse = torch.full((b, nh, big_n + big_l), -math.inf)
    for (n, l), idx in _groups(ns, ls).items():  # noqa: E741
        if n + l == 0:
            continue  # no key exists: out 0 and lse -inf, as the op defines, without a device call
        index = torch.tensor(idx)
        plan = make_plan(*(t.index_select(0, index) for t in tensors), n, l)
        o, jo, m = plan.decode(run_plan(plan), big_n, big_l)
        out[index], joint_out[index], lse[index] = o, jo, m
    return out.to(q.dtype), joint_out.to(q.dtype), lse


# --- entry points --------------------------------------------------------------------------------------------


def joint_sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    joint_q: torch.Tensor,
    joint_k: torch.Tensor,
    joint_v: torch.Tensor,
    *,
    scale: float,
    logical_n: int | torch.Tensor | None = None,
    logical_l: int | torch.Tensor | None = None,
    q_chunk_size: int | None = None,
    k_chunk_size: int | None = None,
    joint_strategy: str = "rear",
    device=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """joint_attention on one device through `ttnn.transformer.joint_scaled_dot_product_attention`.

    Args:
        q, k, v, joint_q, joint_k, joint_v: CPU tensors, [b,nh,N,dh] and [b,nh,L,dh], one dtype.
        scale: softmax scale (> 0), passed to ttnn explicitly (its default would use the widened head dim).
        logical_n, logical_l: valid lengths: None (all), an int, or an int tensor [b].
        q_chunk_size, k_chunk_size: multiples of 32 overriding `config`'s choice.
        device: an open ttnn device; default: one this module opens (device 0) and keeps.
    """
    tensors = (q, k, v, joint_q, joint_k, joint_v)
    explicit = {"q_chunk_size": q_chunk_size, "k_chunk_size": k_chunk_size}
    shape, ns, ls = _check_inputs(tensors, scale, logical_n, logical_l, joint_strategy, explicit)
    api = load_ttnn()
    block_float = config.current().dtype == "bfloat8_b"
    channels = normalizer_channels(shape.dh, block_float)
    dev = _device(api, device)
    grid = _device_grid(api, dev)
    compute = config.compute_kernel_config(api)

    def run(plan: Plan):
        qc, kc = _chunks(plan, explicit, grid[0] * grid[1], 1)
        inputs = [_upload(api, t, dev) for t in (*plan.spatial, *plan.joint)]
        out, joint_out = api.transformer.joint_scaled_dot_product_attention(
            *inputs,
            joint_strategy="rear",
            program_config=config.program_config(api, grid, qc, kc),
            scale=float(scale),
            compute_kernel_config=compute,
        )
        return api.to_torch(out), api.to_torch(joint_out)

    return _run_groups(tensors, ns, ls, lambda *t: plan_single(*t, channels, float(scale)), run)


def ring_joint_sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    joint_q: torch.Tensor,
    joint_k: torch.Tensor,
    joint_v: torch.Tensor,
    *,
    scale: float,
    logical_n: int | torch.Tensor | None = None,
    logical_l: int | torch.Tensor | None = None,
    ring_size: int | None = None,
    q_chunk_size: int | None = None,
    k_chunk_size: int | None = None,
    joint_strategy: str = "rear",
    mesh=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """joint_attention over a ring of devices through `ttnn.transformer.ring_joint_scaled_dot_product_attention`.

    The spatial tokens are sharded over `ring_size` devices of a (1, ring_size) mesh (padded with zero rows to
    ring_size * N_local, N_local a multiple of 32), the joint tokens replicated; `logical_n`/`logical_l` of the
    ring op carry the valid lengths. Arguments as `joint_sdpa`; `ring_size` defaults to `config`'s (>= 2), `mesh`
    to a (1, ring_size) mesh this module opens with a 1-D fabric.
    """
    tensors = (q, k, v, joint_q, joint_k, joint_v)
    explicit = {"q_chunk_size": q_chunk_size, "k_chunk_size": k_chunk_size}
    shape, ns, ls = _check_inputs(tensors, scale, logical_n, logical_l, joint_strategy, explicit)
    ring = ring_size if ring_size is not None else config.current().ring_size
    if mesh is not None:
        ring = mesh.get_num_devices()
    if isinstance(ring, bool) or not isinstance(ring, int) or ring < 2:
        raise ValueError(
            f"ttnn lowering: ring_size must be an int >= 2 for the ring op; got {ring!r} (1 device: joint_sdpa)"
        )
    api = load_ttnn()
    channels = normalizer_channels(shape.dh, config.current().dtype == "bfloat8_b")
    mesh = _mesh(api, mesh, ring)
    full = _device_grid(api, mesh)
    grid = config.sdpa_grid(full, ring=True)
    all_cores = api.CoreRangeSet(
        {api.CoreRange(api.CoreCoord(0, 0), api.CoreCoord(full[0] - 1, full[1] - 1))}
    )
    semaphores = [api.create_global_semaphore(mesh, all_cores, 0) for _ in range(2)]
    compute = config.compute_kernel_config(api)

    def run(plan: Plan):
        qc, kc = _chunks(plan, explicit, grid[0] * grid[1], ring)
        shard = api.ShardTensorToMesh(mesh, dim=2)
        replicate = api.ReplicateTensorToMesh(mesh)
        spatial = [_upload(api, t, mesh, shard) for t in plan.spatial]
        joint = [_upload(api, t, mesh, replicate) for t in plan.joint]
        gathered = [_upload(api, torch.zeros_like(t), mesh, replicate) for t in plan.spatial[1:]]
        out, joint_out, _lse = api.transformer.ring_joint_scaled_dot_product_attention(
            *spatial,
            *joint,
            persistent_output_buffer_k=gathered[0],
            persistent_output_buffer_v=gathered[1],
            joint_strategy="rear",
            logical_n=plan.logical_n,
            logical_l=plan.logical_l,
            program_config=config.program_config(api, grid, qc, kc),
            scale=float(scale),
            compute_kernel_config=compute,
            dim=2,
            multi_device_global_semaphore=semaphores,
            num_links=1,
            cluster_axis=1,
            mesh_device=mesh,
            topology=api.Topology.Linear,
            ccl_core_grid_offset=api.CoreCoord(0, grid[1]),
        )
        # The third output (the ring's log-sum-exp, or in newer tt-metal a max/sum scratch) is not used: the
        # lse comes from the normalizer channels, the same way on one device and on a ring.
        out = api.to_torch(out, mesh_composer=api.ConcatMeshToTensor(mesh, dim=2))
        replicas = api.to_torch(joint_out, mesh_composer=api.ConcatMeshToTensor(mesh, dim=0))
        return out, replicas[: out.shape[0]]

    return _run_groups(tensors, ns, ls, lambda *t: plan_ring(*t, channels, float(scale), ring), run)
