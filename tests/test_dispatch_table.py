"""The dispatcher's committed table (`runtime/dispatch_measurements.json`) and the benchmark that updates it
(`benchmarks/never_slower.py --update-table`, `--table-rows`): no point measured twice, step rows usable by
`dispatch.choose_training`, and a merge that replaces exactly the points it measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from jointattn.runtime import dispatch

REPO = Path(__file__).resolve().parents[1]
KEY = ("arch", "dtype", "dh", "b_nh", "n", "l", "padded", "pass")


def _key(row):
    return tuple(row[k] for k in KEY)


def test_the_committed_table_has_one_row_per_point_and_pass():
    rows = json.loads(dispatch.MEASUREMENTS.read_text())["rows"]
    keys = [_key(r) for r in rows]
    assert len(keys) == len(set(keys))
    assert {r["pass"] for r in rows} <= {"forward", "backward", "fwd+bwd"}


def test_every_step_row_has_the_sdpa_passes_it_is_weighed_against():
    """`choose_training` reads the joins at a "fwd+bwd" row as the difference to the per-pass sdpa times at
    the same point: a step row without them would be skipped."""
    rows = json.loads(dispatch.MEASUREMENTS.read_text())["rows"]
    by_key = {_key(r): r for r in rows}
    steps = [r for r in rows if r["pass"] == "fwd+bwd"]
    assert steps, "the table has the step rows the training rule reads"
    for step in steps:
        for pass_ in ("forward", "backward"):
            same = by_key.get(_key(dict(step, **{"pass": pass_})))
            assert same is not None and same["ms"].get("sdpa"), (step, pass_)


def _row(pass_, n, **ms):
    return dict(
        arch="sm_90", dtype="bfloat16", dh=64, b_nh=8, n=n, l=77, padded=False, ms=ms, **{"pass": pass_}
    )


def _never_slower(*args, cwd):
    command = [sys.executable, str(REPO / "benchmarks" / "never_slower.py"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_shards_rows_replace_the_points_they_measured_and_keep_the_rest(tmp_path):
    table = tmp_path / "table.json"
    kept, replaced = _row("backward", 256, sdpa=0.5), _row("forward", 256, sdpa=0.1, triton=0.2)
    table.write_text(json.dumps(dict(env={"gpu": "old"}, rows=[kept, replaced])))
    shard = tmp_path / "shard.json"
    new = [_row("forward", 256, sdpa=0.3, triton=0.2), _row("fwd+bwd", 256, sdpa=0.9)]
    shard.write_text(json.dumps(dict(env={"gpu": "H200"}, rows=new)))
    done = _never_slower("--table-rows", shard, "--update-table", table, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    merged = json.loads(table.read_text())
    assert sorted(map(_key, merged["rows"])) == sorted(map(_key, [kept, *new]))
    assert {_key(r): r["ms"] for r in merged["rows"]}[_key(replaced)] == {"sdpa": 0.3, "triton": 0.2}
    assert merged["env"] == {"gpu": "old"}
    (update,) = merged["updates"]
    assert update["rows"] == 2 and update["env"] == {"gpu": "H200"} and "shard.json" in update["source"]


def test_shards_rows_need_a_table_to_go_into(tmp_path):
    shard = tmp_path / "shard.json"
    shard.write_text(json.dumps(dict(env={}, rows=[])))
    done = _never_slower("--table-rows", shard, cwd=tmp_path)
    assert done.returncode != 0
    assert "--update-table" in done.stderr and "Traceback" not in done.stderr
