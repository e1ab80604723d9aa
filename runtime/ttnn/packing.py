"""How one joint_attention call becomes the tensors of one ttnn call, and how its outputs come back.

ttnn's joint SDPA returns (out, joint_out) and no log-sum-exp, takes valid lengths only as tensor shapes, and
computes no query row it was not given keys for. The op needs the lse, and the outputs of padded query rows
(rows at or past a valid length, attending to the valid keys). Both come from extra channels and "sink"
tokens, in the same device call:

- the head dim is widened with zeros to `Channels.width` (a multiple of 32: ttnn does not pad head dims), which
  leaves every score q.k unchanged;
- every real key gets value channel `a` = 1; each of the P sink tokens gets value channel `b` = 1 and a key
  that is 0 except for channel `a`, where it holds `k_c` ~ 1/scale, while every query row i holds a shift `u_i`
  in its channel `a` (real keys have 0 there). So a sink's scaled score for row i is exactly
  `shift_i = u_i * k_c * scale`, and the row returns out' = (Z * out + P e^shift * e_b) / (Z + P e^shift), with
  Z the sum of exp(scaled scores) over the valid keys. Hence out = out'[:dh] / out'[a] and
  lse = log Z = log out'[a] - log out'[b] + log P + shift. Rows that see no valid key get out'[a] = 0: out 0
  and lse -inf, as the op defines.
- the shift puts the sinks' total weight a margin below the row's real keys (`SINK_MARGIN`: out'[a] >= 1 -
  e^-8): the ring op merges its steps as `prev - sigmoid(.) * (prev - cur)`, which would cancel a real part
  much smaller than the sinks' away. It is set from a lower bound of the row's lse computed on the host in
  O(S dh) (`_row_shifts`: the larger of Jensen's bound and the scores against the largest-norm keys), so
  out'[b] stays far above float underflow unless the lse exceeds that bound by ~79; then `decode_rows` raises
  rather than return a wrong lse.
- the padded query rows ride along *as* the sinks (their queries are real), so they are computed against
  exactly the valid keys; when there are none, one dummy sink (query 0) is added.
`u_i` and `k_c` carry at most 7 significant bits, so they are exact in bfloat16 and bfloat8_b and their
product is exact on the device. For bfloat8_b the channels sit at the start of 16-value blocks of their own
(a block shares one exponent: a tiny out'[b] next to out'[a] ~ 1 would round to 0).

`plan_single` lays out a call for `joint_scaled_dot_product_attention`: the valid spatial tokens in the spatial
slot (ttnn pads N and L to its chunk sizes and masks the tails itself) and the valid joint tokens plus the sinks
in the joint slot. `plan_ring` lays one out for `ring_joint_scaled_dot_product_attention`, whose `logical_n`/
`logical_l` already compute padded rows: all tokens in place, one sink after the valid joint tokens.
`Plan.decode` turns the device outputs back into (out, joint_out, lse) of the op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

TILE = 32
BLOCK = 16  # values sharing one exponent in a bfloat8_b tile face row
PACK_DTYPE = torch.bfloat16  # ttnn's from_torch rounds to bfloat16 first for bf16 and bfloat8_b alike
SINK_MARGIN = 8.0  # the sinks' weight sits e^-8 below the row's lse lower bound
PROBE_KEYS = 64  # largest-norm keys whose scores bound each row's lse from below
SHIFT_BITS = 7  # significant bits of u_i and k_c: exact in bfloat16 and bfloat8_b


def round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


@dataclass(frozen=True)
class Channels:
    dh: int  # the op's head dim
    a: int  # value channel that is 1 on every real key; in q/k, the channel of the sinks' score shift
    b: int  # value channel that is 1 on every sink key
    width: int  # device head dim


def normalizer_channels(dh: int, block_float: bool = False) -> Channels:
    """Where the extra channels go and the device head dim they make (bfloat8_b: each in a block of its own)."""
    a = round_up(dh, BLOCK) if block_float else dh
    b = a + BLOCK if block_float else a + 1
    return Channels(dh, a, b, round_up(b + 1, TILE))


@dataclass(frozen=True)
class RowMap:
    """Rows [src, src + count) of slot `slot` (0 spatial, 1 joint) are rows [dst, dst + count) of `dest`."""

    slot: int
    src: int
    count: int
    dest: str  # "out" or "joint_out"
    dst: int


@dataclass
class Plan:
    """The six device inputs of one call (host tensors, widened), and how to read its outputs back."""

    spatial: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    joint: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    channels: Channels
    sinks: int
    shifts: tuple[torch.Tensor, torch.Tensor]  # per slot row: the sinks' scaled score (float64)
    rows: list[RowMap]
    logical_n: int  # valid spatial keys of the slot (the ring op's logical_n)
    logical_l: int  # valid joint keys of the slot (the ring op's logical_l)

    def decode(self, slot_outputs: tuple[torch.Tensor, torch.Tensor], n: int, l: int):  # noqa: E741
        """(out [g,nh,N,dh], joint_out [g,nh,L,dh], lse [g,nh,N+L]) in float32 from the two slot outputs."""
        ch = self.channels
        first = slot_outputs[0]
        g, nh = first.shape[:2]
        out = torch.zeros(g, nh, n, ch.dh)
        joint_out = torch.zeros(g, nh, l, ch.dh)
        lse = torch.empty(g, nh, n + l)
        for m in self.rows:
            rows = slot_outputs[m.slot][:, :, m.src : m.src + m.count].float()
            shift = self.shifts[m.slot][:, :, m.src : m.src + m.count]
            values, row_lse = decode_rows(rows, ch, self.sinks, shift)
            if m.dest == "out":
                out[:, :, m.dst : m.dst + m.count] = values
                lse[:, :, m.dst : m.dst + m.count] = row_lse
            else:
                joint_out[:, :, m.dst : m.dst + m.count] = values
                lse[:, :, n + m.dst : n + m.dst + m.count] = row_lse
        return out, joint_out, lse


def decode_rows(rows: torch.Tensor, ch: Channels, sinks: int, shift: torch.Tensor):
    """out' rows -> (out [..., dh], lse): out'[:dh] / out'[a], log out'[a] - log out'[b] + log P + shift."""
    real = rows[..., ch.a]
    sink = rows[..., ch.b]
    seen = real != 0  # 0: no valid key; NaN (a NaN input) counts as seen, so its row stays NaN as in SDPA
    if bool((seen & (sink <= 0)).any()):
        raise RuntimeError(
            "ttnn lowering: a row's lse lies ~80 or more above its host-side lower bound, so the sinks' weight "
            "out'[b] underflowed and its lse cannot be recovered (see packing._row_shifts)"
        )
    safe = torch.where(seen, real, torch.ones_like(real))
    out = torch.where(
        seen[..., None], rows[..., : ch.dh] / safe[..., None], torch.zeros_like(rows[..., : ch.dh])
    )
    lse = torch.log(safe.double()) - torch.log(torch.where(seen, sink, torch.ones_like(sink)).double())
    lse = torch.where(seen, lse + math.log(sinks) + shift, torch.full_like(lse, -math.inf))
    return out, lse.float()


def _round_bits(x: torch.Tensor, bits: int = SHIFT_BITS) -> torch.Tensor:
    """x rounded to `bits` significant bits (0 stays 0)."""
    x = x.double()
    exponent = torch.floor(torch.log2(torch.where(x != 0, x.abs(), torch.ones_like(x))))
    quantum = torch.exp2(exponent - (bits - 1))
    return torch.where(x != 0, torch.round(x / quantum) * quantum, torch.zeros_like(x))


def _row_shifts(queries: torch.Tensor, keys: torch.Tensor, scale: float, sinks: int):
    """Per query row: (u_i to store in channel a, k_c, the sinks' resulting scaled score), the score being
    SINK_MARGIN + log P below a lower bound of the row's lse: the larger of log S + scale q.mean(k) (Jensen) and
    the row's largest score against the PROBE_KEYS keys of largest norm (lse >= any one score)."""
    k_c = float(_round_bits(torch.tensor(1.0 / scale)))
    keys = keys.float()
    q = queries.float()
    jensen = scale * (q @ keys.mean(dim=2)[..., None]).squeeze(-1) + math.log(keys.shape[2])
    probe = keys.norm(dim=-1).topk(min(PROBE_KEYS, keys.shape[2]), dim=-1).indices
    probes = torch.gather(keys, 2, probe[..., None].expand(-1, -1, -1, keys.shape[-1]))
    lower = torch.maximum(jensen, scale * (q @ probes.transpose(-1, -2)).amax(dim=-1))
    u = _round_bits((lower - SINK_MARGIN - math.log(sinks)) / (k_c * scale))
    return u, k_c, u * k_c * scale


def _widen(x: torch.Tensor, width: int, ones_at: int | None = None) -> torch.Tensor:
    wide = torch.nn.functional.pad(x.to(PACK_DTYPE), (0, width - x.shape[-1]))
    if ones_at is not None:
        wide[..., ones_at] = 1
    return wide


def _tokens(q, k, v, ch: Channels):
    """Real tokens: q, k widened with zeros; v widened with channel a = 1."""
    return _widen(q, ch.width), _widen(k, ch.width), _widen(v, ch.width, ones_at=ch.a)


def _sinks(queries: torch.Tensor, ch: Channels, k_c: float):
    """Sink tokens: the given queries, key 0 but k_c in channel a, value channel b = 1."""
    q = _widen(queries, ch.width)
    k = torch.zeros_like(q)
    k[..., ch.a] = k_c
    v = torch.zeros_like(q)
    v[..., ch.b] = 1
    return q, k, v


def _set_shifts(
    slot: tuple, valid_keys: torch.Tensor, ch: Channels, scale: float, sinks: int
) -> torch.Tensor:
    """Writes u_i into channel a of the slot's queries; returns the sinks' scaled score per slot row."""
    u, _, shift = _row_shifts(slot[0][..., : ch.dh], valid_keys, scale, sinks)
    slot[0][..., ch.a] = u.to(slot[0].dtype)
    return shift


def _cat(*parts):
    return tuple(torch.cat(group, dim=2) for group in zip(*parts, strict=True))


def _require_keys(n: int, l: int) -> None:  # noqa: E741
    if n + l <= 0:
        raise ValueError(
            f"ttnn packing: needs at least one valid key (logical_n + logical_l > 0); got {n} + {l}"
        )


def _valid_keys(k, joint_k, n: int, l: int) -> torch.Tensor:  # noqa: E741
    return torch.cat([k[:, :, :n], joint_k[:, :, :l]], dim=2).to(PACK_DTYPE)


def plan_single(q, k, v, joint_q, joint_k, joint_v, n: int, l: int, ch: Channels, scale: float) -> Plan:  # noqa: E741
    """Layout for joint_scaled_dot_product_attention; needs n + l > 0 (else nothing attends to anything)."""
    _require_keys(n, l)
    big_n, big_l = q.shape[2], joint_q.shape[2]
    padded_queries = torch.cat([q[:, :, n:], joint_q[:, :, l:]], dim=2)
    sink_count = max(padded_queries.shape[2], 1)
    if padded_queries.shape[2] == 0:
        padded_queries = q.new_zeros(q.shape[0], q.shape[1], 1, q.shape[3])
    k_c = float(_round_bits(torch.tensor(1.0 / scale)))
    sinks = _sinks(padded_queries, ch, k_c)
    joint_valid = _tokens(joint_q[:, :, :l], joint_k[:, :, :l], joint_v[:, :, :l], ch)
    rows: list[RowMap] = []
    if n > 0:
        spatial = _tokens(q[:, :, :n], k[:, :, :n], v[:, :, :n], ch)
        joint = _cat(joint_valid, sinks)
        rows += [RowMap(0, 0, n, "out", 0), RowMap(1, 0, l, "joint_out", 0)]
        sink_start = l
    else:  # no valid spatial token: the valid joint tokens take the spatial slot, the sinks the joint slot
        spatial, joint = joint_valid, sinks
        rows.append(RowMap(0, 0, l, "joint_out", 0))
        sink_start = 0
    # The sinks are the padded rows, spatial ones first, in order.
    rows += [
        RowMap(1, sink_start, big_n - n, "out", n),
        RowMap(1, sink_start + big_n - n, big_l - l, "joint_out", l),
    ]
    keys = _valid_keys(k, joint_k, n, l)
    shifts = tuple(_set_shifts(slot, keys, ch, scale, sink_count) for slot in (spatial, joint))
    rows = [m for m in rows if m.count > 0]
    return Plan(spatial, joint, ch, sink_count, shifts, rows, spatial[0].shape[2], joint[0].shape[2])


def plan_ring(
    q,
    k,
    v,
    joint_q,
    joint_k,
    joint_v,
    n: int,
    l: int,  # noqa: E741
    ch: Channels,
    scale: float,
    ring_size: int,
) -> Plan:
    """Layout for ring_joint_scaled_dot_product_attention: spatial tokens in place, padded with zero rows to
    ring_size * N_local (N_local a multiple of 32); one sink after the valid joint tokens (logical_l = l + 1),
    or, with no valid spatial token, first in the spatial slot (logical_n = 1: the op needs logical_n > 0)."""
    _require_keys(n, l)
    big_n, big_l = q.shape[2], joint_q.shape[2]
    k_c = float(_round_bits(torch.tensor(1.0 / scale)))
    sink = _sinks(q.new_zeros(q.shape[0], q.shape[1], 1, q.shape[3]), ch, k_c)
    spatial = _tokens(q, k, v, ch)
    joint = _tokens(joint_q, joint_k, joint_v, ch)
    if n > 0:
        joint = _cat(tuple(t[:, :, :l] for t in joint), sink, tuple(t[:, :, l:] for t in joint))
        rows = [
            RowMap(0, 0, big_n, "out", 0),
            RowMap(1, 0, l, "joint_out", 0),
            RowMap(1, l + 1, big_l - l, "joint_out", l),
        ]
        logical_n, logical_l = n, l + 1
    else:
        spatial = _cat(sink, spatial)
        rows = [RowMap(0, 1, big_n, "out", 0), RowMap(1, 0, big_l, "joint_out", 0)]
        logical_n, logical_l = 1, l
    local = round_up(-(-spatial[0].shape[2] // ring_size), TILE)
    spatial = tuple(torch.nn.functional.pad(t, (0, 0, 0, local * ring_size - t.shape[2])) for t in spatial)
    keys = _valid_keys(k, joint_k, n, l)
    shifts = tuple(_set_shifts(slot, keys, ch, scale, 1) for slot in (spatial, joint))
    rows = [m for m in rows if m.count > 0]
    return Plan(spatial, joint, ch, 1, shifts, rows, logical_n, logical_l)
