"""Sequence-parallel joint attention on CPU with gloo: 2, 3 and 4 processes against the single-process op.

Each world size starts one group of processes (spawned, one gloo process group) that runs every case of
`CASES`, so process start-up is paid three times, not once per case. In every case each rank:
1. builds the full tensors from the case's seed (the same on every rank, so no rank needs another's data),
2. runs the single-process op (`runtime="reference"`) on them, forward and backward, as ground truth,
3. runs the distributed strategy on its shard (N padded up to a multiple of P; the blocks on the reference
   runtime, or in one case on the Triton kernels through Triton's interpreter) and backpropagates its share
   of the same loss: its rows of the spatial upstream gradients, and its own random upstream gradients for
   the replicated joint outputs (their sum over ranks is what the single-process loss uses),
4. compares: its rows of out / lse and its shards of dq, dk, dv with the reference's; joint_out and the joint
   lse with the reference and bitwise with every other rank's; the sum over ranks of the joint tensors'
   gradients with the reference's (the "sum over the group" convention of jointattn.distributed).
Each group then runs `MISMATCHES`: ranks making different calls, which must all raise the same error at once.
Ranks record each case's outcome in a JSON file; the tests below read them, one test per (world size, case).
A hang fails instead of blocking: gloo operations time out, and the group is killed after a deadline.

Tolerances: the ring merges partials through the op's float32 lse (and `merge_partials` computes in float32),
so with float64 inputs it agrees to about 1e-7, not 1e-15; the all-to-all runs the op once per head group and
agrees to 1e-12. Upstream lse gradients are multiples of 1/64 so that their float32 sums are exact.
"""

from __future__ import annotations

import datetime
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from functools import cache, partial

import pytest
import torch

WORLD_SIZES = (2, 3, 4)
GLOO_TIMEOUT_S = 60  # a collective that waits longer than this raises in the workers
GROUP_DEADLINE_S = 240  # the whole group of processes is killed after this


@dataclass(frozen=True)
class Case:
    id: str
    strategy: str  # "ring", "ulysses" or "auto"
    dtype: torch.dtype
    b: int
    nh: int
    n: int
    l: int  # noqa: E741
    dh: int
    logical_n: tuple[int, ...] | int | None  # a tuple becomes a per-batch tensor
    logical_l: tuple[int, ...] | int | None
    seed: int
    runtime: str = "reference"  # the distributed blocks' runtime (the ground truth is always the reference)
    check_ranks: bool | None = None  # None: the ranks' calls are compared (one exchange per call)


F64, F32 = torch.float64, torch.float32
# N = 13 is a multiple of none of 2, 3, 4 and N = 14 only of 2: the sharding pads the last shard.
# nh = 12 divides by 2, 3 and 4 (all-to-all eligible); nh = 5 by none of them.
CASES = (
    # Mochi-like padding on both token sets, per batch entry.
    Case("ring-f64-padded", "ring", F64, 2, 12, 13, 5, 8, (13, 6), (5, 2), seed=1),
    Case("ulysses-f64-padded", "ulysses", F64, 2, 12, 13, 5, 8, (13, 6), (5, 2), seed=1),
    # Whole shards without a valid key, text fully padded in one entry: rows meet -inf partials first.
    Case("ring-f64-empty-shards", "ring", F64, 2, 12, 14, 3, 8, (2, 0), (0, 3), seed=2),
    Case("ulysses-f64-empty-shards", "ulysses", F64, 2, 12, 14, 3, 8, (2, 0), (0, 3), seed=2),
    # Entry 0 has no valid key at all: out 0, lse -inf, and finite gradients everywhere.
    Case("ring-f64-no-keys", "ring", F64, 2, 12, 13, 4, 8, (0, 9), (0, 2), seed=3),
    Case("ulysses-f64-no-keys", "ulysses", F64, 2, 12, 13, 4, 8, (0, 9), (0, 2), seed=3),
    # Int lengths; the chooser picks the all-to-all (nh divides) ...
    Case("auto-f32-int-lengths", "auto", F32, 1, 12, 14, 4, 16, 11, 3, seed=4),
    # ... and the ring when nh does not divide; no padding given: only the sharding pads (logical_n = N).
    Case("auto-f32-heads-indivisible", "auto", F32, 2, 5, 13, 6, 16, None, None, seed=5),
    # No joint tokens at all (L = 0).
    Case("ring-f32-no-joint", "ring", F32, 1, 12, 13, 0, 8, (10,), None, seed=6),
    Case("ulysses-f32-no-joint", "ulysses", F32, 1, 12, 13, 0, 8, (10,), None, seed=6),
    # The ring's blocks through the Triton kernels (in Triton's interpreter): length-0 joint tensors and
    # per-block valid lengths reach the kernels as they do on a GPU.
    Case("ring-f32-triton-interpreter", "ring", F32, 1, 2, 9, 3, 16, (8,), (2,), seed=7, runtime="triton"),
    # The ranks' calls not compared (no exchange); the chooser's pick (ulysses) then skips it too.
    Case("auto-f64-unchecked", "auto", F64, 2, 12, 13, 5, 8, (13, 6), (5, 2), seed=8, check_ranks=False),
)
# Within a process group of ranks 1..P-1 (`group=`): peers addressed by global rank, collectives on the group.
SUBGROUP_CASES = tuple(c for c in CASES if c.id in ("ring-f64-padded", "ulysses-f64-padded"))
# The ring merges P partials through float32 lse (errors seen: 4e-7 in float64, 1.4e-6 in float32); the
# all-to-all runs the op once per head group, so it matches the reference to rounding of the inputs' dtype.
TOLERANCE = {
    ("ring", F64): dict(atol=2e-6, rtol=2e-6),
    ("ring", F32): dict(atol=2e-5, rtol=2e-5),
    ("ulysses", F64): dict(atol=1e-12, rtol=1e-12),
    ("ulysses", F32): dict(atol=2e-6, rtol=2e-6),
}


# ----------------------------------------------------------------------------------------------------------
# What every rank runs (module-level functions: the spawned processes import this module to find them).


def _lengths(value, b: int):
    return torch.tensor(value, dtype=torch.int32) if isinstance(value, tuple) else value


def _finite(lse):
    """lse with -inf rows (no valid key) zeroed, so a loss through it stays finite, as its gradient."""
    return torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))


def _case_inputs(case: Case, world_size: int):
    """Full inputs and upstream gradients, identical on every rank (one seeded generator)."""
    g = torch.Generator().manual_seed(case.seed)
    randn = lambda *shape: torch.randn(*shape, generator=g, dtype=case.dtype)
    spatial = [randn(case.b, case.nh, case.n, case.dh) for _ in range(3)]
    joint = [randn(case.b, case.nh, case.l, case.dh) for _ in range(3)]
    # lse is float32, so are its gradients: multiples of 1/64 keep their sums over ranks exact in any order.
    lse_grad = lambda *shape: (randn(*shape) * 64).round().float() / 64
    grad_out = randn(case.b, case.nh, case.n, case.dh)
    grad_lse = lse_grad(case.b, case.nh, case.n)
    # Each rank's own upstream gradients for the replicated joint outputs.
    grad_joint = [randn(case.b, case.nh, case.l, case.dh) for _ in range(world_size)]
    grad_joint_lse = [lse_grad(case.b, case.nh, case.l) for _ in range(world_size)]
    return spatial, joint, grad_out, grad_lse, grad_joint, grad_joint_lse


def _reference(case, spatial, joint, grad_out, grad_lse, grad_joint, grad_joint_lse):
    from jointattn import joint_attention

    inputs = [t.clone().requires_grad_() for t in (*spatial, *joint)]
    logical_n, logical_l = _lengths(case.logical_n, case.b), _lengths(case.logical_l, case.b)
    out, joint_out, lse = joint_attention(
        *inputs, logical_n=logical_n, logical_l=logical_l, runtime="reference"
    )
    lse = _finite(lse)
    loss = (
        (out * grad_out).sum()
        + (joint_out * sum(grad_joint)).sum()
        + (lse[..., : case.n] * grad_lse).sum()
        + (lse[..., case.n :] * sum(grad_joint_lse)).sum()
    )
    loss.backward()
    return out.detach(), joint_out.detach(), lse.detach(), [t.grad for t in inputs]


def _distributed(case, group, spatial, joint, grad_out, grad_lse, grad_joint, grad_joint_lse):
    import jointattn.distributed as jd
    import torch.distributed as dist

    rank, world_size = dist.get_rank(group), dist.get_world_size(group)

    shard = lambda t: jd.shard_sequence(t, rank, world_size)
    inputs = [shard(t).clone().requires_grad_() for t in spatial] + [
        t.clone().requires_grad_() for t in joint
    ]
    logical_n = _lengths(case.logical_n, case.b)
    if logical_n is None:
        logical_n = case.n  # the padding the sharding added must not count as keys
    attend = {
        "ring": jd.ring_joint_attention,
        "ulysses": jd.ulysses_joint_attention,
        "auto": jd.sequence_parallel_joint_attention,
    }[case.strategy]
    logical_l = _lengths(case.logical_l, case.b)
    with _counting_exchanges() as exchanges:
        out, joint_out, lse = attend(
            *inputs, group=group, logical_n=logical_n, logical_l=logical_l, runtime=case.runtime,
            check_ranks=case.check_ranks,
        )  # fmt: skip
    n_local = inputs[0].shape[2]
    lse = _finite(lse)
    loss = (
        (out * shard(grad_out)).sum()
        + (joint_out * grad_joint[rank]).sum()
        + (lse[..., :n_local] * shard(grad_lse)).sum()
        + (lse[..., n_local:] * grad_joint_lse[rank]).sum()
    )
    loss.backward()
    return out.detach(), joint_out.detach(), lse.detach(), [t.grad for t in inputs], len(exchanges)


class _counting_exchanges:
    """Records each call of the ranks' exchange (agreement.exchange) made inside the block."""

    def __enter__(self):
        from jointattn.distributed import agreement

        self.module, self.original, calls = agreement, agreement.exchange, []
        agreement.exchange = lambda row, group: calls.append(group) or self.original(row, group)
        return calls

    def __exit__(self, *exc):
        self.module.exchange = self.original


def _run_case(case: Case, group=None) -> None:
    """One case on the ranks of `group` (None: all of them); ranks and sizes are the group's."""
    import jointattn.distributed as jd
    import torch.distributed as dist

    rank, world_size = dist.get_rank(group), dist.get_world_size(group)
    data = _case_inputs(case, world_size)
    ref_out, ref_joint_out, ref_lse, ref_grads = _reference(case, *data)
    out, joint_out, lse, grads, exchanges = _distributed(case, group, *data)
    # Every collective first: a rank whose assertion fails must not leave the others waiting in one.
    n_local = out.shape[2]
    gathered_out = jd.gather_sequence(out, group=group, length=case.n)  # the users' helper, unpadded
    joint_grad_totals = []
    for grad in grads[3:]:
        total = grad.clone()
        dist.all_reduce(total, group=group)
        joint_grad_totals.append(total)
    copies = {}
    for name, t in (("joint_out", joint_out), ("joint lse", lse[..., n_local:].contiguous())):
        copies[name] = [torch.empty_like(t) for _ in range(world_size)]
        dist.all_gather(copies[name], t.contiguous(), group=group)

    strategy = case.strategy
    if strategy == "auto":
        strategy = jd.choose_strategy(case.nh, n_local, case.l, world_size).strategy
    tol = TOLERANCE[strategy, case.dtype]
    rows = max(0, min(n_local, case.n - rank * n_local))  # this rank's rows that exist (not sharding padding)
    shard = lambda t: jd.shard_sequence(t, rank, world_size)
    check = lambda actual, expected, what: torch.testing.assert_close(
        actual, expected, **tol, msg=lambda m: f"{what}: {m}"
    )

    assert out.dtype == case.dtype and tuple(out.shape) == (case.b, case.nh, n_local, case.dh)
    assert lse.dtype == torch.float32 and tuple(lse.shape) == (case.b, case.nh, n_local + case.l)
    assert out.transpose(1, 2).is_contiguous(), "out is laid out [b, N, nh, dh], like the op's"
    check(out[:, :, :rows], shard(ref_out)[:, :, :rows], "out")
    check(gathered_out, ref_out, "gather_sequence(out)")
    check(lse[..., :rows], shard(ref_lse[..., : case.n])[..., :rows], "spatial lse")
    check(joint_out, ref_joint_out, "joint_out")
    check(lse[..., n_local:], ref_lse[..., case.n :], "joint lse")
    # Spatial gradients: this rank's shard of the reference's (zero on the sharding's padding).
    for name, grad, ref in zip(("dq", "dk", "dv"), grads[:3], ref_grads[:3], strict=True):
        check(grad, shard(ref), name)
    # Joint gradients: each rank holds its share; the shares sum to the reference's.
    for name, total, ref in zip(
        ("djoint_q", "djoint_k", "djoint_v"), joint_grad_totals, ref_grads[3:], strict=True
    ):
        check(total, ref, f"{name} summed over ranks")
    # One exchange of call descriptors per call when the check is on (the chooser's included), else none.
    expected_exchanges = 0 if case.check_ranks is False or world_size == 1 else 1
    assert exchanges == expected_exchanges, f"{exchanges} exchanges, expected {expected_exchanges}"
    # joint_out and the joint lse: the same bits on every rank.
    for name, gathered in copies.items():
        differing = [r for r, c in enumerate(gathered) if not torch.equal(c, gathered[0])]
        assert not differing, f"{name} differs from rank 0's on ranks {differing}"


def _run_error_checks(rank: int, world_size: int) -> None:
    """Bad calls raise before any communication, on every rank alike (so nothing hangs)."""
    import jointattn.distributed as jd

    q = torch.randn(1, 5, 3, 4)
    joint = torch.randn(1, 5, 2, 4)
    with _raises(ValueError, "must be divisible by the group size"):
        jd.ulysses_joint_attention(q, q, q, joint, joint, joint)  # nh = 5 on 2, 3, 4 ranks
    with _raises(ValueError, "logical_n"):
        jd.ring_joint_attention(q, q, q, joint, joint, joint, logical_n=3 * world_size + 1)
    with _raises(ValueError, "k must have shape"):
        jd.ring_joint_attention(q, q[:, :, :2], q, joint, joint, joint)
    with _raises(ValueError, "strategy must be one of"):
        jd.sequence_parallel_joint_attention(q, q, q, joint, joint, joint, strategy="tree")


class _raises:
    def __init__(self, kind, text):
        self.kind, self.text = kind, text

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        assert kind is self.kind, (
            f"expected {self.kind.__name__} ({self.text!r}); got {kind and kind.__name__}: {value}"
        )
        assert self.text in str(value), f"expected {self.text!r} in: {value}"
        return True


# ----------------------------------------------------------------------------------------------------------
# Ranks that disagree: rank 1 (of the group) makes another call than the others. Every rank must raise the
# same error at once (before any other collective: nothing aborts or waits for the gloo timeout), and the
# group must stay usable afterwards. What each kind did before the check (gloo abort, hang, silent wrong
# result): README, "Sequence parallelism". The cases run in the groups above, after the others: without the
# check the first of them aborts the group, which fails every test of that world size.

MISMATCH_N = 13  # global spatial length, padded by the sharding on 2, 3 and 4 ranks
MISMATCH_BASE = dict(
    entry="ring", strategy=None, b=2, nh=12, l=5, dh=8, dtype=F64, extra_tokens=0,
    logical_n=(13, 6), logical_l=(5, 2), scale=None, runtime="reference", grad=False,
)  # fmt: skip
MISMATCH_DEADLINE_S = 10  # far below GLOO_TIMEOUT_S: an error that waited on a peer would show here


@dataclass(frozen=True)
class Mismatch:
    """rank1: what rank 1 passes differently. message: the error every rank raises, formatted with n
    (N_local), n1 (N_local + 1), N (the padded global length) and o ("rank 0 has" / "ranks 0, 2 have");
    None: the calls agree and must run."""

    id: str
    rank1: dict
    message: str | None
    kind: str = "RanksDisagreeError"
    everyone: dict = field(default_factory=dict)  # overrides of MISMATCH_BASE on every rank
    subgroup: bool = False  # in the group of ranks 1..P-1 (rank numbers in the message are group ranks)


RING, AUTO = "ring_joint_attention: ranks disagree on ", "sequence_parallel_joint_attention: "
MISMATCHES = (
    Mismatch("N_local", dict(extra_tokens=1), RING + "N_local (q.shape[2]): {o} {n}, rank 1 has {n1}"),
    Mismatch("L", dict(l=4, logical_l=(4, 2)), RING + "L (joint_q.shape[2]): {o} 5, rank 1 has 4"),
    Mismatch("nh", dict(nh=6), RING + "nh (q.shape[1]): {o} 12, rank 1 has 6"),
    # dh also changes the default scale 1/sqrt(dh): only the shape is reported.
    Mismatch("dh", dict(dh=16), RING + "dh (q.shape[3]): {o} 8, rank 1 has 16"),
    Mismatch("b", dict(b=1, logical_n=(13,), logical_l=(5,)), RING + "b (q.shape[0]): {o} 2, rank 1 has 1"),
    Mismatch("dtype", dict(dtype=F32), RING + "dtype: {o} float64, rank 1 has float32"),
    Mismatch(
        "strategy",
        dict(entry="ulysses"),
        "jointattn.distributed: ranks disagree on strategy: {o} ring, rank 1 has ulysses",
    ),
    Mismatch(
        "strategy-auto",
        dict(strategy="ring"),
        AUTO + "ranks disagree on strategy: {o} ulysses (strategy='auto'), rank 1 has ring",
        everyone=dict(entry="auto", strategy="auto"),
    ),
    Mismatch("scale", dict(scale=0.2), RING + "scale: {o} None (= 0.3535533905932738), rank 1 has 0.2"),
    Mismatch(
        "logical_n-int",
        dict(logical_n=10),
        RING + "logical_n: {o} [13, 13], rank 1 has [10, 10]",
        everyone=dict(logical_n=13),
    ),
    Mismatch(
        "logical_n-tensor", dict(logical_n=(13, 7)), RING + "logical_n: {o} [13, 6], rank 1 has [13, 7]"
    ),
    Mismatch("logical_l", dict(logical_l=(5, 3)), RING + "logical_l: {o} [5, 2], rank 1 has [5, 3]"),
    Mismatch("runtime", dict(runtime="triton"), RING + "runtime: {o} 'reference', rank 1 has 'triton'"),
    Mismatch(
        "grad",
        dict(grad=True),
        RING + "inputs requiring grad: {o} none, rank 1 has q, k, v, joint_q, joint_k, joint_v",
    ),
    Mismatch(
        "several",
        dict(scale=0.2, runtime="triton"),
        RING + "runtime: {o} 'reference', rank 1 has 'triton'; "
        "and on scale: {o} None (= 0.3535533905932738), rank 1 has 0.2",
    ),
    # Calls that only rank 1's own checks refuse: without a word from it, the others would wait.
    Mismatch(
        "invalid-on-one-rank",
        dict(logical_n=(13, 99)),
        "ring_joint_attention: the call is invalid on rank 1: "
        "joint_attention: every entry of logical_n must lie in [0, N={N}]; got [13, 99]",
        kind="ValueError",
    ),
    Mismatch(
        "unknown-strategy-on-one-rank",
        dict(strategy="tree"),
        AUTO + "the call is invalid on rank 1: sequence_parallel_joint_attention: strategy must be one of "
        "('auto', 'ring', 'ulysses'); got 'tree'",
        kind="ValueError",
        everyone=dict(entry="auto", strategy="ring"),
    ),
    Mismatch(
        "subgroup-logical_l",
        dict(logical_l=(5, 3)),
        RING + "logical_l: {o} [5, 2], rank 1 has [5, 3]",
        subgroup=True,
    ),
    # Equivalent arguments agree: int and per-batch lengths, None and 1/sqrt(dh) as the scale, the chooser
    # with strategy="ring" and ring_joint_attention. Last: it also shows the group still works.
    Mismatch(
        "equivalent-forms",
        dict(entry="auto", strategy="ring", logical_n=(13, 13), logical_l=5, scale=8**-0.5),
        None,
        kind="none",
        everyone=dict(logical_n=13, logical_l=None),
    ),
)


def _run_mismatch(case: Mismatch, group) -> dict:
    """This rank's call of the case: the error it raised (kind, message, seconds), or for agreeing calls
    the check of its result against the single-process op."""
    import jointattn.distributed as jd
    import torch.distributed as dist

    from jointattn import joint_attention

    rank, world_size = dist.get_rank(group), dist.get_world_size(group)
    agreed = {**MISMATCH_BASE, **case.everyone}
    args = {**agreed, **(case.rank1 if rank == 1 else {})}
    g = torch.Generator().manual_seed(11)
    randn = lambda s: torch.randn(args["b"], args["nh"], s, args["dh"], generator=g, dtype=args["dtype"])
    full = [randn(MISMATCH_N) for _ in range(3)] + [randn(args["l"]) for _ in range(3)]
    shard = lambda t: jd.shard_sequence(t, rank, world_size)
    spatial = [shard(t) for t in full[:3]]
    spatial = [torch.cat([t, t[:, :, : args["extra_tokens"]]], dim=2) for t in spatial]
    inputs = [t.clone().requires_grad_(args["grad"]) for t in (*spatial, *full[3:])]
    if args["entry"] == "auto":
        attend = partial(jd.sequence_parallel_joint_attention, strategy=args["strategy"])
    else:
        attend = {"ring": jd.ring_joint_attention, "ulysses": jd.ulysses_joint_attention}[args["entry"]]
    start = time.monotonic()
    try:
        out, joint_out, _ = attend(
            *inputs, group=group, logical_n=_lengths(args["logical_n"], args["b"]),
            logical_l=_lengths(args["logical_l"], args["b"]), scale=args["scale"], runtime=args["runtime"],
        )  # fmt: skip
        result = dict(kind="none", message="")
    except Exception as exc:
        result = dict(kind=type(exc).__name__, message=str(exc))
    result["seconds"] = time.monotonic() - start
    if result["kind"] == "none":
        ref_out, ref_joint_out, _ = joint_attention(
            *full, logical_n=_lengths(agreed["logical_n"], agreed["b"]),
            logical_l=_lengths(agreed["logical_l"], agreed["b"]), scale=agreed["scale"], runtime="reference",
        )  # fmt: skip
        rows = max(0, min(out.shape[2], MISMATCH_N - rank * out.shape[2]))
        tol = TOLERANCE["ring", args["dtype"]]
        torch.testing.assert_close(out[:, :, :rows], shard(ref_out)[:, :, :rows], **tol)
        torch.testing.assert_close(joint_out, ref_joint_out, **tol)
    return result


def _worker(rank: int, world_size: int, store: str, results_dir: str) -> None:
    import torch.distributed as dist

    # CPU tensors reach the Triton kernels only through its interpreter, which `triton.jit` reads when the
    # kernels are first imported (later than here), also on machines that have a GPU.
    os.environ["TRITON_INTERPRET"] = "1"
    torch.set_num_threads(1)  # CI has 2 cores for up to 4 processes
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=GLOO_TIMEOUT_S),
    )
    outcome = {}
    try:
        for case in CASES:
            try:
                _run_case(case)
                outcome[case.id] = "ok"
            except Exception:
                outcome[case.id] = traceback.format_exc()
        # A group of ranks 1..P-1 (global ranks differ from group ranks; P = 2 gives a group of one).
        subgroup = dist.new_group(list(range(1, world_size)))
        for case in SUBGROUP_CASES:
            try:
                if rank != 0:
                    _run_case(case, subgroup)
                outcome[f"subgroup-{case.id}"] = "ok"
            except Exception:
                outcome[f"subgroup-{case.id}"] = traceback.format_exc()
        try:
            _run_error_checks(rank, world_size)
            outcome["errors"] = "ok"
        except Exception:
            outcome["errors"] = traceback.format_exc()
        for case in MISMATCHES:
            try:
                if case.subgroup and world_size < 3:
                    continue  # a group of one rank has no peer to disagree with
                if case.subgroup and rank == 0:
                    outcome[f"mismatch-{case.id}"] = dict(kind="not in the group")
                    continue
                outcome[f"mismatch-{case.id}"] = _run_mismatch(case, subgroup if case.subgroup else None)
            except Exception:
                outcome[f"mismatch-{case.id}"] = traceback.format_exc()
    finally:
        with open(os.path.join(results_dir, f"rank{rank}.json"), "w") as f:
            json.dump(outcome, f)
        dist.barrier()  # tearing gloo down while a peer still talks aborts the process
        dist.destroy_process_group()
    # The outcome is on disk: skip the interpreter's teardown, where gloo's threads were once seen to abort
    # ("terminate called without an active exception", about 1 group in 100 on a loaded 2-core machine).
    os._exit(0)


# ----------------------------------------------------------------------------------------------------------
# The parent: one group of processes per world size, started on first use.


@cache
def _group_outcomes(world_size: int) -> dict[str, list[str]] | str:
    """case id -> each rank's outcome ("ok" or a traceback); or, if the group itself failed, why. Cached
    either way, so a group that hangs costs its deadline once, not once per test."""
    try:
        return _run_group(world_size)
    except Exception:
        return traceback.format_exc()


def _run_group(world_size: int) -> dict[str, list[str]]:
    import shutil
    import tempfile

    import torch.multiprocessing as mp

    workdir = tempfile.mkdtemp(prefix=f"jointattn-dist-P{world_size}-")
    try:
        context = mp.start_processes(
            _worker,
            args=(world_size, os.path.join(workdir, "store"), workdir),
            nprocs=world_size,
            join=False,
            start_method="spawn",
        )
        deadline = time.monotonic() + GROUP_DEADLINE_S
        try:
            while not context.join(timeout=max(0.1, deadline - time.monotonic())):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the {world_size}-process group did not finish in {GROUP_DEADLINE_S} s"
                    )
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
        outcomes = {}
        for rank in range(world_size):
            with open(os.path.join(workdir, f"rank{rank}.json")) as f:
                for case_id, result in json.load(f).items():
                    outcomes.setdefault(case_id, []).append(result)
        return outcomes
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _assert_all_ranks_ok(world_size: int, case_id: str) -> None:
    outcomes = _group_outcomes(world_size)
    if isinstance(outcomes, str):
        pytest.fail(f"the {world_size}-process group failed:\n{outcomes}")
    results = outcomes.get(case_id, [])
    assert len(results) == world_size, f"only {len(results)} of {world_size} ranks recorded {case_id!r}"
    failures = [f"rank {r}:\n{result}" for r, result in enumerate(results) if result != "ok"]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("case_id", [c.id for c in CASES])
@pytest.mark.parametrize("world_size", WORLD_SIZES, ids=[f"P{p}" for p in WORLD_SIZES])
def test_matches_single_process_forward_and_backward(world_size, case_id):
    _assert_all_ranks_ok(world_size, case_id)


@pytest.mark.parametrize("case_id", [c.id for c in SUBGROUP_CASES])
@pytest.mark.parametrize("world_size", WORLD_SIZES, ids=[f"P{p}" for p in WORLD_SIZES])
def test_subgroup_of_the_last_ranks(world_size, case_id):
    _assert_all_ranks_ok(world_size, f"subgroup-{case_id}")


@pytest.mark.parametrize("world_size", WORLD_SIZES, ids=[f"P{p}" for p in WORLD_SIZES])
def test_bad_calls_raise_before_communicating(world_size):
    _assert_all_ranks_ok(world_size, "errors")


@pytest.mark.parametrize(
    "world_size, case",
    [(p, c) for p in WORLD_SIZES for c in MISMATCHES if p >= 3 or not c.subgroup],
    ids=lambda x: f"P{x}" if isinstance(x, int) else x.id,
)
def test_ranks_that_disagree_all_raise_the_same_error_at_once(world_size, case):
    outcomes = _group_outcomes(world_size)
    if isinstance(outcomes, str):
        pytest.fail(f"the {world_size}-process group failed:\n{outcomes}")
    results = outcomes.get(f"mismatch-{case.id}", [])
    assert len(results) == world_size, f"only {len(results)} of {world_size} ranks recorded {case.id!r}"
    broken = [f"rank {r}:\n{result}" for r, result in enumerate(results) if isinstance(result, str)]
    assert not broken, "\n".join(broken)
    if case.subgroup:
        results, world_size = results[1:], world_size - 1  # group ranks 0.. are global ranks 1..
    n = -(-MISMATCH_N // world_size)
    others = (
        "rank 0 has" if world_size == 2 else f"ranks {', '.join(map(str, [0, *range(2, world_size)]))} have"
    )
    expected = (case.message or "").format(n=n, n1=n + 1, N=n * world_size, o=others)
    assert [(r["kind"], r["message"]) for r in results] == [(case.kind, expected)] * world_size
    slow = [round(r["seconds"], 2) for r in results if r["seconds"] > MISMATCH_DEADLINE_S]
    assert not slow, f"ranks took {slow} s to raise"
