"""The block-sparse Triton kernels compiled offline for sm_90 with the wheel's own ptxas, at the configs the
runtime launches for bf16 masks of 128-row query blocks and 64- or 16-key blocks, dh 64 and 128, and the Gluon
Hopper sparse forward at key blocks of 16, 64, 128 and 256: what their speed rests on, checked where no GPU is.
Spills were the reason the backward keeps the dense backward's warps (`sparse_config`) and the gathered dq
tile stops at 64 keys (`gathered_key_tile`)."""

import json
import os
import pathlib
import subprocess
import sys

SHARED_MEMORY_BYTES = 232448  # sm_90's per-block limit (227 KiB)
# Bytes a thread may spill: a handful of registers moved once, not a tile living in local memory. The dense
# Triton kernels' own builds spill 32 (forward with pointer loads, dh 128) and up to 112 (backward, dh 128)
# (benchmarks/NOTES-triton.md).
SPILL_ALLOWANCE = 64


def test_the_runtimes_sparse_configs_compile_for_sm90_within_registers_and_shared_memory():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = pathlib.Path(__file__).with_name("sparse_build_report.py")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    builds = json.loads(run.stdout.splitlines()[-1])["builds"]
    # Triton: 3 kernels x 2 head sizes x 2 key blocks; the Gluon forward: 2 head sizes x 4 key blocks.
    assert len(builds) == 20
    for config, found in builds.items():
        assert found["shared"] <= SHARED_MEMORY_BYTES, (config, found)
        assert found["spill_stores"] is not None and found["spill_stores"] <= SPILL_ALLOWANCE, (config, found)
