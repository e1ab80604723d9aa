"""NaN semantics like SDPA's (issue 16): a NaN in a valid key, query or value row gives NaN exactly where eager
SDPA over the valid keys gives NaN, in every runtime; NaN stored in padded rows is never read.

The ground truth is eager SDPA in float64 on the concatenated sequence with the padded keys cut off, per batch
element: a NaN key or value reaches every query row, a NaN query only its own row. Empty valid sets are not
used here (SDPA over no keys is NaN where the op defines 0 and -inf, tested in test_op.py).
"""

import os
import zlib

import pytest
import torch
import torch.nn.functional as F
from helpers import joint_inputs, with_padding_poisoned

import jointattn

B, H, N, L, DH = 2, 2, 9, 5, 16
LOGICAL_N = torch.tensor([9, 6])
LOGICAL_L = torch.tensor([3, 5])


def _eager(inputs, logical_n, logical_l):
    """Eager SDPA per batch element over its valid keys, float64: (out, joint_out)."""
    q, k, v, jq, jk, jv = (t.double() for t in inputs)
    outs = []
    for bz in range(q.shape[0]):
        n_valid, l_valid = int(logical_n[bz]), int(logical_l[bz])
        qq = torch.cat([q[bz], jq[bz]], 1)
        kk = torch.cat([k[bz, :, :n_valid], jk[bz, :, :l_valid]], 1)
        vv = torch.cat([v[bz, :, :n_valid], jv[bz, :, :l_valid]], 1)
        outs.append(F.scaled_dot_product_attention(qq, kk, vv))
    o = torch.stack(outs)
    n = q.shape[2]
    return o[:, :, :n], o[:, :, n:]


def _poison(inputs, where: str):
    """A NaN in one valid row of one tensor: 'k' (batch 0, spatial key 2), 'joint_v' (batch 1, text value 4),
    'q' (batch 1, spatial query 7), 'joint_q' (batch 0, text query 1, past its valid length: still computed)."""
    q, k, v, jq, jk, jv = (t.clone() for t in inputs)
    row = {
        "k": (k, 0, 2),
        "joint_v": (jv, 1, 4),
        "q": (q, 1, 7),
        "joint_q": (jq, 0, 4),
        "joint_k": (jk, 1, 0),
    }
    t, bz, s = row[where]
    t[bz, 1, s, 3] = float("nan")
    return q, k, v, jq, jk, jv


def run_nan_case(where, runtime, dtype, device="cpu", dh=DH, tol=1e-4):
    inputs = joint_inputs(B, H, N, L, dh, dtype=dtype, device=device, seed=zlib.crc32(where.encode()) % 100)
    inputs = (
        inputs[0], with_padding_poisoned(inputs[1], LOGICAL_N), with_padding_poisoned(inputs[2], LOGICAL_N),
        inputs[3], with_padding_poisoned(inputs[4], LOGICAL_L), with_padding_poisoned(inputs[5], LOGICAL_L),
    )  # fmt: skip
    poisoned = _poison(inputs, where) if where != "padding-only" else inputs
    ln, ll = LOGICAL_N.to(device), LOGICAL_L.to(device)
    out, joint_out, lse = jointattn.joint_attention(*poisoned, logical_n=ln, logical_l=ll, runtime=runtime)
    want = _eager([t.cpu() for t in poisoned], LOGICAL_N, LOGICAL_L)
    for got, ref in zip((out, joint_out), want):
        got = got.cpu().double()
        assert torch.equal(torch.isnan(got), torch.isnan(ref)), (where, runtime)
        finite = ~torch.isnan(ref)
        assert torch.allclose(got[finite], ref[finite], atol=tol, rtol=tol)
    # lse: NaN on exactly the rows whose scores hold a NaN (a NaN value leaves the scores, and lse, finite).
    nan_rows = torch.isnan(torch.cat(want, 2)).any(-1) if where in ("k", "q", "joint_q", "joint_k") else None
    if nan_rows is not None:
        assert torch.equal(torch.isnan(lse.cpu()), nan_rows)
    else:
        assert not torch.isnan(lse).any()
    if where == "padding-only":
        assert not torch.isnan(out).any() and not torch.isnan(joint_out).any()


CASES = ["k", "joint_k", "joint_v", "q", "joint_q", "padding-only"]


@pytest.mark.parametrize("where", CASES)
def test_reference(where):
    run_nan_case(where, "reference", torch.float32)


@pytest.mark.parametrize("where", CASES)
@pytest.mark.filterwarnings(
    "ignore:invalid value encountered in subtract:RuntimeWarning"
)  # NaN - NaN, on purpose
def test_triton_kernel_in_the_interpreter(where):
    if torch.cuda.is_available():
        pytest.skip("the CUDA run of this case is test_triton_kernel_on_gpu")
    run_nan_case(where, "triton", torch.float32)


@pytest.mark.parametrize("where", CASES)
def test_ttnn_emulation(where, monkeypatch):
    monkeypatch.setenv("JOINTATTN_TTNN", "emulate")
    run_nan_case(where, "ttnn", torch.float32, tol=0.08)  # bfloat16 on the (emulated) device


@pytest.mark.gpu
@pytest.mark.parametrize("where", CASES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_triton_kernel_on_gpu(where, dtype, monkeypatch):
    monkeypatch.setenv("JOINTATTN_HOPPER_KERNEL", "0")
    run_nan_case(where, "triton", dtype, device="cuda", tol=3e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("where", CASES)
def test_hopper_kernel(where):
    if torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("the Hopper kernel needs compute capability 9.x")
    assert os.environ.get("JOINTATTN_HOPPER_KERNEL", "1") != "0"
    run_nan_case(where, "triton", torch.bfloat16, device="cuda", dh=128, tol=3e-2)
