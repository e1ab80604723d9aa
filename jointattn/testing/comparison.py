"""How tt-metal judges its joint SDPA against torch, for the tests of the lowerings to Tenstorrent devices.

`pcc` (Pearson correlation of the flattened tensors, as tt-metal's `comp_pcc`), `rmse`, and `fa_rand` (the input
distribution of tt-metal's SDPA tests: standard normal plus rare x10 outliers). tt-metal's `test_joint_sdpa`
passes at PCC >= `PCC_THRESHOLD` and RMSE < `RMSE_THRESHOLD` for bfloat16 and bfloat8_b on hardware.
"""

from __future__ import annotations

import torch

PCC_THRESHOLD = 0.994
RMSE_THRESHOLD = 0.013


def fa_rand(*shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
    normal = torch.randn(shape, generator=generator)
    outliers = torch.randn(shape, generator=generator) * 10
    rare = torch.bernoulli(torch.full(shape, 0.001), generator=generator)
    return normal + outliers * rare


def pcc(expected: torch.Tensor, actual: torch.Tensor) -> float:
    a = expected.double().flatten()
    b = actual.double().flatten()
    if torch.equal(a, b):
        return 1.0
    a = a - a.mean()
    b = b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def rmse(expected: torch.Tensor, actual: torch.Tensor) -> float:
    return float(((expected.double() - actual.double()) ** 2).mean().sqrt())
