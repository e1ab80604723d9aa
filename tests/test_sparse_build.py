"""The block-sparse Triton kernels compiled offline for sm_90 with the wheel's own ptxas, at the configs the
runtime launches for bf16 masks of 128-row query blocks and 64-, 16- or 256-key blocks, dh 64 and 128, the Gluon
Hopper sparse forward at key blocks of 16, 64, 128 and 256, the Gluon sparse backward at 64 and 128, and the
estimator's two Triton kernels: what their speed rests on, checked where no GPU is. Spills were the reason the backward keeps the dense backward's
warps (`sparse_config`) and the gathered dq tile stops at 64 keys (`gathered_key_tile`); shared memory, the
reason the Triton forward takes 2 stages for key blocks of a whole tile at dh 128."""

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
# The Gluon backwards at dh 128 hold dK and dV (128 registers a thread) across the query loop: the dense one
# spills 448 bytes outside it (tests/test_hopper_backward.py), the sparse one 584-632 (a few scalars reloaded per
# step, and a partial block's bits, one word per score). Built without the partial path (masks of full blocks
# only) it spills 300 (64-key CTAs) and 236 (128). More would mean its schedule got worse. Its dQ goes in
# 64-column products, as the dense one's: as one dh-128 accumulator ptxas serialized every wgmma (C7512).
GLUON_BACKWARD_SPILL_ALLOWANCE = {"dh64": SPILL_ALLOWANCE, "dh128": 700}
GLUON_BACKWARD_FULL_BLOCKS_SPILL_ALLOWANCE = {"dh64": SPILL_ALLOWANCE, "dh128": 450}


def test_the_runtimes_sparse_configs_compile_for_sm90_within_registers_and_shared_memory():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = pathlib.Path(__file__).with_name("sparse_build_report.py")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    builds = json.loads(run.stdout.splitlines()[-1])["builds"]
    # Triton: 3 kernels x 2 head sizes x 3 key blocks; Gluon: the forward at 2 head sizes x 4 key blocks, the
    # backward at 2 x 2, with and without partial blocks; the estimator's 2 kernels at 4 shapes.
    assert len(builds) == 42
    for config, found in builds.items():
        assert found["shared"] <= SHARED_MEMORY_BYTES, (config, found)
        allowance = SPILL_ALLOWANCE
        if "x256" in config and not config.startswith("hopper"):
            allowance = 2 * SPILL_ALLOWANCE  # key blocks of 256 run the Gluon kernels on Hopper
        if config.startswith("hopper-backward"):
            full_only = config.endswith("full blocks only")
            table = (
                GLUON_BACKWARD_FULL_BLOCKS_SPILL_ALLOWANCE if full_only else GLUON_BACKWARD_SPILL_ALLOWANCE
            )
            allowance = table[config.split()[1]]
            assert not found["wgmma_serialized"], config
        assert found["spill_stores"] is not None and found["spill_stores"] <= allowance, (config, found)
