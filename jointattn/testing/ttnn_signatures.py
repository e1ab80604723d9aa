"""The ttnn signatures the lowering is held to, as data, and a parser that turns them into `inspect.Signature`s.

Entry points: `SIGNATURES` (qualified name -> `RecordedSignature`), `signature_of(name)`, `bind_call(name, args,
kwargs)` and `parse_signature(text)`, which also reads the `__call__(self, ...)` line that ttnn 0.81.1 puts in
the docstring of its nanobind-wrapped ops (their Python signature is the catch-all
`(*function_args, **function_kwargs)`).

Provenance, per entry (`RecordedSignature.source`):
- "ttnn-0.81.1-wheel": read off the ttnn 0.81.1 wheel (cp310) via `__doc__`/`inspect` (the joint and ring ops,
  `scaled_dot_product_attention` and `SDPAProgramConfig.__init__` verbatim; `from_torch`/`to_torch` from the
  Args/Keyword Args sections of their docstrings, since their Python signature is a catch-all too).
- "tt-metal-source": not in that record; taken from the tt-metal sources that define them (nanobind bindings of
  `WormholeComputeKernelConfig`, `create_global_semaphore`, `CoreCoord`...; `ttnn/ttnn/device.py`,
  `ttnn/ttnn/distributed/distributed.py`). Only the parameters the lowering passes are load-bearing; a
  newer or older wheel may differ, which the live check in the tests (when ttnn is importable) would show.
Defaults that are not Python literals (`MathFidelity.Invalid`, `DEFAULT_L1_SMALL_SIZE`) are kept as text.
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass

WHEEL = "ttnn-0.81.1-wheel"
SOURCE = "tt-metal-source"


@dataclass(frozen=True)
class SourceDefault:
    """A default value that is not a Python literal, kept as the text the source shows."""

    text: str

    def __repr__(self) -> str:
        return self.text


@dataclass(frozen=True)
class RecordedSignature:
    text: str
    source: str

    @property
    def signature(self) -> inspect.Signature:
        return parse_signature(self.text)


def _default(node: ast.expr) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return SourceDefault(ast.unparse(node))


def parse_signature(text: str) -> inspect.Signature:
    """`(a: T, *, b: U = None) -> R` (optionally prefixed `name(self, ...`) -> `inspect.Signature`.

    Annotations stay text: the parameter structure (names, kinds, which have defaults) is what binding checks.
    """
    params = text.strip()
    head = params.find("(")
    if head > 0:  # "__call__(self, ...)" / "__init__(self, ...)": drop the name and the bound self
        params = params[head:].replace("(self, ", "(", 1).replace("(self)", "()", 1)
    tree = ast.parse(f"def _f{params}:\n    pass\n")
    fn = tree.body[0]
    assert isinstance(fn, ast.FunctionDef)
    a = fn.args
    out: list[inspect.Parameter] = []

    def add(arg: ast.arg, kind, default=inspect.Parameter.empty) -> None:
        annotation = ast.unparse(arg.annotation) if arg.annotation is not None else inspect.Parameter.empty
        out.append(inspect.Parameter(arg.arg, kind, default=default, annotation=annotation))

    positional = a.posonlyargs + a.args
    defaults = [inspect.Parameter.empty] * (len(positional) - len(a.defaults)) + [
        _default(d) for d in a.defaults
    ]
    for i, arg in enumerate(positional):
        kind = (
            inspect.Parameter.POSITIONAL_ONLY
            if i < len(a.posonlyargs)
            else inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        add(arg, kind, defaults[i])
    if a.vararg is not None:
        add(a.vararg, inspect.Parameter.VAR_POSITIONAL)
    for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        add(arg, inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.empty if d is None else _default(d))
    if a.kwarg is not None:
        add(a.kwarg, inspect.Parameter.VAR_KEYWORD)
    returns = ast.unparse(fn.returns) if fn.returns is not None else inspect.Signature.empty
    return inspect.Signature(out, return_annotation=returns)


def is_catch_all(signature: inspect.Signature) -> bool:
    """True for wrappers that accept anything, like ttnn's `(*function_args, **function_kwargs)`."""
    kinds = [p.kind for p in signature.parameters.values()]
    return kinds == [inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD]


_T = "ttnn._ttnn.tensor.Tensor"

SIGNATURES: dict[str, RecordedSignature] = {
    # --- verbatim from the 0.81.1 wheel (`__call__` / `__init__` lines of the docstrings) ---
    "transformer.joint_scaled_dot_product_attention": RecordedSignature(
        f"__call__(self, input_tensor_q: {_T}, input_tensor_k: {_T}, input_tensor_v: {_T}, joint_tensor_q: {_T}, "
        f"joint_tensor_k: {_T}, joint_tensor_v: {_T}, *, joint_strategy: str, "
        "program_config: ttnn._ttnn.operations.transformer.SDPAProgramConfig, scale: float | None = None, "
        "compute_kernel_config: ttnn._ttnn.operations.core.WormholeComputeKernelConfig | None = None) "
        f"-> tuple[{_T}, {_T}]",
        WHEEL,
    ),
    "transformer.ring_joint_scaled_dot_product_attention": RecordedSignature(
        f"__call__(self, input_tensor_q: {_T}, input_tensor_k: {_T}, input_tensor_v: {_T}, "
        f"joint_tensor_q: {_T} | None = None, joint_tensor_k: {_T} | None = None, "
        f"joint_tensor_v: {_T} | None = None, *, persistent_output_buffer_k: {_T}, "
        f"persistent_output_buffer_v: {_T}, joint_strategy: str, logical_n: int | {_T}, "
        f"logical_l: int | {_T} = 0, program_config: ttnn._ttnn.operations.transformer.SDPAProgramConfig, "
        "scale: float | None = None, "
        "compute_kernel_config: ttnn._ttnn.operations.core.WormholeComputeKernelConfig | None = None, dim: int, "
        "multi_device_global_semaphore: collections.abc.Sequence[ttnn._ttnn.global_semaphore.global_semaphore], "
        "num_links: int, cluster_axis: int, mesh_device: ttnn._ttnn.multi_device.MeshDevice, "
        "topology: ttnn._ttnn.operations.ccl.Topology, subdevice_id: ttnn._ttnn.device.SubDeviceId | None = None, "
        "ccl_core_grid_offset: ttnn._ttnn.tensor.CoreCoord, use_column_major_ccl: bool = False, "
        "is_causal: bool = False, is_balanced: bool = False, is_cross: bool = False, "
        "kv_cache_batch_idx: int | None = None, kv_actual_isl: int | None = None, "
        f"attention_sink: {_T} | None = None, sliding_window_size: int | None = None, "
        f"circular_kv_cache: bool = False, persistent_output_buffer_joint_k: {_T} | None = None, "
        f"persistent_output_buffer_joint_v: {_T} | None = None, slot_id: {_T} | None = None, "
        f"kv_actual_isl_tensor: {_T} | None = None, kv_cache_num_layers: int | None = None, "
        f"kv_cache_layer_idx: int | None = None, kv_valid_end_tensor: {_T} | None = None) "
        f"-> tuple[{_T}, {_T}, {_T}]",
        WHEEL,
    ),
    "transformer.scaled_dot_product_attention": RecordedSignature(
        f"__call__(self, input_tensor_q: {_T}, input_tensor_k: {_T}, input_tensor_v: {_T}, *, "
        f"attn_mask: {_T} | None = None, is_causal: bool = True, scale: float | None = None, "
        "sliding_window_size: int | None = None, memory_config: ttnn._ttnn.tensor.MemoryConfig | None = None, "
        "program_config: ttnn._ttnn.operations.transformer.SDPAProgramConfig | None = None, "
        "compute_kernel_config: ttnn._ttnn.operations.core.WormholeComputeKernelConfig | None = None, "
        f"attention_sink: {_T} | None = None, cu_window_seqlens: {_T} | None = None, "
        f"windowed_q_token_offset: int = 0, windowed_q_token_offset_tensor: {_T} | None = None, "
        f"output_concat_heads: bool = False, attn_mask_block_map: {_T} | None = None) -> {_T}",
        WHEEL,
    ),
    "SDPAProgramConfig": RecordedSignature(
        "__init__(self, *, compute_with_storage_grid_size: ttnn._ttnn.tensor.CoreCoord, "
        "sub_core_grids: ttnn._ttnn.tensor.CoreRangeSet | None = None, q_chunk_size: int, k_chunk_size: int, "
        "exp_approx_mode: bool | None = None, max_cores_per_head_batch: int = 16, max_k_splits: int = 1, "
        "matmul_math_fidelity: ttnn._ttnn.tensor.MathFidelity | None = None, "
        "segmented_accumulation: bool = False) -> None",
        WHEEL,
    ),
    # Docstring Args of the wheel's from_torch / to_torch ("Args" positional, "Keyword Args" keyword-only).
    "from_torch": RecordedSignature(
        "(tensor: torch.Tensor | None, dtype: ttnn.DataType | None = None, *, spec: ttnn.TensorSpec | None = None, "
        "tile: ttnn.Tile | None = None, pad_value: float | None = None, layout: ttnn.Layout | None = None, "
        "device: ttnn.MeshDevice | None = None, memory_config: ttnn.MemoryConfig | None = None, "
        "mesh_mapper: ttnn.TensorToMesh | None = None, cq_id: int = 0, col_tilize: bool = False, "
        "enable_bfloat_opt: bool = False) -> ttnn.Tensor | None",
        WHEEL,
    ),
    "to_torch": RecordedSignature(
        "(tensor: ttnn.Tensor, dtype: torch.dtype | None = None, *, torch_rank: int | None = None, "
        "mesh_composer: ttnn.CppMeshToTensor | None = None, device: ttnn.MeshDevice | None = None, "
        "cq_id: int = 0) -> torch.Tensor",
        WHEEL,
    ),
    # --- from tt-metal sources (not in the 0.81.1 record) ---
    "WormholeComputeKernelConfig": RecordedSignature(
        "__init__(self, *, math_fidelity: MathFidelity = MathFidelity.Invalid, math_approx_mode: bool = True, "
        "fp32_dest_acc_en: bool = False, packer_l1_acc: bool = False, dst_full_sync_en: bool = False, "
        "throttle_level: ThrottleLevel = ThrottleLevel.NO_THROTTLE) -> None",
        SOURCE,
    ),
    "CoreCoord": RecordedSignature("__init__(self, x: int, y: int) -> None", SOURCE),
    "CoreRange": RecordedSignature("__init__(self, start: CoreCoord, end: CoreCoord) -> None", SOURCE),
    "CoreRangeSet": RecordedSignature("__init__(self, ranges: set[CoreRange]) -> None", SOURCE),
    "MeshShape": RecordedSignature("__init__(self, num_rows: int, num_cols: int) -> None", SOURCE),
    "open_device": RecordedSignature(
        "(device_id: int, l1_small_size: int = DEFAULT_L1_SMALL_SIZE, "
        "trace_region_size: int = DEFAULT_TRACE_REGION_SIZE, dispatch_core_type: int = DispatchCoreType.WORKER)",
        SOURCE,
    ),
    "close_device": RecordedSignature("(device) -> None", SOURCE),
    "open_mesh_device": RecordedSignature(
        "(mesh_shape: ttnn.MeshShape = None, l1_small_size: int = DEFAULT_L1_SMALL_SIZE, "
        "trace_region_size: int = DEFAULT_TRACE_REGION_SIZE, num_command_queues: int = 1, "
        "dispatch_core_config: ttnn.DispatchCoreConfig = None, offset: ttnn.MeshCoordinate | None = None, "
        "physical_device_ids: list[int] = [], worker_l1_size: int = DEFAULT_WORKER_L1_SIZE)",
        SOURCE,
    ),
    "close_mesh_device": RecordedSignature("(mesh_device) -> None", SOURCE),
    # Call sites pass the config first and, in newer versions, further fabric settings positionally; only the
    # first is used here, the rest is left open rather than guessed.
    "set_fabric_config": RecordedSignature(
        "(fabric_config: FabricConfig, *further_settings) -> None", SOURCE
    ),
    "get_num_devices": RecordedSignature("() -> int", SOURCE),
    "ShardTensorToMesh": RecordedSignature("(mesh_device: MeshDevice, dim: int)", SOURCE),
    "ReplicateTensorToMesh": RecordedSignature("(mesh_device: MeshDevice)", SOURCE),
    "ConcatMeshToTensor": RecordedSignature("(mesh_device: MeshDevice, dim: int)", SOURCE),
    "create_global_semaphore": RecordedSignature(
        "(device: MeshDevice, cores: CoreRangeSet, initial_value: int, buffer_type: BufferType = BufferType.L1)",
        SOURCE,
    ),
    "MeshDevice.compute_with_storage_grid_size": RecordedSignature("(self) -> CoreCoord", SOURCE),
}


def signature_of(name: str) -> inspect.Signature:
    try:
        recorded = SIGNATURES[name]
    except KeyError:
        raise KeyError(f"no recorded ttnn signature for {name!r}; known: {sorted(SIGNATURES)}") from None
    return recorded.signature


def bind_call(name: str, args: tuple, kwargs: dict) -> inspect.BoundArguments:
    """Binds one call's arguments to the recorded signature of `name`; TypeError if they do not fit."""
    return signature_of(name).bind(*args, **kwargs)


def docstring_signature(obj) -> inspect.Signature | None:
    """The `__call__(self, ...)`/`__init__(self, ...)` signature a nanobind object documents, if any."""
    call_doc = type(obj).__call__.__doc__ if callable(obj) else None
    for doc in (getattr(obj, "__doc__", None), call_doc):
        for line in (doc or "").splitlines():
            line = line.strip()
            if line.startswith(("__call__(self", "__init__(self")):
                return parse_signature(line)
    return None
