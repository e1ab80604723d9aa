"""The ttnn lowering on real Tenstorrent hardware, and the emulation checked against it.

These run only where `import ttnn` works and a device opens; everywhere else each test is reported as skipped
with the exact reason ("ttnn not importable on CPython 3.11", "no Tenstorrent device", "fewer than 2
Tenstorrent devices"). No machine this project can reach has either, so none of them has run yet: the README
says what is verified only in the emulation.
"""

import sys

import pytest
import torch
from jointattn.runtime.reference import key_bias_from_lengths, reference_forward
from jointattn.runtime.ttnn import lowering
from jointattn.runtime.ttnn.module import ENV_VAR

from jointattn.testing import ttnn_emulation as emulation
from jointattn.testing.comparison import PCC_THRESHOLD, RMSE_THRESHOLD, fa_rand, pcc, rmse


def _hardware():
    """(ttnn module, device count) or (None, the reason the hardware tests cannot run)."""
    try:
        import ttnn
    except ImportError:
        return None, 0, f"ttnn not importable on CPython {sys.version_info.major}.{sys.version_info.minor}"
    try:
        count = int(ttnn.get_num_devices())
    except Exception as error:  # no driver / no PCIe device: ttnn raises rather than returning 0
        return None, 0, f"no Tenstorrent device ({type(error).__name__}: {error})"
    if count == 0:
        return None, 0, "no Tenstorrent device"
    return ttnn, count, ""


TTNN, DEVICES, REASON = _hardware()
pytestmark = pytest.mark.skipif(TTNN is None, reason=REASON)
needs_two = pytest.mark.skipif(DEVICES < 2, reason=REASON or "fewer than 2 Tenstorrent devices")


@pytest.fixture(autouse=True, scope="module")
def _release_lowering_devices():
    """The lowering keeps its device/mesh open across calls (tests of other files may have used it): give it
    back before this module opens devices itself, as a user would have to."""
    lowering.close_devices()
    yield


@pytest.fixture(autouse=True)
def real_ttnn(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    yield
    lowering.close_devices()


def _case(b, nh, n, l, dh, seed):  # noqa: E741
    g = torch.Generator().manual_seed(seed)
    return [fa_rand(b, nh, s, dh, generator=g) for s in (n, n, n, l, l, l)]


def _assert_tt_metal_close(got, inputs, scale, logical_n=None, logical_l=None):
    b, _, n, _ = inputs[0].shape
    l = inputs[3].shape[2]  # noqa: E741
    bias = key_bias_from_lengths(logical_n, logical_l, b, n, l, "cpu")
    want = reference_forward(*(x.double() for x in inputs), scale, bias)
    for g, w in zip(got[:2], want[:2], strict=True):
        assert pcc(w, g) >= PCC_THRESHOLD and rmse(w, g) < RMSE_THRESHOLD
    finite = torch.isfinite(want[2])
    assert torch.equal(torch.isfinite(got[2]), finite)
    torch.testing.assert_close(got[2][finite].double(), want[2][finite], atol=0.1, rtol=0.02)


@pytest.mark.parametrize(
    "b, nh, n, l, dh",  # noqa: E741
    [
        (1, 2, 15, 19, 64),
        (1, 2, 3000, 100, 128),
        (1, 2, 20481, 118, 128),
    ],  # tt-metal's test_joint_sdpa lengths
    ids=["15x19", "3000x100", "20481x118"],
)
def test_joint_sdpa_on_device_meets_tt_metal_thresholds(b, nh, n, l, dh):  # noqa: E741
    inputs = _case(b, nh, n, l, dh, seed=n)
    _assert_tt_metal_close(lowering.joint_sdpa(*inputs, scale=dh**-0.5), inputs, dh**-0.5)


def test_joint_sdpa_on_device_with_padding_on_both_sets():
    inputs = _case(2, 2, 300, 77, 64, seed=1)
    logical_n, logical_l = torch.tensor([300, 257]), torch.tensor([12, 77])
    got = lowering.joint_sdpa(*inputs, scale=0.125, logical_n=logical_n, logical_l=logical_l)
    _assert_tt_metal_close(got, inputs, 0.125, logical_n, logical_l)


@needs_two
@pytest.mark.parametrize("ring", [r for r in (2, 4) if r <= DEVICES] or [2], ids=lambda r: f"ring{r}")
def test_ring_joint_sdpa_on_devices(ring):
    inputs = _case(1, 2, 1000, 118, 64, seed=ring)
    got = lowering.ring_joint_sdpa(*inputs, scale=0.125, logical_n=950, ring_size=ring)
    _assert_tt_metal_close(got, inputs, 0.125, torch.tensor([950]), None)


def test_emulated_op_agrees_with_the_device():
    """The emulation's joint SDPA against the real one on the same uploaded values."""
    inputs = _case(1, 2, 300, 77, 64, seed=2)
    config = dict(q_chunk_size=64, k_chunk_size=128)
    device = TTNN.open_device(device_id=0)
    try:
        real = [
            TTNN.from_torch(x, dtype=TTNN.bfloat16, layout=TTNN.TILE_LAYOUT, device=device) for x in inputs
        ]
        out, joint_out = TTNN.transformer.joint_scaled_dot_product_attention(
            *real,
            joint_strategy="rear",
            program_config=TTNN.SDPAProgramConfig(
                compute_with_storage_grid_size=device.compute_with_storage_grid_size(), **config
            ),
        )
        hardware = (TTNN.to_torch(out), TTNN.to_torch(joint_out))
    finally:
        TTNN.close_device(device)
    emulated_device = emulation.open_device(device_id=0)
    try:
        emulated = emulation.transformer.joint_scaled_dot_product_attention(
            *(
                emulation.from_torch(
                    x, dtype=emulation.bfloat16, layout=emulation.TILE_LAYOUT, device=emulated_device
                )
                for x in inputs
            ),
            joint_strategy="rear",
            program_config=emulation.SDPAProgramConfig(compute_with_storage_grid_size=(8, 8), **config),
        )
        emulated = tuple(emulation.to_torch(t) for t in emulated)
    finally:
        emulation.close_device(emulated_device)
    for h, e in zip(hardware, emulated, strict=True):
        assert pcc(e, h) >= PCC_THRESHOLD and rmse(e, h) < RMSE_THRESHOLD


def test_the_device_refuses_what_the_emulation_refuses():
    device = TTNN.open_device(device_id=0)
    try:
        tensors = [
            TTNN.from_torch(
                torch.randn(1, 1, 64, 64), dtype=TTNN.bfloat16, layout=TTNN.TILE_LAYOUT, device=device
            )
        ] * 6
        config = TTNN.SDPAProgramConfig(
            compute_with_storage_grid_size=(1, 1), q_chunk_size=48, k_chunk_size=32
        )
        with pytest.raises(
            RuntimeError, match="q_chunk_size must be divisible by TILE_SIZE. Got q_chunk_size: 48"
        ):
            TTNN.transformer.joint_scaled_dot_product_attention(
                *tensors, joint_strategy="rear", program_config=config
            )
        config = TTNN.SDPAProgramConfig(
            compute_with_storage_grid_size=(1, 1), q_chunk_size=32, k_chunk_size=32
        )
        with pytest.raises(RuntimeError, match="Joint strategy must be 'rear'. Got: front"):
            TTNN.transformer.joint_scaled_dot_product_attention(
                *tensors, joint_strategy="front", program_config=config
            )
    finally:
        TTNN.close_device(device)
