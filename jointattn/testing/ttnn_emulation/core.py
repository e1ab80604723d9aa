"""The host side of the ttnn emulation: dtypes, layouts, memory configs, core coordinates, program and compute
configs, devices and meshes, and the tensors that live on them (`from_torch`/`to_torch`, mesh mappers).

Only what the lowering uses is modelled, with ttnn's names and keyword signatures (see `ttnn_signatures`).
A device tensor keeps, per device of its mesh, a float32 torch tensor holding exactly the values the device
would hold: rounded to the tensor's dtype (bfloat16, or bfloat8_b's shared-exponent blocks of 16) and, in
TILE layout, padded in its last two dims to multiples of 32 with `pad_value` (0 by default), as tilizing does.
Errors that ttnn raises with TT_FATAL are RuntimeErrors carrying the same message text; errors this emulation
adds where ttnn has no check of its own say "emulation:".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

TILE_SIZE = 32
IS_JOINTATTN_EMULATION = True
EMULATED_DEVICE_COUNT = 8  # a T3000-sized box: rings of 2 to 8 devices
EMULATED_GRID = (8, 8)  # Wormhole n150/n300 compute_with_storage_grid_size
EMULATED_ARCH = "WORMHOLE_B0"


def tt_fatal(condition: bool, message: str) -> None:
    """ttnn's TT_FATAL: a RuntimeError whose text ends with the op's own message."""
    if not condition:
        raise RuntimeError(f"TT_FATAL: {message}")


class DataType(enum.Enum):
    BFLOAT16 = "BFLOAT16"
    FLOAT32 = "FLOAT32"
    BFLOAT8_B = "BFLOAT8_B"
    BFLOAT4_B = "BFLOAT4_B"
    UINT32 = "UINT32"

    def __str__(self) -> str:  # how TT_FATAL messages print it
        return f"DataType::{self.value}"


bfloat16 = DataType.BFLOAT16
float32 = DataType.FLOAT32
bfloat8_b = DataType.BFLOAT8_B
bfloat4_b = DataType.BFLOAT4_B
uint32 = DataType.UINT32


class Layout(enum.Enum):
    ROW_MAJOR = "ROW_MAJOR"
    TILE = "TILE"


ROW_MAJOR_LAYOUT = Layout.ROW_MAJOR
TILE_LAYOUT = Layout.TILE


class BufferType(enum.Enum):
    DRAM = "DRAM"
    L1 = "L1"


class TensorMemoryLayout(enum.Enum):
    INTERLEAVED = "INTERLEAVED"


@dataclass(frozen=True)
class MemoryConfig:
    memory_layout: TensorMemoryLayout = TensorMemoryLayout.INTERLEAVED
    buffer_type: BufferType = BufferType.DRAM


DRAM_MEMORY_CONFIG = MemoryConfig(TensorMemoryLayout.INTERLEAVED, BufferType.DRAM)
L1_MEMORY_CONFIG = MemoryConfig(TensorMemoryLayout.INTERLEAVED, BufferType.L1)


class MathFidelity(enum.Enum):
    Invalid = "Invalid"
    LoFi = "LoFi"
    HiFi2 = "HiFi2"
    HiFi3 = "HiFi3"
    HiFi4 = "HiFi4"


class Topology(enum.Enum):
    Linear = "Linear"
    Ring = "Ring"


class FabricConfig(enum.Enum):
    DISABLED = "DISABLED"
    FABRIC_1D = "FABRIC_1D"
    FABRIC_1D_RING = "FABRIC_1D_RING"


@dataclass(frozen=True)
class CoreCoord:
    x: int
    y: int


@dataclass(frozen=True)
class CoreRange:
    start: CoreCoord
    end: CoreCoord


@dataclass(frozen=True)
class CoreRangeSet:
    ranges: frozenset

    def __init__(self, ranges):
        object.__setattr__(self, "ranges", frozenset(ranges))


def _as_core_coord(value) -> CoreCoord:
    # ttnn converts (x, y) tuples to CoreCoord implicitly, which tt-metal tests rely on.
    return value if isinstance(value, CoreCoord) else CoreCoord(*value)


class SDPAProgramConfig:
    def __init__(
        self,
        *,
        compute_with_storage_grid_size,
        sub_core_grids=None,
        q_chunk_size: int,
        k_chunk_size: int,
        exp_approx_mode: bool | None = None,
        max_cores_per_head_batch: int = 16,
        max_k_splits: int = 1,
        matmul_math_fidelity=None,
        segmented_accumulation: bool = False,
    ):
        self.compute_with_storage_grid_size = _as_core_coord(compute_with_storage_grid_size)
        self.sub_core_grids = sub_core_grids
        self.q_chunk_size = q_chunk_size
        self.k_chunk_size = k_chunk_size
        self.exp_approx_mode = exp_approx_mode
        self.max_cores_per_head_batch = max_cores_per_head_batch
        self.max_k_splits = max_k_splits
        self.matmul_math_fidelity = matmul_math_fidelity
        self.segmented_accumulation = segmented_accumulation


class WormholeComputeKernelConfig:
    def __init__(
        self,
        *,
        math_fidelity: MathFidelity = MathFidelity.Invalid,
        math_approx_mode: bool = True,
        fp32_dest_acc_en: bool = False,
        packer_l1_acc: bool = False,
        dst_full_sync_en: bool = False,
        throttle_level=None,
    ):
        self.math_fidelity = math_fidelity
        self.math_approx_mode = math_approx_mode
        self.fp32_dest_acc_en = fp32_dest_acc_en
        self.packer_l1_acc = packer_l1_acc
        self.dst_full_sync_en = dst_full_sync_en
        self.throttle_level = throttle_level


# --- devices ---------------------------------------------------------------------------------------------

_state = {"fabric": FabricConfig.DISABLED, "open_ids": set()}


def set_fabric_config(fabric_config, *further_settings) -> None:
    _state["fabric"] = fabric_config


def get_num_devices() -> int:
    return EMULATED_DEVICE_COUNT


@dataclass(frozen=True)
class MeshShape:
    num_rows: int
    num_cols: int

    def __iter__(self):
        return iter((self.num_rows, self.num_cols))


@dataclass(eq=False)
class MeshDevice:
    shape: MeshShape
    device_ids: tuple
    fabric_config: FabricConfig
    is_open: bool = True

    def get_num_devices(self) -> int:
        return self.shape.num_rows * self.shape.num_cols

    def compute_with_storage_grid_size(self) -> CoreCoord:
        return CoreCoord(*EMULATED_GRID)

    def arch(self) -> str:
        return EMULATED_ARCH


def _open(shape: MeshShape) -> MeshDevice:
    count = shape.num_rows * shape.num_cols
    free = [i for i in range(EMULATED_DEVICE_COUNT) if i not in _state["open_ids"]]
    if count > len(free):
        raise RuntimeError(
            f"emulation: a {shape.num_rows}x{shape.num_cols} mesh needs {count} devices; {len(free)} of "
            f"{EMULATED_DEVICE_COUNT} are free"
        )
    ids = tuple(free[:count])
    _state["open_ids"].update(ids)
    return MeshDevice(shape, ids, _state["fabric"])


def open_device(
    device_id: int, l1_small_size=None, trace_region_size=None, dispatch_core_type=None
) -> MeshDevice:
    if not 0 <= device_id < EMULATED_DEVICE_COUNT or device_id in _state["open_ids"]:
        raise RuntimeError(f"emulation: device {device_id} is not available")
    _state["open_ids"].add(device_id)
    return MeshDevice(MeshShape(1, 1), (device_id,), _state["fabric"])


def open_mesh_device(
    mesh_shape: MeshShape | None = None,
    l1_small_size=None,
    trace_region_size=None,
    num_command_queues: int = 1,
    dispatch_core_config=None,
    offset=None,
    physical_device_ids=(),
    worker_l1_size=None,
) -> MeshDevice:
    return _open(mesh_shape or MeshShape(1, EMULATED_DEVICE_COUNT))


def _close(device: MeshDevice) -> None:
    if not device.is_open:
        raise RuntimeError("emulation: device is already closed")
    device.is_open = False
    _state["open_ids"].difference_update(device.device_ids)


def close_device(device: MeshDevice) -> None:
    _close(device)


def close_mesh_device(mesh_device: MeshDevice) -> None:
    _close(mesh_device)


@dataclass(frozen=True)
class GlobalSemaphore:
    device: MeshDevice
    cores: CoreRangeSet
    initial_value: int


def create_global_semaphore(device, cores, initial_value, buffer_type=BufferType.L1) -> GlobalSemaphore:
    return GlobalSemaphore(device, cores, initial_value)


# --- mesh mappers and composers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardTensorToMesh:
    mesh_device: MeshDevice
    dim: int


@dataclass(frozen=True)
class ReplicateTensorToMesh:
    mesh_device: MeshDevice


@dataclass(frozen=True)
class ConcatMeshToTensor:
    mesh_device: MeshDevice
    dim: int


# --- tensors ----------------------------------------------------------------------------------------------


def round_to_dtype(values: torch.Tensor, dtype: DataType) -> torch.Tensor:
    """The values a device tensor of `dtype` holds, in float32."""
    values = values.float()
    if dtype == DataType.BFLOAT16:
        return values.to(torch.bfloat16).float()
    if dtype == DataType.FLOAT32:
        return values
    if dtype == DataType.BFLOAT8_B:
        return _round_block_float(values, mantissa_bits=7)
    raise NotImplementedError(f"emulation: dtype {dtype} is not modelled")


def _round_block_float(values: torch.Tensor, mantissa_bits: int) -> torch.Tensor:
    """bfloat8_b: blocks of 16 consecutive values of a tile face row share one exponent (the largest) and
    keep a sign and `mantissa_bits` of magnitude each. Round-to-nearest here (the packer's rounding may differ)."""
    *lead, width = values.shape
    assert width % 16 == 0, "bfloat8_b rounding runs on tile-padded rows"
    blocks = values.reshape(*lead, width // 16, 16)
    peak = blocks.abs().amax(dim=-1, keepdim=True)
    exponent = torch.floor(torch.log2(torch.where(peak > 0, peak, torch.ones_like(peak))))
    quantum = torch.exp2(exponent - (mantissa_bits - 1))
    limit = 2**mantissa_bits - 1
    mantissa = torch.clamp(torch.round(blocks / quantum), -limit, limit)
    return torch.where(peak > 0, mantissa * quantum, torch.zeros_like(blocks)).reshape(values.shape)


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def _tile_pad(values: torch.Tensor, pad_value: float) -> torch.Tensor:
    rows, cols = values.shape[-2:]
    pad_rows, pad_cols = _round_up(rows, TILE_SIZE) - rows, _round_up(cols, TILE_SIZE) - cols
    if pad_rows == 0 and pad_cols == 0:
        return values
    return torch.nn.functional.pad(values, (0, pad_cols, 0, pad_rows), value=pad_value)


@dataclass(eq=False)
class Tensor:
    """A ttnn tensor: logical shape (per device), dtype, layout, placement, and the stored values per device."""

    logical_shape: tuple
    dtype: DataType
    layout: Layout
    device: MeshDevice | None
    memory_config_: MemoryConfig | None
    shards: list = field(repr=False)

    @property
    def shape(self) -> tuple:
        return self.logical_shape

    @property
    def padded_shape(self) -> tuple:
        return tuple(self.shards[0].shape)

    @property
    def storage_type(self) -> str:
        return "DEVICE" if self.device is not None else "HOST"

    def memory_config(self) -> MemoryConfig | None:
        return self.memory_config_

    def logical(self, index: int = 0) -> torch.Tensor:
        """The stored values of one device, cut to the logical shape (float32)."""
        return self.shards[index][tuple(slice(0, s) for s in self.logical_shape)]


def _dtype_from_torch(dtype: torch.dtype) -> DataType:
    table = {torch.bfloat16: DataType.BFLOAT16, torch.float32: DataType.FLOAT32}
    if dtype not in table:
        raise RuntimeError(
            f"emulation: from_torch without dtype takes bfloat16 or float32 tensors; got {dtype}"
        )
    return table[dtype]


def _split(tensor: torch.Tensor, mapper, mesh: MeshDevice) -> list[torch.Tensor]:
    count = mesh.get_num_devices()
    if mapper is None or isinstance(mapper, ReplicateTensorToMesh):
        return [tensor] * count
    if isinstance(mapper, ShardTensorToMesh):
        size = tensor.shape[mapper.dim]
        if size % count:
            raise RuntimeError(
                f"emulation: cannot shard dim {mapper.dim} of size {size} evenly over {count} devices"
            )
        return list(torch.chunk(tensor, count, dim=mapper.dim))
    raise NotImplementedError(f"emulation: mesh mapper {type(mapper).__name__} is not modelled")


def from_torch(
    tensor: torch.Tensor | None,
    dtype: DataType | None = None,
    *,
    spec=None,
    tile=None,
    pad_value: float | None = None,
    layout: Layout | None = None,
    device: MeshDevice | None = None,
    memory_config: MemoryConfig | None = None,
    mesh_mapper=None,
    cq_id: int = 0,
    col_tilize: bool = False,
    enable_bfloat_opt: bool = False,
) -> Tensor | None:
    if tensor is None:
        return None
    if spec is not None or tile is not None or col_tilize or enable_bfloat_opt:
        raise NotImplementedError(
            "emulation: from_torch models dtype, layout, pad_value, device, memory_config, mesh_mapper"
        )
    dtype = dtype or _dtype_from_torch(tensor.dtype)
    layout = layout or Layout.ROW_MAJOR
    if dtype in (DataType.BFLOAT8_B, DataType.BFLOAT4_B) and layout != Layout.TILE:
        raise RuntimeError(f"Tensor with dtype {dtype} must be in TILE layout")
    if device is not None and not device.is_open:
        raise RuntimeError("emulation: from_torch onto a closed device")
    pieces = _split(tensor, mesh_mapper, device) if device is not None else [tensor]
    stored = []
    for piece in pieces:
        values = piece.detach().float()
        if layout == Layout.TILE:
            values = _tile_pad(values, 0.0 if pad_value is None else pad_value)
        stored.append(round_to_dtype(values, dtype))
    memory = (memory_config or DRAM_MEMORY_CONFIG) if device is not None else None
    return Tensor(tuple(pieces[0].shape), dtype, layout, device, memory, stored)


_TORCH_DTYPE = {
    DataType.BFLOAT16: torch.bfloat16,
    DataType.FLOAT32: torch.float32,
    DataType.BFLOAT8_B: torch.float32,
}


def to_torch(
    tensor: Tensor,
    dtype: torch.dtype | None = None,
    *,
    torch_rank=None,
    mesh_composer=None,
    device=None,
    cq_id: int = 0,
) -> torch.Tensor:
    if tensor.device is not None and not tensor.device.is_open:
        raise RuntimeError("emulation: to_torch from a closed device")
    if len(tensor.shards) > 1:
        if not isinstance(mesh_composer, ConcatMeshToTensor):
            raise RuntimeError(
                "emulation: a tensor on several devices needs mesh_composer=ConcatMeshToTensor(...)"
            )
        values = torch.cat([tensor.logical(i) for i in range(len(tensor.shards))], dim=mesh_composer.dim)
    else:
        values = tensor.logical(0)
    return values.to(dtype or _TORCH_DTYPE.get(tensor.dtype, torch.float32))


def new_device_tensor(
    values: list[torch.Tensor], logical_shape: tuple, dtype: DataType, device: MeshDevice
) -> Tensor:
    """An op's output: per-device values (already tile-padded) rounded to `dtype`, TILE layout, DRAM."""
    return Tensor(
        tuple(logical_shape),
        dtype,
        Layout.TILE,
        device,
        DRAM_MEMORY_CONFIG,
        [round_to_dtype(v, dtype) for v in values],
    )


def padded_len(length: int) -> int:
    return _round_up(length, TILE_SIZE)
