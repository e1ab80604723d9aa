"""The demo as a user runs it (`python -m jointattn.demo`): it fuses every joint layer and prints only its own
lines.

A subprocess, because both things it must keep out of its output are process-wide: the profiler's backend reads
its log level once per process, and the warning stock Mochi raises is shown once per process.
Tiny Mochi, because it has both: the profiler that counts the fused calls, and stock code that warns on CPU.
"""

import os
import subprocess
import sys


def test_the_demo_fuses_every_joint_layer_and_prints_only_its_own_lines():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # as a user runs it
    result = subprocess.run(
        [sys.executable, "-m", "jointattn.demo", "--model", "mochi", "--repeats", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == [
        "model",
        "joint attentions fused",
        "max |compiled - eager|",
    ]
    assert lines[1].startswith("joint attentions fused: 2 of 2 ")
    assert len(lines) == 5
