"""The CPU emulation of ttnn on its own: the two ops against torch at tt-metal's thresholds, their validation
messages, tile padding and tail masks, bfloat8_b rounding, and the ring op's all-gather and log-sum-exp output.

Mirrors tt-metal's `run_test_joint_sdpa` (ground truth cat -> SDPA -> slice, PCC >= 0.994, RMSE < 0.013) on the
emulated op. What this cannot show: how the real kernels' bfloat16 intermediates and approximate exp behave.
"""

import math

import pytest
import torch
from jointattn.runtime.ttnn import lowering

from jointattn.testing import ttnn_emulation as tt
from jointattn.testing.comparison import PCC_THRESHOLD, RMSE_THRESHOLD, fa_rand, pcc, rmse
from jointattn.testing.ttnn_emulation.core import round_to_dtype


@pytest.fixture(autouse=True, scope="module")
def _release_lowering_devices():
    """The lowering keeps its device/mesh open across calls (tests of other files may have used it): give it
    back before this module opens devices itself, as a user would have to."""
    lowering.close_devices()
    yield


@pytest.fixture(scope="module")
def device():
    dev = tt.open_device(device_id=0)
    yield dev
    tt.close_device(dev)


def _upload(x, device, dtype=tt.bfloat16, **kw):
    kw.setdefault("layout", tt.TILE_LAYOUT)
    return tt.from_torch(x, dtype=dtype, device=device, **kw)


def _torch_joint(q, k, v, jq, jk, jv, scale=None):
    out = torch.nn.functional.scaled_dot_product_attention(
        torch.cat([q, jq], 2).double(),
        torch.cat([k, jk], 2).double(),
        torch.cat([v, jv], 2).double(),
        scale=scale,
    )
    n = q.shape[2]
    return out[:, :, :n], out[:, :, n:]


def _config(q_chunk, k_chunk, grid=(8, 8)):
    return tt.SDPAProgramConfig(
        compute_with_storage_grid_size=grid, q_chunk_size=q_chunk, k_chunk_size=k_chunk
    )


def run_joint(device, b, nh, n, l, d, q_chunk, k_chunk, dtype, seed):  # noqa: E741
    g = torch.Generator().manual_seed(seed)
    inputs = [fa_rand(b, nh, s, d, generator=g) for s in (n, n, n, l, l, l)]
    out, joint_out = tt.transformer.joint_scaled_dot_product_attention(
        *(_upload(x, device, dtype) for x in inputs),
        joint_strategy="rear",
        program_config=_config(q_chunk, k_chunk),
    )
    expected = _torch_joint(*inputs)
    for got, want in zip((tt.to_torch(out), tt.to_torch(joint_out)), expected, strict=True):
        assert got.shape == want.shape
        assert pcc(want, got) >= PCC_THRESHOLD
        assert rmse(want, got) < RMSE_THRESHOLD


@pytest.mark.parametrize("dtype", [tt.bfloat16, tt.bfloat8_b], ids=["bf16", "bfp8"])
@pytest.mark.parametrize(
    "q_chunk, k_chunk", [(32, 128), (128, 512), (64, 32)], ids=["q32k128", "q128k512", "q64k32"]
)
@pytest.mark.parametrize(
    "n, l",  # noqa: E741
    [
        (15, 19),  # tt-metal's odd lengths: both sets padded inside one tile
        (3000, 100),  # tt-metal: neither a multiple of any chunk
        (64, 256),  # both multiples of the chunks: no mask at all
    ],
    ids=["15x19", "3000x100", "64x256"],
)
def test_joint_op_matches_torch(device, n, l, q_chunk, k_chunk, dtype):  # noqa: E741
    run_joint(device, 1, 2, n, l, 64, q_chunk, k_chunk, dtype, seed=n + l)


def test_joint_op_masks_the_tile_padding_of_keys(device):
    """Keys in tile padding (filled with a huge pad_value) must not exist: the tail-chunk mask hides them."""
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(1, 1, s, 32, generator=g) for s in (15, 15, 15, 19, 19, 19)]
    results = []
    for pad in (0.0, 1e4):
        tensors = [_upload(x, device, pad_value=pad) for x in inputs]
        out, joint_out = tt.transformer.joint_scaled_dot_product_attention(
            *tensors, joint_strategy="rear", program_config=_config(32, 32)
        )
        results.append((tt.to_torch(out), tt.to_torch(joint_out)))
    torch.testing.assert_close(results[0], results[1], atol=0, rtol=0)
    want = _torch_joint(*(x.to(torch.bfloat16) for x in inputs))
    torch.testing.assert_close(results[0][0].double(), want[0], atol=8e-3, rtol=8e-3)


def test_joint_op_output_shapes_dtype_and_padding(device):
    inputs = [torch.randn(2, 3, s, 64) for s in (40, 40, 40, 7, 7, 7)]
    out, joint_out = tt.transformer.joint_scaled_dot_product_attention(
        *(_upload(x, device, tt.bfloat8_b) for x in inputs),
        joint_strategy="rear",
        program_config=_config(64, 64),
    )
    assert out.shape == (2, 3, 40, 64) and out.padded_shape == (2, 3, 64, 64)
    assert joint_out.shape == (2, 3, 7, 64) and joint_out.padded_shape == (2, 3, 32, 64)
    assert out.dtype == tt.bfloat8_b and out.layout == tt.TILE_LAYOUT


def _six(device, n=32, l=32, d=64, dtypes=None, **kw):  # noqa: E741
    dtypes = dtypes or [tt.bfloat16] * 6
    return [
        _upload(torch.randn(1, 2, s, d), device, dt, **kw)
        for s, dt in zip((n, n, n, l, l, l), dtypes, strict=True)
    ]


def _call(tensors, strategy="rear", config=None):
    return tt.transformer.joint_scaled_dot_product_attention(
        *tensors, joint_strategy=strategy, program_config=config or _config(32, 32)
    )


@pytest.mark.parametrize(
    "case, message",
    [
        ("strategy", "Joint strategy must be 'rear'. Got: front"),
        (
            "dtype",
            "All tensors must have the same dtype. Expected DataType::BFLOAT16, got DataType::BFLOAT8_B",
        ),
        ("row_major", "Inputs to Joint SDPA must be tilized"),
        ("float32", "Inputs to Joint SDPA must be BF16 or BF8"),
        ("l1", "Operands to Joint SDPA need to be in DRAM"),
        ("host", "Operands to Joint SDPA need to be on device"),
        ("q_chunk", "q_chunk_size must be divisible by TILE_SIZE. Got q_chunk_size: 48, TILE_SIZE: 32"),
        ("k_chunk", "k_chunk_size must be divisible by TILE_SIZE. Got k_chunk_size: 40, TILE_SIZE: 32"),
        ("head_dim", "Padding is not supported on the head_dim dimension"),
        ("heads", "Q num_heads must be equal to K num_heads. Got Q: 2, K: 1"),
        (
            "grid",
            "Provided grid must not contain more cores than the device. Got 90 cores, expected at most 64 cores.",
        ),
    ],
)
def test_joint_op_validation_messages(device, case, message):
    tensors, strategy, config = _six(device), "rear", None
    if case == "strategy":
        strategy = "front"
    elif case == "dtype":
        tensors = _six(device, dtypes=[tt.bfloat16] * 5 + [tt.bfloat8_b])
    elif case == "row_major":
        tensors = _six(device, layout=tt.ROW_MAJOR_LAYOUT)
    elif case == "float32":
        tensors = _six(device, dtypes=[tt.float32] * 6)
    elif case == "l1":
        tensors = _six(device, memory_config=tt.L1_MEMORY_CONFIG)
    elif case == "host":
        tensors = [tt.from_torch(torch.randn(1, 2, 32, 64), dtype=tt.bfloat16, layout=tt.TILE_LAYOUT)] * 6
    elif case == "q_chunk":
        config = _config(48, 32)
    elif case == "k_chunk":
        config = _config(32, 40)
    elif case == "head_dim":
        tensors = _six(device, d=48)
    elif case == "heads":
        tensors[1] = _upload(torch.randn(1, 1, 32, 64), device)
    elif case == "grid":
        config = _config(32, 32, grid=(9, 10))
    with pytest.raises(RuntimeError, match="TT_FATAL: " + message.replace("(", r"\(").replace(")", r"\)")):
        _call(tensors, strategy, config)


def test_bfloat8_b_shares_one_exponent_per_16_values():
    row = torch.tensor([[1.0, 2.0**-9, 0.75, -0.3] + [0.0] * 12 + [2.0**-9, 2.0**-10] + [0.0] * 14])
    stored = round_to_dtype(row, tt.bfloat8_b)
    assert stored[0, 1] == 0  # 2^-9 is below 7 bits under the block's exponent (2^0): flushed
    assert stored[0, 16] == 2.0**-9 and stored[0, 17] == 2.0**-10  # its own block keeps it exactly
    assert stored[0, 2] == 0.75 and abs(stored[0, 3] + 0.3) <= 2.0**-7


# --- the ring op ------------------------------------------------------------------------------------------------


@pytest.fixture
def mesh(request):
    tt.set_fabric_config(tt.FabricConfig.FABRIC_1D)
    m = tt.open_mesh_device(mesh_shape=tt.MeshShape(1, request.param))
    yield m
    tt.close_mesh_device(m)
    tt.set_fabric_config(tt.FabricConfig.DISABLED)


def _ring_call(mesh, q, k, v, jq, jk, jv, logical_n, logical_l=0, q_chunk=32, k_chunk=64, **overrides):
    ring = mesh.get_num_devices()
    shard, replicate = tt.ShardTensorToMesh(mesh, dim=2), tt.ReplicateTensorToMesh(mesh)

    def up(x, mapper):
        return tt.from_torch(x, dtype=tt.bfloat16, layout=tt.TILE_LAYOUT, device=mesh, mesh_mapper=mapper)

    buffers = [up(torch.zeros_like(x), replicate) for x in (k, v)]
    kwargs = dict(
        persistent_output_buffer_k=buffers[0],
        persistent_output_buffer_v=buffers[1],
        joint_strategy="rear",
        logical_n=logical_n,
        logical_l=logical_l,
        program_config=_config(q_chunk, k_chunk, grid=(8, 7)),
        dim=2,
        multi_device_global_semaphore=[tt.create_global_semaphore(mesh, None, 0)] * 2,
        num_links=1,
        cluster_axis=1,
        mesh_device=mesh,
        topology=tt.Topology.Linear,
        ccl_core_grid_offset=tt.CoreCoord(0, 7),
    )
    kwargs.update(overrides)
    outputs = tt.transformer.ring_joint_scaled_dot_product_attention(
        up(q, shard),
        up(k, shard),
        up(v, shard),
        up(jq, replicate),
        up(jk, replicate),
        up(jv, replicate),
        **kwargs,
    )
    assert len(outputs) == 3 and ring == len(outputs[0].shards)
    return outputs, buffers


@pytest.mark.parametrize("mesh", [2, 4], indirect=True, ids=["ring2", "ring4"])
@pytest.mark.parametrize("logical_n, l, logical_l", [(250, 19, 0), (200, 40, 23)], ids=["n250", "n200-l23"])  # noqa: E741
def test_ring_op_matches_torch_and_returns_the_lse(mesh, logical_n, l, logical_l):  # noqa: E741
    ring = mesh.get_num_devices()
    n_global = 256
    g = torch.Generator().manual_seed(logical_n + ring)
    q, k, v = (fa_rand(1, 2, n_global, 64, generator=g) for _ in range(3))
    jq, jk, jv = (fa_rand(1, 2, l, 64, generator=g) for _ in range(3))
    (out, joint_out, lse), buffers = _ring_call(mesh, q, k, v, jq, jk, jv, logical_n, logical_l)
    valid_l = logical_l or l
    keys = [
        torch.cat([x[:, :, :logical_n], y[:, :, :valid_l]], 2).to(torch.bfloat16).double()
        for x, y in ((k, jk), (v, jv))
    ]
    rows = torch.cat([q, jq], 2).to(torch.bfloat16).double()
    scale = 64**-0.5
    scores = rows @ keys[0].transpose(-1, -2) * scale
    want_out = torch.softmax(scores, -1) @ keys[1]
    want_lse = torch.logsumexp(scores, -1)
    got_out = tt.to_torch(out, mesh_composer=tt.ConcatMeshToTensor(mesh, dim=2))
    assert pcc(want_out[:, :, :n_global], got_out) >= PCC_THRESHOLD
    torch.testing.assert_close(got_out.double(), want_out[:, :, :n_global], atol=2e-2, rtol=2e-2)
    replicas = tt.to_torch(joint_out, mesh_composer=tt.ConcatMeshToTensor(mesh, dim=0))
    assert replicas.shape[0] == ring
    for replica in replicas:
        torch.testing.assert_close(replica.double(), want_out[0, :, n_global:], atol=2e-2, rtol=2e-2)
    # The lse output: [b, nh, N_local + padded L, 1] per device, local rows then joint rows.
    lse_all = tt.to_torch(lse, mesh_composer=tt.ConcatMeshToTensor(mesh, dim=2))
    local = n_global // ring
    rows_per_device = local + -(-l // 32) * 32
    assert lse_all.shape == (1, 2, ring * rows_per_device, 1)
    for d in range(ring):
        block = lse_all[0, :, d * rows_per_device :, 0]
        torch.testing.assert_close(
            block[:, :local].double(), want_lse[0, :, d * local : (d + 1) * local], atol=0.05, rtol=1e-2
        )
        torch.testing.assert_close(
            block[:, local : local + l].double(), want_lse[0, :, n_global:], atol=0.05, rtol=1e-2
        )
    # The all-gather filled the persistent buffers with every shard's keys.
    gathered = tt.to_torch(buffers[0], mesh_composer=tt.ConcatMeshToTensor(mesh, dim=0))
    for replica in gathered:
        torch.testing.assert_close(replica, k[0].to(torch.bfloat16))


@pytest.mark.parametrize("mesh", [2], indirect=True, ids=["ring2"])
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(logical_n=0), "Logical sequence length must be > 0"),
        (dict(logical_n=300), "Logical sequence length must be less than or equal to global sequence length"),
        (dict(joint_strategy="front"), "Joint strategy must be 'rear'. Got: front"),
        (
            dict(ccl_core_grid_offset=tt.CoreCoord(0, 6)),
            r"SDPA coregrid overlaps with AllGather coregrid \(row-major\)",
        ),
        (dict(num_links=0), "Error, num_links should be more than 0 but has 0"),
        (dict(program_config=_config(32, 48, grid=(8, 7))), "k_chunk_size must be divisible by TILE_SIZE"),
    ],
)
def test_ring_op_validation_messages(mesh, overrides, message):
    q, k, v = (torch.randn(1, 2, 256, 64) for _ in range(3))
    jq, jk, jv = (torch.randn(1, 2, 19, 64) for _ in range(3))
    with pytest.raises(RuntimeError, match="TT_FATAL: " + message):
        _ring_call(mesh, q, k, v, jq, jk, jv, **{"logical_n": 250, **overrides})


@pytest.mark.parametrize("mesh", [2], indirect=True, ids=["ring2"])
def test_ring_op_needs_tile_multiple_shards_and_matching_buffers(mesh):
    q, k, v = (torch.randn(1, 2, 80, 64) for _ in range(3))  # 40 rows per device
    jq, jk, jv = (torch.randn(1, 2, 19, 64) for _ in range(3))
    with pytest.raises(RuntimeError, match="Output tensor 0 shape mismatch"):
        _ring_call(
            mesh,
            q,
            k,
            v,
            jq,
            jk,
            jv,
            70,
            persistent_output_buffer_k=tt.from_torch(
                torch.zeros(1, 2, 64, 64),
                dtype=tt.bfloat16,
                layout=tt.TILE_LAYOUT,
                device=mesh,
                mesh_mapper=tt.ReplicateTensorToMesh(mesh),
            ),
        )
    with pytest.raises(
        RuntimeError, match="Per-device Q seq length must be divisible by TILE_HEIGHT. Got N_local_q: 40"
    ):
        _ring_call(mesh, q, k, v, jq, jk, jv, 70)


def test_ring_op_refuses_a_mesh_without_fabric():
    tt.set_fabric_config(tt.FabricConfig.DISABLED)
    m = tt.open_mesh_device(mesh_shape=tt.MeshShape(1, 2))
    try:
        q, k, v = (torch.randn(1, 1, 64, 32) for _ in range(3))
        jq, jk, jv = (torch.randn(1, 1, 8, 32) for _ in range(3))
        with pytest.raises(RuntimeError, match="emulation: the ring all-gather needs a fabric"):
            _ring_call(m, q, k, v, jq, jk, jv, 64)
    finally:
        tt.close_mesh_device(m)


def test_to_torch_of_a_mesh_tensor_needs_a_composer():
    tt.set_fabric_config(tt.FabricConfig.FABRIC_1D)
    m = tt.open_mesh_device(mesh_shape=tt.MeshShape(1, 2))
    try:
        x = tt.from_torch(
            torch.randn(1, 1, 64, 32), dtype=tt.bfloat16, device=m, mesh_mapper=tt.ShardTensorToMesh(m, dim=2)
        )
        assert x.shape == (1, 1, 32, 32)
        with pytest.raises(RuntimeError, match="needs mesh_composer"):
            tt.to_torch(x)
        assert math.isclose(
            float(tt.to_torch(x, mesh_composer=tt.ConcatMeshToTensor(m, dim=2)).float().sum()),
            float(x.shards[0].sum() + x.shards[1].sum()),
            rel_tol=1e-6,
        )
    finally:
        tt.close_mesh_device(m)
