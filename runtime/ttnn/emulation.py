"""A CPU emulation of exactly the ttnn subset the lowering uses, importable where ttnn is not.

Selected only by `JOINTATTN_TTNN=emulate` (see `module.py`); it stands in for the `ttnn` module, so the lowering
runs unchanged on it: `from_torch`/`to_torch`, dtypes (`bfloat16`, `bfloat8_b`), layouts, `DRAM_MEMORY_CONFIG`,
`CoreCoord`/`CoreRange`/`CoreRangeSet`, `SDPAProgramConfig`, `WormholeComputeKernelConfig`, `MathFidelity`,
device and mesh open/close, fabric config, mesh mappers/composers, global semaphores, `Topology`, and
`transformer.joint_scaled_dot_product_attention` / `transformer.ring_joint_scaled_dot_product_attention`.

Internals: `emulation_core.py` (host types, devices, tensors) and `emulation_sdpa.py` (the two ops, their
validation and numerics). A ring of 2 to 8 devices is emulated by one process holding every device's tensors.
"""

from __future__ import annotations

from types import SimpleNamespace

from .emulation_core import (
    DRAM_MEMORY_CONFIG,
    EMULATED_ARCH,
    EMULATED_DEVICE_COUNT,
    EMULATED_GRID,
    IS_JOINTATTN_EMULATION,
    L1_MEMORY_CONFIG,
    ROW_MAJOR_LAYOUT,
    TILE_LAYOUT,
    TILE_SIZE,
    BufferType,
    ConcatMeshToTensor,
    CoreCoord,
    CoreRange,
    CoreRangeSet,
    DataType,
    FabricConfig,
    Layout,
    MathFidelity,
    MemoryConfig,
    MeshDevice,
    MeshShape,
    ReplicateTensorToMesh,
    SDPAProgramConfig,
    ShardTensorToMesh,
    Tensor,
    TensorMemoryLayout,
    Topology,
    WormholeComputeKernelConfig,
    bfloat4_b,
    bfloat8_b,
    bfloat16,
    close_device,
    close_mesh_device,
    create_global_semaphore,
    float32,
    from_torch,
    get_num_devices,
    open_device,
    open_mesh_device,
    set_fabric_config,
    to_torch,
    uint32,
)
from .emulation_sdpa import joint_scaled_dot_product_attention, ring_joint_scaled_dot_product_attention

transformer = SimpleNamespace(
    joint_scaled_dot_product_attention=joint_scaled_dot_product_attention,
    ring_joint_scaled_dot_product_attention=ring_joint_scaled_dot_product_attention,
)

__all__ = [
    "DRAM_MEMORY_CONFIG",
    "EMULATED_ARCH",
    "EMULATED_DEVICE_COUNT",
    "EMULATED_GRID",
    "IS_JOINTATTN_EMULATION",
    "L1_MEMORY_CONFIG",
    "ROW_MAJOR_LAYOUT",
    "TILE_LAYOUT",
    "TILE_SIZE",
    "BufferType",
    "ConcatMeshToTensor",
    "CoreCoord",
    "CoreRange",
    "CoreRangeSet",
    "DataType",
    "FabricConfig",
    "Layout",
    "MathFidelity",
    "MemoryConfig",
    "MeshDevice",
    "MeshShape",
    "ReplicateTensorToMesh",
    "SDPAProgramConfig",
    "ShardTensorToMesh",
    "Tensor",
    "TensorMemoryLayout",
    "Topology",
    "WormholeComputeKernelConfig",
    "bfloat16",
    "bfloat4_b",
    "bfloat8_b",
    "close_device",
    "close_mesh_device",
    "create_global_semaphore",
    "float32",
    "from_torch",
    "get_num_devices",
    "open_device",
    "open_mesh_device",
    "set_fabric_config",
    "to_torch",
    "transformer",
    "uint32",
]
