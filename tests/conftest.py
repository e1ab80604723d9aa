"""Test-session setup shared by every suite.

Without a CUDA device, Triton kernels run in its interpreter on CPU tensors; TRITON_INTERPRET must be set
before `triton.jit` decorates anything, hence here, before any test module imports the kernels.
Tests marked `gpu` need CUDA; they run on the device machine and are reported as skipped (with the reason)
elsewhere.
"""

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(
        reason="needs a CUDA device: run on the GPU machine (see README, 'GPU tests')"
    )
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles from scratch: no cached graphs or recompile counters leak between tests."""
    import torch._dynamo

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
