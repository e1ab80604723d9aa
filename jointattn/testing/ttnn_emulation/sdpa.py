"""The two ttnn ops of the emulation: `joint_scaled_dot_product_attention` and
`ring_joint_scaled_dot_product_attention`, computed with torch in float32 on the tensors' stored values.

Semantics follow tt-metal's sources (`ttnn/cpp/ttnn/operations/transformer/sdpa/device/`):
- validation: the checks and TT_FATAL messages of `joint_sdpa_device_operation.cpp` and
  `ring_joint_sdpa_device_operation.cpp` (plus the ring all-gather's own checks), in the same order;
- joint: N and L are padded separately, each to a multiple of q_chunk_size (queries) and k_chunk_size (keys);
  tiles past the valid ones are read as zeros; the keys of the last chunk of each part are masked at and past
  N (resp. L), and only that chunk gets a mask (`mask_chunk_0`, `mask_chunk_1` of the program factory);
  softmax runs online over k chunks, `exp((s - running_max) * scale)` with the max of unscaled scores;
- ring: the K/V shards are all-gathered into the persistent buffers; each device attends with its local
  queries and the replicated joint queries to the gathered keys, one ring step per shard, merging steps by
  log-sum-exp as the kernel does (`sig = sigmoid(cur_lse - prev_lse)`, ...); spatial keys at or past the
  global `logical_n` do not exist, nor joint keys at or past `logical_l` (0 = all L joint keys); the joint
  keys join on the step whose ring id is the last. The third output is the log-sum-exp per row, shape
  [b, nh, padded N_local + padded L, 1], bfloat16, as in the tt-metal versions whose kernel writes
  `cb_lse_out` (newer sources turn it into a [.., 2 x rows, 1] max/sum scratch; see the README).
Not modelled: math fidelity, approximate exp, bfloat16 intermediates (the emulation accumulates in float32),
causal/balanced/cross/KV-cache/sink/sliding-window variants of the ring op (they raise NotImplementedError).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .core import (
    TILE_SIZE,
    BufferType,
    DataType,
    FabricConfig,
    Layout,
    MeshDevice,
    Tensor,
    TensorMemoryLayout,
    new_device_tensor,
    padded_len,
    tt_fatal,
)

NEG_INF = float("-inf")


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def _check_operand(t: Tensor, dtypes: tuple, dtype_message: str) -> None:
    tt_fatal(t.storage_type == "DEVICE", "Operands to Joint SDPA need to be on device")
    tt_fatal(
        t.device is not None and t.device.is_open,
        "Operands to Joint SDPA need to be allocated in buffers on device",
    )
    tt_fatal(t.layout == Layout.TILE, "Inputs to Joint SDPA must be tilized")
    tt_fatal(t.dtype in dtypes, dtype_message)
    tt_fatal(t.memory_config().buffer_type == BufferType.DRAM, "Operands to Joint SDPA need to be in DRAM")


def _check_padding(t: Tensor) -> None:
    logical, padded = t.logical_shape, t.padded_shape
    tt_fatal(logical[0] == padded[0], "Padding is not supported on the batch dimension")
    tt_fatal(logical[1] == padded[1], "Padding is not supported on the num_heads dimension")
    tt_fatal(logical[3] == padded[3], "Padding is not supported on the head_dim dimension")


def _check_chunks(q_chunk_size: int, k_chunk_size: int) -> None:
    tt_fatal(
        q_chunk_size % TILE_SIZE == 0,
        f"q_chunk_size must be divisible by TILE_SIZE. Got q_chunk_size: {q_chunk_size}, TILE_SIZE: {TILE_SIZE}",
    )
    tt_fatal(
        k_chunk_size % TILE_SIZE == 0,
        f"k_chunk_size must be divisible by TILE_SIZE. Got k_chunk_size: {k_chunk_size}, TILE_SIZE: {TILE_SIZE}",
    )


def _check_grid(program_config, device: MeshDevice) -> None:
    grid = program_config.compute_with_storage_grid_size
    full = device.compute_with_storage_grid_size()
    cores, limit = grid.x * grid.y, full.x * full.y
    tt_fatal(
        cores <= limit,
        f"Provided grid must not contain more cores than the device. Got {cores} cores, expected at most {limit} cores.",
    )


# --- the numerics shared by both ops ----------------------------------------------------------------------


@dataclass
class _Online:
    """Running state of an online softmax over key chunks, per query row (the kernel's max/sum/out CBs)."""

    row_max: torch.Tensor  # of unscaled scores
    row_sum: torch.Tensor
    acc: torch.Tensor

    @classmethod
    def empty(cls, rows: torch.Tensor, dv: int) -> _Online:
        shape = rows.shape[:-1]
        return cls(
            torch.full(shape, NEG_INF), torch.zeros(shape), torch.zeros(*shape, dv, dtype=torch.float32)
        )

    def update(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor | None, scale: float
    ):
        scores = torch.matmul(q, k.transpose(-1, -2))
        if valid is not None:
            scores = scores.masked_fill(~valid, NEG_INF)
        new_max = torch.maximum(self.row_max, scores.amax(dim=-1))
        shift = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
        p = torch.exp((scores - shift[..., None]) * scale)
        alpha = torch.exp((self.row_max - shift) * scale)
        self.row_sum = self.row_sum * alpha + p.sum(dim=-1)
        self.acc = self.acc * alpha[..., None] + torch.matmul(p, v)
        self.row_max = new_max

    def result(self, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(out, lse): out normalized, lse natural-log of the sum of exp(scale * score); rows with no key: 0, -inf."""
        seen = self.row_sum != 0  # NaN (from a NaN score or value) keeps its row NaN, as on the device
        out = torch.where(seen[..., None], self.acc / torch.where(seen, self.row_sum, 1.0)[..., None], 0.0)
        lse = torch.where(
            seen, self.row_max * scale + torch.log(torch.where(seen, self.row_sum, 1.0)), NEG_INF
        )
        return out, lse


def _rows(t: Tensor, device_index: int, valid_rows: int, total_rows: int) -> torch.Tensor:
    """Rows [0, valid_rows) of a device's stored tensor (tile padding included), zero-filled up to total_rows:
    the reader kernels read whole tiles up to the last valid one and fill the rest of a chunk with zeros."""
    stored = t.shards[device_index][:, :, :valid_rows]
    return torch.nn.functional.pad(stored, (0, 0, 0, total_rows - stored.shape[2]))


# --- joint_scaled_dot_product_attention ---------------------------------------------------------------------


def _validate_joint(tensors, joint_strategy: str, program_config) -> None:
    q, k, v, jq, jk, jv = tensors
    tt_fatal(joint_strategy == "rear", f"Joint strategy must be 'rear'. Got: {joint_strategy}")
    for t in tensors:
        tt_fatal(
            t.dtype == q.dtype, f"All tensors must have the same dtype. Expected {q.dtype}, got {t.dtype}"
        )
    for t in tensors:
        _check_operand(t, (DataType.BFLOAT16, DataType.BFLOAT8_B), "Inputs to Joint SDPA must be BF16 or BF8")
    qs, ks, vs, jqs, jks, jvs = (t.logical_shape for t in tensors)
    tt_fatal(
        ks[0] == qs[0] and vs[0] == qs[0], f"Batch sizes must match. Got Q: {qs[0]}, K: {ks[0]}, V: {vs[0]}"
    )
    tt_fatal(
        jks[0] == jqs[0] and jvs[0] == jqs[0],
        f"Joint batch sizes must match. Got Q: {jqs[0]}, K: {jks[0]}, V: {jvs[0]}",
    )
    tt_fatal(qs[0] == jqs[0], f"Q and joint Q must have same batch size. Got Q: {qs[0]}, joint Q: {jqs[0]}")
    tt_fatal(
        ks[3] == qs[3] and vs[3] == qs[3],
        f"Head dimensions must match. Got Q: {qs[3]}, K: {ks[3]}, V: {vs[3]}",
    )
    tt_fatal(
        jks[3] == jqs[3] and jvs[3] == jqs[3],
        f"Joint head dimensions must match. Got Q: {jqs[3]}, K: {jks[3]}, V: {jvs[3]}",
    )
    tt_fatal(
        qs[3] == jqs[3], f"Q and joint Q must have same head dimension. Got Q: {qs[3]}, joint Q: {jqs[3]}"
    )
    tt_fatal(qs[1] == ks[1], f"Q num_heads must be equal to K num_heads. Got Q: {qs[1]}, K: {ks[1]}")
    tt_fatal(
        jqs[1] == jks[1],
        f"Joint Q num_heads must be equal to Joint K num_heads. Got Q: {jqs[1]}, K: {jks[1]}",
    )
    tt_fatal(
        jks[1] == ks[1], f"Joint K num_heads must be equal to K num_heads. Got Joint K: {jks[1]}, K: {ks[1]}"
    )
    _check_chunks(program_config.q_chunk_size, program_config.k_chunk_size)
    for t in tensors:
        _check_padding(t)
    # Not checked by tt-metal, but its kernels read K/V with Q's length (and joint K/V with joint Q's):
    # any other length would read the wrong tiles on hardware.
    tt_fatal(
        ks[2] == qs[2] and vs[2] == qs[2] and jks[2] == jqs[2] and jvs[2] == jqs[2] and ks[1] == vs[1],
        f"emulation: K/V must have Q's sequence length and heads (the kernels assume it). Got Q: {qs}, K: {ks}, "
        f"V: {vs}, joint Q: {jqs}, joint K: {jks}, joint V: {jvs}",
    )


def _part_keys(t: Tensor, index: int, length: int, padded: int, k_chunk: int, first_chunk: int):
    """Key chunks of one part (spatial or joint); only the part's last chunk carries a mask, and only when
    the part was padded (mask_chunk_0 / mask_chunk_1 of the program factory)."""
    rows = _rows(t, index, padded_len(length), padded)
    masked_chunk = first_chunk + padded // k_chunk - 1 if padded != length else None
    return rows, masked_chunk


def _joint_on_device(tensors, index: int, scale: float, q_chunk: int, k_chunk: int):
    q, k, v, jq, jk, jv = tensors
    n, l = q.logical_shape[2], jq.logical_shape[2]  # noqa: E741
    nq, nk, lq, lk = (_round_up(x, c) for x, c in ((n, q_chunk), (n, k_chunk), (l, q_chunk), (l, k_chunk)))
    queries = torch.cat([_rows(q, index, padded_len(n), nq), _rows(jq, index, padded_len(l), lq)], dim=2)
    keys_n, mask_chunk_0 = _part_keys(k, index, n, nk, k_chunk, 0)
    keys_l, mask_chunk_1 = _part_keys(jk, index, l, lk, k_chunk, nk // k_chunk)
    keys = torch.cat([keys_n, keys_l], dim=2)
    values = torch.cat([_rows(v, index, padded_len(n), nk), _rows(jv, index, padded_len(l), lk)], dim=2)
    # Key position -> exists, over the concatenated padded sequence; applied only in the two mask chunks.
    exists = torch.cat([torch.arange(nk) < n, torch.arange(lk) < l])
    state = _Online.empty(queries, values.shape[-1])
    for chunk in range(keys.shape[2] // k_chunk):
        cols = slice(chunk * k_chunk, (chunk + 1) * k_chunk)
        valid = exists[cols] if chunk in (mask_chunk_0, mask_chunk_1) else None
        state.update(queries, keys[:, :, cols], values[:, :, cols], valid, scale)
    out, _ = state.result(scale)
    return out[:, :, : padded_len(n)], out[:, :, nq : nq + padded_len(l)]


def joint_scaled_dot_product_attention(
    input_tensor_q: Tensor,
    input_tensor_k: Tensor,
    input_tensor_v: Tensor,
    joint_tensor_q: Tensor,
    joint_tensor_k: Tensor,
    joint_tensor_v: Tensor,
    *,
    joint_strategy: str,
    program_config,
    scale: float | None = None,
    compute_kernel_config=None,
) -> tuple[Tensor, Tensor]:
    tensors = (input_tensor_q, input_tensor_k, input_tensor_v, joint_tensor_q, joint_tensor_k, joint_tensor_v)
    _validate_joint(tensors, joint_strategy, program_config)
    device = input_tensor_q.device
    _check_grid(program_config, device)
    scale = scale if scale is not None else 1.0 / math.sqrt(input_tensor_q.logical_shape[3])
    results = [
        _joint_on_device(tensors, i, scale, program_config.q_chunk_size, program_config.k_chunk_size)
        for i in range(len(input_tensor_q.shards))
    ]
    dtype = input_tensor_q.dtype
    out = new_device_tensor([r[0] for r in results], input_tensor_q.logical_shape, dtype, device)
    joint_out = new_device_tensor([r[1] for r in results], joint_tensor_q.logical_shape, dtype, device)
    return out, joint_out


# --- ring_joint_scaled_dot_product_attention ---------------------------------------------------------------

_RING_UNMODELLED = (
    "is_causal",
    "is_balanced",
    "is_cross",
    "kv_cache_batch_idx",
    "kv_actual_isl",
    "attention_sink",
    "sliding_window_size",
    "circular_kv_cache",
    "persistent_output_buffer_joint_k",
    "persistent_output_buffer_joint_v",
    "slot_id",
    "kv_actual_isl_tensor",
    "kv_cache_num_layers",
    "kv_cache_layer_idx",
    "kv_valid_end_tensor",
)


def _validate_all_gather(inputs, buffers, dim: int, num_links: int, ring_size: int) -> None:
    first = inputs[0]
    for i, t in enumerate(inputs):
        tt_fatal(t.layout == Layout.TILE, f"Input tensor {i} must be tiled")
        tt_fatal(t.storage_type == "DEVICE", f"Input tensor {i} must be on device")
        tt_fatal(
            t.dtype == first.dtype,
            f"All input tensors must have the same dtype. Input tensor {i} has dtype {t.dtype} but expected {first.dtype}",
        )
        tt_fatal(
            t.memory_config() == first.memory_config(),
            f"All input tensors must have the same memory config. Input tensor {i} has different memory config",
        )
    tt_fatal(num_links > 0, f"Error, num_links should be more than 0 but has {num_links}")
    tt_fatal(
        first.memory_config().memory_layout == TensorMemoryLayout.INTERLEAVED,
        f"Unsupported memory layout {first.memory_config().memory_layout}.",
    )
    for i, (buffer, source) in enumerate(zip(buffers, inputs, strict=True)):
        tt_fatal(buffer.layout == Layout.TILE, f"Output tensor {i} must be tiled")
        tt_fatal(buffer.storage_type == "DEVICE", f"Output tensor {i} must be on device")
        tt_fatal(
            buffer.dtype == first.dtype,
            f"Output tensor {i} dtype should match input tensors but has {buffer.dtype}",
        )
        tt_fatal(
            buffer.memory_config() == first.memory_config(),
            f"Output tensor {i} memory config should match output_mem_config",
        )
        expected = list(source.logical_shape)
        expected[dim] *= ring_size
        tt_fatal(
            list(buffer.logical_shape) == expected,
            f"Output tensor {i} shape mismatch. Expected shape with dimension {dim} scaled by ring_size {ring_size}",
        )


def _validate_ring(q, k, v, jq, jk, jv, gk, gv, args: dict) -> None:
    config, ring = args["program_config"], args["ring_size"]
    tt_fatal(config is not None, "Program config must be provided")
    offset, grid = args["ccl_core_grid_offset"], config.compute_with_storage_grid_size
    if args["use_column_major_ccl"]:
        tt_fatal(offset.x >= grid.x, "SDPA coregrid overlaps with AllGather coregrid (column-major)")
    else:
        tt_fatal(offset.y >= grid.y, "SDPA coregrid overlaps with AllGather coregrid (row-major)")
    tt_fatal(
        args["joint_strategy"] == "rear", f"Joint strategy must be 'rear'. Got: {args['joint_strategy']}"
    )
    sdpa_inputs = (q, gk, gv, jq, jk, jv)
    for t in sdpa_inputs:
        tt_fatal(
            t.dtype == q.dtype, f"All tensors must have the same dtype. Expected {q.dtype}, got {t.dtype}"
        )
    for t in sdpa_inputs:
        _check_operand(
            t,
            (DataType.BFLOAT16, DataType.BFLOAT8_B, DataType.BFLOAT4_B),
            "Inputs to Joint SDPA must be BF16 or BF8 or BF4",
        )
    qs, ks, vs, jqs, jks, jvs = (t.logical_shape for t in sdpa_inputs)
    b, n_local_q, n_local_kv, n_global, l, dh = qs[0], qs[2], k.logical_shape[2], ks[2], jqs[2], qs[3]  # noqa: E741
    logical_n = args["logical_n"]
    tt_fatal(
        logical_n > 0,
        "Logical sequence length must be > 0; kernels derive last-valid-tile = logical_nt - 1 and would underflow.",
    )
    tt_fatal(
        n_local_q <= n_local_kv,
        "Per-device Q seq length must be <= per-device K/V seq length. Equal: full-prefill path. Less: "
        f"chunked-prefill path. Greater is undefined. Got N_local_q={n_local_q}, N_local_kv={n_local_kv}",
    )
    if n_local_q < n_local_kv:
        raise NotImplementedError(
            "emulation: the chunked-prefill ring path (N_local_q < N_local_kv) is not modelled"
        )
    tt_fatal(
        all(s[0] == b for s in (ks, vs, jqs, jks, jvs)),
        f"Batch sizes must match. Got Q: {b}, K: {ks[0]}, V: {vs[0]}, joint_Q: {jqs[0]}, joint_K: {jks[0]}, "
        f"joint_V: {jvs[0]}",
    )
    tt_fatal(
        all(s[3] == dh for s in (ks, vs, jqs, jks, jvs)),
        f"Head dimensions must match. Got Q: {dh}, K: {ks[3]}, V: {vs[3]}, joint_Q: {jqs[3]}, joint_K: {jks[3]}, "
        f"joint_V: {jvs[3]}",
    )
    tt_fatal(
        vs[2] == n_global,
        f"V sequence length must be equal to global sequence length. Got V: {vs[2]}, global sequence length: {n_global}",
    )
    tt_fatal(
        logical_n <= n_global,
        "Logical sequence length must be less than or equal to global sequence length. Got logical sequence length: "
        f"{logical_n}, global sequence length: {n_global}",
    )
    tt_fatal(
        jks[2] == l and jvs[2] == l,
        f"Joint sequence length must match. Got joint_K: {jks[2]}, joint_V: {jvs[2]}",
    )
    tt_fatal(
        n_global == n_local_kv * ring,
        "Gathered K seq length must equal per-device K shard times ring size. Got N_global: "
        f"{n_global}, N_local_kv: {n_local_kv}, ring_size: {ring}",
    )
    tt_fatal(
        ks[2] == vs[2], f"K sequence length must be equal to V sequence length. Got K: {ks[2]}, V: {vs[2]}"
    )
    tt_fatal(qs[1] == vs[1], f"Q num_heads must be equal to V num_heads. Got Q: {qs[1]}, V: {vs[1]}")
    tt_fatal(
        ks[1] == vs[1] or ks[1] == 1,
        f"K num_heads must be equal to V num_heads or 1. Got K: {ks[1]}, V: {vs[1]}",
    )
    if ks[1] != vs[1]:
        raise NotImplementedError("emulation: one shared K head (MLA-style) is not modelled")
    _check_chunks(config.q_chunk_size, config.k_chunk_size)
    tt_fatal(
        n_local_q % TILE_SIZE == 0,
        f"Per-device Q seq length must be divisible by TILE_HEIGHT. Got N_local_q: {n_local_q}, TILE_HEIGHT: {TILE_SIZE}",
    )
    tt_fatal(
        n_local_kv % TILE_SIZE == 0,
        f"Per-device K/V seq length must be divisible by TILE_HEIGHT. Got N_local_kv: {n_local_kv}, "
        f"TILE_HEIGHT: {TILE_SIZE}",
    )
    for t in sdpa_inputs:
        _check_padding(t)
    logical_l = args["logical_l"]
    # No tt-metal message to copy here: the ring op's handling of logical_l is read from its kernels only.
    tt_fatal(
        isinstance(logical_l, int) and 0 <= logical_l <= l,
        f"emulation: logical_l must be 0 (all joint tokens valid) or in [1, L={l}]; got {logical_l!r}",
    )


def _merge(prev: tuple | None, cur: tuple) -> tuple:
    """The ring kernel's merge of two partial results (out, lse) over disjoint key sets."""
    if prev is None:
        return cur
    prev_out, prev_lse = prev
    cur_out, cur_lse = cur
    sig = torch.sigmoid(cur_lse - prev_lse)
    out = prev_out - sig[..., None] * (prev_out - cur_out)
    lse = prev_lse - torch.nn.functional.logsigmoid(prev_lse - cur_lse)
    return out, lse


def _ring_on_device(
    d: int, ring: int, q, jq, jk, jv, gathered_k, gathered_v, logical_n, logical_l, scale, k_chunk
):
    n_local, l = q.logical_shape[2], jq.logical_shape[2]  # noqa: E741
    lp = padded_len(l)
    queries = torch.cat([q.shards[d][:, :, :n_local], jq.shards[d][:, :, :lp]], dim=2)
    local_chunks = -(-n_local // k_chunk)
    joint_chunks = -(-lp // k_chunk)
    result = None
    for step in range(ring):
        ring_id = (d + step) % ring  # own shard first; the joint keys ride with the last ring id
        state = _Online.empty(queries, gathered_v.shards[d].shape[-1])
        worked = False
        for c in range(local_chunks):
            start = ring_id * n_local + c * k_chunk
            if start // TILE_SIZE >= -(-logical_n // TILE_SIZE):
                continue  # a chunk wholly past logical_n is skipped, as in the kernel
            stop = ring_id * n_local + min((c + 1) * k_chunk, n_local)
            k = gathered_k.shards[d][:, :, start:stop]
            v = gathered_v.shards[d][:, :, start:stop]
            valid = torch.arange(start, stop) < logical_n
            state.update(queries, k, v, None if bool(valid.all()) else valid, scale)
            worked = True
        if ring_id == ring - 1 and l > 0:
            valid_l = logical_l or l
            for c in range(joint_chunks):
                cols = slice(c * k_chunk, min((c + 1) * k_chunk, lp))
                valid = torch.arange(cols.start, cols.stop) < valid_l
                state.update(queries, jk.shards[d][:, :, cols], jv.shards[d][:, :, cols], valid, scale)
                worked = True
        if worked:
            result = _merge(result, state.result(scale))
    out, lse = result
    return out[:, :, :n_local], out[:, :, n_local:], lse


def ring_joint_scaled_dot_product_attention(
    input_tensor_q: Tensor,
    input_tensor_k: Tensor,
    input_tensor_v: Tensor,
    joint_tensor_q: Tensor | None = None,
    joint_tensor_k: Tensor | None = None,
    joint_tensor_v: Tensor | None = None,
    *,
    persistent_output_buffer_k: Tensor,
    persistent_output_buffer_v: Tensor,
    joint_strategy: str,
    logical_n,
    logical_l=0,
    program_config,
    scale: float | None = None,
    compute_kernel_config=None,
    dim: int,
    multi_device_global_semaphore,
    num_links: int,
    cluster_axis: int,
    mesh_device: MeshDevice,
    topology,
    subdevice_id=None,
    ccl_core_grid_offset,
    use_column_major_ccl: bool = False,
    **variant_options,
) -> tuple[Tensor, Tensor, Tensor]:
    unknown = sorted(set(variant_options) - set(_RING_UNMODELLED))
    if unknown:
        raise TypeError(
            f"ring_joint_scaled_dot_product_attention() got unexpected keyword arguments {unknown}"
        )
    used = sorted(name for name, value in variant_options.items() if value not in (None, False))
    if used:
        raise NotImplementedError(
            f"emulation: the ring op is modelled for non-causal joint attention only; got {used}"
        )
    if joint_tensor_q is None or joint_tensor_k is None or joint_tensor_v is None:
        raise NotImplementedError("emulation: the ring op without joint tensors is not modelled")
    if not isinstance(logical_n, int) or not isinstance(logical_l, int):
        raise NotImplementedError("emulation: logical_n/logical_l as device tensors are not modelled")
    rows, cols = mesh_device.shape
    if min(rows, cols) != 1:
        raise NotImplementedError("emulation: only 1-D meshes (a ring along one axis) are modelled")
    tt_fatal(cluster_axis in (0, 1), f"cluster_axis must be 0 or 1; got {cluster_axis}")
    ring = rows if cluster_axis == 0 else cols
    if mesh_device.fabric_config not in (FabricConfig.FABRIC_1D, FabricConfig.FABRIC_1D_RING):
        raise RuntimeError(
            "emulation: the ring all-gather needs a fabric; call set_fabric_config(FabricConfig.FABRIC_1D) "
            "before open_mesh_device"
        )
    rank = len(input_tensor_k.logical_shape)
    gather_dim = dim + rank if dim < 0 else dim
    tt_fatal(
        -rank <= gather_dim <= rank - 1,
        f"Dimension input should be in between -{rank} and {rank - 1}, but has {dim}",
    )
    if gather_dim != 2:
        raise NotImplementedError("emulation: the ring op gathers the sequence dim (dim=2) only")
    buffers = (persistent_output_buffer_k, persistent_output_buffer_v)
    _validate_all_gather((input_tensor_k, input_tensor_v), buffers, gather_dim, num_links, ring)
    for buffer, source in zip(
        buffers, (input_tensor_k, input_tensor_v), strict=True
    ):  # the all-gather writes the buffers
        full = torch.cat([source.shards[i] for i in range(ring)], dim=2)
        buffer.shards[:] = [full.clone() for _ in range(ring)]
    _validate_ring(
        input_tensor_q,
        input_tensor_k,
        input_tensor_v,
        joint_tensor_q,
        joint_tensor_k,
        joint_tensor_v,
        *buffers,
        dict(
            program_config=program_config,
            ring_size=ring,
            ccl_core_grid_offset=ccl_core_grid_offset,
            use_column_major_ccl=use_column_major_ccl,
            joint_strategy=joint_strategy,
            logical_n=logical_n,
            logical_l=logical_l,
        ),
    )
    _check_grid(program_config, mesh_device)
    scale = scale if scale is not None else 1.0 / math.sqrt(input_tensor_q.logical_shape[3])
    per_device = [
        _ring_on_device(
            d,
            ring,
            input_tensor_q,
            joint_tensor_q,
            joint_tensor_k,
            joint_tensor_v,
            *buffers,
            logical_n,
            logical_l,
            scale,
            program_config.k_chunk_size,
        )
        for d in range(ring)
    ]
    b, nh, n_local, _ = input_tensor_q.logical_shape
    lse_rows = n_local + padded_len(joint_tensor_q.logical_shape[2])
    out = new_device_tensor(
        [r[0] for r in per_device], input_tensor_q.logical_shape, DataType.BFLOAT16, mesh_device
    )
    joint_out = new_device_tensor(
        [r[1] for r in per_device], joint_tensor_q.logical_shape, DataType.BFLOAT16, mesh_device
    )
    lse = new_device_tensor(
        [torch.nn.functional.pad(r[2][..., None], (0, TILE_SIZE - 1)) for r in per_device],
        (b, nh, lse_rows, 1),
        DataType.BFLOAT16,
        mesh_device,
    )
    return out, joint_out, lse
