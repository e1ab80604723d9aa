"""Ranks that disagree about a sequence-parallel call fail fast, all with the same one-line error.

Entry point: `checked_call(entry, group, world_size, check_ranks, validate, args) -> Checked`, which every
public function of jointattn.distributed runs before its first collective.

Why: the ranks of a call exchange tensors whose sizes follow from the arguments, so a rank whose shapes,
dtype or strategy differ makes gloo abort the process or leaves the others waiting until the process-group
timeout, and a rank with another scale, valid length or runtime gives silently wrong or mixed results.

Internals. Each rank runs its own argument checks (`validate`), then packs a fixed-size int64 descriptor of
its call (`encode`): the sizes, dtype, the strategy that will run, runtime, scale, logical_n and logical_l
expanded to per-batch values (so that None, an int and a tensor meaning the same lengths compare equal),
which inputs require grad (the backward's collectives depend on it), or, if its checks failed, the error's
kind and text. One all-gather of the descriptors (on the device the group's object collectives use: CPU for
gloo, the current CUDA device for NCCL), then every rank decodes the same [P, SLOTS] tensor and reaches the
same verdict (`verdict`): go on, or raise the same message. The descriptor holds up to `LENGTH_VALUES`
lengths per argument; larger batches add a CRC-32 of all of them.

Cost: one small all-gather per call, plus one device-to-host copy of the gathered descriptors (and one of
per-batch lengths held on a GPU), so a host sync per call on GPUs. `check_ranks=False` (or
`JOINTATTN_CHECK_RANKS=0`) skips the exchange; every rank must then make the same choice.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.distributed as dist
from jointattn.runtime.registry import RUNTIME_NAMES
from jointattn.runtime.validation import FLOAT_DTYPES, TENSOR_NAMES, JointShape
from torch import Tensor

from .comm import _all_gather_flat

ENV_VAR = "JOINTATTN_CHECK_RANKS"
ENTRIES = ("ring_joint_attention", "ulysses_joint_attention", "sequence_parallel_joint_attention")
STRATEGIES = ("ring", "ulysses")
ERROR_KINDS = {1: ValueError, 2: TypeError, 3: RuntimeError}
LENGTH_VALUES = 16  # per-batch lengths carried as values; beyond, a CRC-32 stands in for the rest
MESSAGE_BYTES = 384  # a refused call's error text (UTF-8, truncated)
MAGIC = 0x4A41_4443  # "JADC": a jointattn call descriptor, version 1

# Descriptor layout: header slots, then two length blocks (count, crc, values), then the message.
_HEADER = ("magic", "status", "entry", "b", "nh", "n_local", "l", "dh", "dtype", "strategy", "auto",
           "runtime", "scale_bits", "scale_given", "grads")  # fmt: skip
_LENGTH_SLOTS = 2 + LENGTH_VALUES
_LOGICAL_N = len(_HEADER)
_LOGICAL_L = _LOGICAL_N + _LENGTH_SLOTS
_MESSAGE = _LOGICAL_L + _LENGTH_SLOTS
SLOTS = _MESSAGE + MESSAGE_BYTES // 8


class RanksDisagreeError(ValueError):
    """Raised on every rank of the group, with the same message, when their calls differ."""


class CallArgs(NamedTuple):
    """One rank's arguments, as the entry point received them."""

    tensors: tuple[Tensor, ...]  # q, k, v, joint_q, joint_k, joint_v
    logical_n: int | Tensor | None
    logical_l: int | Tensor | None
    scale: float | None
    runtime: str


@dataclass(frozen=True)
class Checked:
    """What `validate` returns: this rank's local shape and the strategy that will run."""

    shape: JointShape
    strategy: str  # "ring" or "ulysses"
    auto: bool = False  # chosen by strategy="auto"


@dataclass(frozen=True)
class Lengths:
    """Per-batch valid lengths: the first `LENGTH_VALUES` values, how many there are, a CRC-32 of all."""

    count: int
    values: tuple[int, ...]
    crc: int

    @classmethod
    def of(cls, values: list[int]) -> Lengths:
        return cls(
            len(values), tuple(values[:LENGTH_VALUES]), zlib.crc32(struct.pack(f"<{len(values)}q", *values))
        )

    def __str__(self) -> str:
        if self.count <= LENGTH_VALUES:
            return str(list(self.values))
        shown = ", ".join(map(str, self.values))
        return f"[{shown}, ...] ({self.count} values, crc32 {self.crc:08x})"


@dataclass(frozen=True)
class CallSummary:
    """What every rank's call must agree on, normalized so that equivalent arguments compare equal."""

    entry: str
    b: int
    nh: int
    n_local: int
    l: int  # noqa: E741
    dh: int
    dtype: torch.dtype
    strategy: str
    auto: bool
    runtime: str
    scale: float  # None resolved to dh ** -0.5, as the op resolves it
    scale_given: bool
    grads: tuple[str, ...]  # the inputs that require grad (with grad mode on)
    logical_n: Lengths  # None and ints expanded to per-batch values
    logical_l: Lengths


@dataclass(frozen=True)
class Refusal:
    """A rank whose own argument checks failed: the error's kind and text."""

    entry: str
    kind: type[Exception]
    message: str


@dataclass(frozen=True)
class NotADescriptor:
    """What a rank sent when it was not in this exchange (e.g. it ran with the check off)."""


def ranks_check_enabled(check_ranks: bool | None) -> bool:
    """The `check_ranks` argument, or when None the environment (`JOINTATTN_CHECK_RANKS`, default 1)."""
    if check_ranks is not None:
        if not isinstance(check_ranks, bool):
            raise TypeError(f"check_ranks must be True, False or None; got {type(check_ranks).__name__}")
        return check_ranks
    value = os.environ.get(ENV_VAR, "1")
    if value not in ("0", "1"):
        raise ValueError(f"{ENV_VAR} must be 0 or 1; got {value!r}")
    return value == "1"


def checked_call(
    entry: str,
    group,
    world_size: int,
    check_ranks: bool | None,
    validate: Callable[[], Checked],
    args: CallArgs,
) -> Checked:
    """Runs this rank's checks and, unless turned off, the exchange; raises the same error on every rank.

    A collective when the check is on and world_size > 1: call it before any other collective of the call.
    """
    if world_size == 1 or not ranks_check_enabled(check_ranks):
        return validate()
    try:
        checked, error = validate(), None
    except Exception as exc:  # every rank must learn of it, or the others would wait in the exchange
        checked, error = None, exc
    mine = summarize(entry, checked, args, world_size) if error is None else refusal(entry, error)
    gathered = exchange(encode(mine), group)
    message, kind = verdict([decode(row) for row in gathered])
    if message is None:
        return checked
    if error is not None and mine.message == message:
        raise error  # every rank refused the same call: its own error, unchanged
    raise kind(message) from error


def summarize(entry: str, checked: Checked, args: CallArgs, world_size: int) -> CallSummary:
    """This rank's validated call, normalized (one device-to-host copy for per-batch length tensors)."""
    shape = checked.shape
    n_values, l_values = _host_lengths(args.logical_n, args.logical_l)
    scale = float(args.scale) if args.scale is not None else shape.dh**-0.5
    requiring = tuple(
        name
        for name, t in zip(TENSOR_NAMES, args.tensors, strict=True)
        if torch.is_grad_enabled() and t.requires_grad
    )
    return CallSummary(
        entry=entry, b=shape.b, nh=shape.nh, n_local=shape.n, l=shape.l, dh=shape.dh,
        dtype=args.tensors[0].dtype, strategy=checked.strategy, auto=checked.auto, runtime=args.runtime,
        scale=scale, scale_given=args.scale is not None, grads=requiring,
        logical_n=Lengths.of(_per_batch(n_values, shape.b, shape.n * world_size)),
        logical_l=Lengths.of(_per_batch(l_values, shape.b, shape.l)),
    )  # fmt: skip


def refusal(entry: str, error: Exception) -> Refusal:
    """This rank's failed checks, as its peers will read them (one line, cut to `MESSAGE_BYTES`)."""
    kind = next((k for k in ERROR_KINDS.values() if isinstance(error, k)), RuntimeError)
    text = " ".join(str(error).split()).encode()[:MESSAGE_BYTES]
    return Refusal(entry, kind, text.decode(errors="ignore"))


def _per_batch(value: int | list[int] | None, b: int, full: int) -> list[int]:
    """A valid-length argument as per-batch values: None means all `full` valid, an int is every entry's."""
    if value is None:
        return [full] * b
    return [value] * b if isinstance(value, int) else value


def _host_lengths(logical_n, logical_l):
    """Tensor lengths as Python lists, both through one copy (they share q's device, checked before)."""
    tensors = [t for t in (logical_n, logical_l) if isinstance(t, Tensor)]
    if not tensors:
        return logical_n, logical_l
    values = torch.cat([t.reshape(-1).to(torch.int64) for t in tensors]).tolist()
    if isinstance(logical_n, Tensor):
        logical_n, values = values[: logical_n.numel()], values[logical_n.numel() :]
    if isinstance(logical_l, Tensor):
        logical_l = values
    return logical_n, logical_l


def encode(record: CallSummary | Refusal) -> Tensor:
    """The fixed-size int64 descriptor of one rank's call."""
    row = [0] * SLOTS
    put = lambda name, value: row.__setitem__(_HEADER.index(name), int(value))
    put("magic", MAGIC)
    put("entry", ENTRIES.index(record.entry))
    if isinstance(record, Refusal):
        put("status", next(code for code, kind in ERROR_KINDS.items() if kind is record.kind))
        text = record.message.encode()[:MESSAGE_BYTES].ljust(MESSAGE_BYTES, b"\0")
        row[_MESSAGE:] = struct.unpack(f"<{MESSAGE_BYTES // 8}q", text)
        return torch.tensor(row, dtype=torch.int64)
    for name in ("b", "nh", "n_local", "l", "dh", "auto", "scale_given"):
        put(name, getattr(record, name))
    put("dtype", FLOAT_DTYPES.index(record.dtype))
    put("strategy", STRATEGIES.index(record.strategy))
    put("runtime", RUNTIME_NAMES.index(record.runtime))
    put("scale_bits", struct.unpack("<q", struct.pack("<d", record.scale))[0])
    put("grads", sum(1 << TENSOR_NAMES.index(name) for name in record.grads))
    for start, lengths in ((_LOGICAL_N, record.logical_n), (_LOGICAL_L, record.logical_l)):
        block = [lengths.count, lengths.crc, *lengths.values]
        row[start : start + len(block)] = block
    return torch.tensor(row, dtype=torch.int64)


def decode(row: Tensor) -> CallSummary | Refusal | NotADescriptor:
    """The inverse of `encode`, for any rank's row of the gathered descriptors."""
    values = row.tolist()
    get = lambda name: values[_HEADER.index(name)]
    if get("magic") != MAGIC or not 0 <= get("entry") < len(ENTRIES):
        return NotADescriptor()
    entry = ENTRIES[get("entry")]
    if get("status"):
        text = struct.pack(f"<{MESSAGE_BYTES // 8}q", *values[_MESSAGE:]).rstrip(b"\0")
        return Refusal(entry, ERROR_KINDS.get(get("status"), RuntimeError), text.decode(errors="ignore"))

    def lengths(start: int) -> Lengths:
        count, crc = values[start], values[start + 1]
        return Lengths(count, tuple(values[start + 2 : start + 2 + min(count, LENGTH_VALUES)]), crc)

    return CallSummary(
        entry=entry, b=get("b"), nh=get("nh"), n_local=get("n_local"), l=get("l"), dh=get("dh"),
        dtype=FLOAT_DTYPES[get("dtype")], strategy=STRATEGIES[get("strategy")], auto=bool(get("auto")),
        runtime=RUNTIME_NAMES[get("runtime")],
        scale=struct.unpack("<d", struct.pack("<q", get("scale_bits")))[0],
        scale_given=bool(get("scale_given")),
        grads=tuple(name for i, name in enumerate(TENSOR_NAMES) if get("grads") >> i & 1),
        logical_n=lengths(_LOGICAL_N), logical_l=lengths(_LOGICAL_L),
    )  # fmt: skip


def exchange(row: Tensor, group) -> Tensor:
    """Every rank's descriptor, [P, SLOTS] on the CPU: one all-gather, one copy back."""
    device = torch.device(_collective_device_type(group))
    row = row.to(device)
    out = row.new_empty(dist.get_world_size(group) * SLOTS)
    _all_gather_flat(out, row, group=group)
    return out.view(-1, SLOTS).cpu()


def _collective_device_type(group) -> str:
    """The device type of the exchange: cpu for gloo (or any group with a CPU backend), cuda (the current
    device) for NCCL alone."""
    pick = getattr(dist.distributed_c10d, "_get_object_coll_device", None)  # what all_gather_object uses
    if pick is not None:
        return pick(group)
    return "cuda" if str(dist.get_backend(group)) == "nccl" else "cpu"


# ----------------------------------------------------------------------------------------------------------
# The verdict: the same inputs on every rank, hence the same outcome everywhere.

_SHAPE_FIELDS = (  # (label, what is compared, how it is shown)
    ("b (q.shape[0])", lambda s: s.b, lambda s: str(s.b)),
    ("nh (q.shape[1])", lambda s: s.nh, lambda s: str(s.nh)),
    ("N_local (q.shape[2])", lambda s: s.n_local, lambda s: str(s.n_local)),
    ("L (joint_q.shape[2])", lambda s: s.l, lambda s: str(s.l)),
    ("dh (q.shape[3])", lambda s: s.dh, lambda s: str(s.dh)),
    ("dtype", lambda s: s.dtype, lambda s: str(s.dtype).removeprefix("torch.")),
)
_CALL_FIELDS = (
    ("strategy", lambda s: s.strategy, lambda s: s.strategy + (" (strategy='auto')" if s.auto else "")),
    ("runtime", lambda s: s.runtime, lambda s: repr(s.runtime)),
    ("scale", lambda s: s.scale, lambda s: repr(s.scale) if s.scale_given else f"None (= {s.scale!r})"),
    ("logical_n", lambda s: s.logical_n, lambda s: str(s.logical_n)),
    ("logical_l", lambda s: s.logical_l, lambda s: str(s.logical_l)),
    ("inputs requiring grad", lambda s: s.grads, lambda s: ", ".join(s.grads) or "none"),
)


def verdict(records: list[CallSummary | Refusal | NotADescriptor]) -> tuple[str | None, type[Exception]]:
    """(None, _) when every rank's call agrees; else (the one-line message, the exception class)."""
    entries = {r.entry for r in records if not isinstance(r, NotADescriptor)}
    who = entries.pop() if len(entries) == 1 else "jointattn.distributed"
    strangers = [rank for rank, r in enumerate(records) if isinstance(r, NotADescriptor)]
    if strangers:
        return (
            f"{who}: {_ranks(strangers)} sent no call description; every rank must call it with the same "
            f"check_ranks (and {ENV_VAR})",
            RuntimeError,
        )
    refused = {rank: r for rank, r in enumerate(records) if isinstance(r, Refusal)}
    if refused:
        kind = refused[min(refused)].kind
        messages = {r.message for r in refused.values()}
        if len(refused) == len(records) and len(messages) == 1:
            return messages.pop(), kind  # the same refusal everywhere: raised as it is
        parts = [
            f"on {_ranks(ranks)}: {message}" for message, ranks in _group_by(refused, lambda r: r.message)
        ]
        return f"{who}: the call is invalid {'; '.join(parts)}", kind
    for fields in (_SHAPE_FIELDS, _CALL_FIELDS):  # a shape difference makes the other fields moot
        differing = [
            f"{label}: {_per_rank(records, key, show)}"
            for label, key, show in fields
            if len({key(r) for r in records}) > 1
        ]
        if differing:
            return f"{who}: ranks disagree on {'; and on '.join(differing)}", RanksDisagreeError
    return None, RanksDisagreeError


def _group_by(by_rank: dict, key) -> list[tuple[object, list[int]]]:
    groups: dict = {}
    for rank, record in by_rank.items():
        groups.setdefault(key(record), []).append(rank)
    return list(groups.items())


def _ranks(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))}"


def _per_rank(records: list[CallSummary], key, show) -> str:
    """Each rank's value: 'rank 0 has X, rank 1 has Y', ranks with equal values grouped ('ranks 0, 2 have X')."""
    groups = _group_by(dict(enumerate(records)), key)
    return ", ".join(
        f"{_ranks(ranks)} {'has' if len(ranks) == 1 else 'have'} {show(records[ranks[0]])}"
        for _, ranks in groups
    )
