"""`jointattn-opt`'s errors: one line on stderr, `jointattn-opt: error: <what>: <expected>`, naming the file,
pass, option or target; exit status 2 for a bad command line and 1 for anything else; no traceback unless
`--debug`. `run_pipeline` raises the same lines.

Most cases call `main(args)` in this process (a new process spends seconds importing torch); a few run the CLI
in real processes, in parallel, to check what a shell sees.
"""

import errno
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from jointattn.compiler.mlir import opt_main
from jointattn.compiler.mlir.opt_errors import InputError, PassError, UsageError
from jointattn.compiler.mlir.opt_main import main, run_pipeline
from jointattn.passes.mlir.fuse import FuseJointAttentionPass
from xdsl.utils.exceptions import PassFailedException

PREFIX = "jointattn-opt: error: "
GOOD = "func.func @f(%a: !torch.vtensor<[2],f32>) -> !torch.vtensor<[2],f32> {\n  return %a : !torch.vtensor<[2],f32>\n}\n"
# A joint attention with a run-time scale, which lower-joint-attention refuses with its reason.
RUNTIME_SCALE = Path(__file__).parent / "lit" / "lower-joint-attention-errors.mlir"
REFUSAL = (
    "lower-joint-attention: torch.operator: scale is computed at run time (the lowering needs a constant)"
)

INPUTS = {
    "good.mlir": GOOD,
    "good.txt": GOOD,
    "empty.mlir": "",
    "blank.mlir": "  \n\t\n",
    "malformed.mlir": "func.func @f( {\n",
    "unknown-op.mlir": 'func.func @f() {\n  %0 = "foo.bar"() : () -> i32\n  func.return\n}\n',
    "unverified.mlir": "func.func @f(%a: i32) -> i64 {\n  func.return %a : i32\n}\n",
}
UNREGISTERED = (
    ": expected an op of torch-mlir's torch dialect, the jointattn dialects or xDSL's"
    " (--allow-unregistered-dialect parses it generically)"
)

# (args, exit status, the line after "jointattn-opt: error: "); {d} is the inputs' directory.
CASES = {
    "missing-file": (
        ["{d}/missing.mlir"],
        1,
        "input file '{d}/missing.mlir': no such file or directory: expected a readable MLIR file",
    ),
    "directory": (["{d}"], 1, "input file '{d}': is a directory: expected a readable MLIR file"),
    "empty-file": (
        ["{d}/empty.mlir"],
        1,
        "input file '{d}/empty.mlir': is empty: expected MLIR text (a module or functions)",
    ),
    "blank-file": (
        ["{d}/blank.mlir"],
        1,
        "input file '{d}/blank.mlir': is empty: expected MLIR text (a module or functions)",
    ),
    "extension": (
        ["{d}/good.txt"],
        2,
        "input file '{d}/good.txt': extension '.txt': expected .mlir, or -f mlir to read it as MLIR",
    ),
    "malformed-ir": (["{d}/malformed.mlir"], 1, "{d}/malformed.mlir:1:15: Expected argument or type"),
    "unknown-op": (
        ["{d}/unknown-op.mlir"],
        1,
        "{d}/unknown-op.mlir:2:17: Operation foo.bar is not registered" + UNREGISTERED,
    ),
    "ir-does-not-verify": (
        ["{d}/unverified.mlir"],
        1,
        "{d}/unverified.mlir: does not verify: func.return: Expected arguments to have the same types as the"
        " function output types: expected [i64], got [i32]",
    ),
    "unknown-pass": (
        ["{d}/good.mlir", "-p", "fuse-joint"],
        2,
        re.compile(
            r"unknown pass 'fuse-joint': expected fuse-joint-attention, lower-joint-attention, or one of the \d+"
            r" other passes --help lists \(did you mean 'fuse-joint-attention'\?\)"
        ),
    ),
    "unknown-option": (
        ["{d}/good.mlir", "-p", "fuse-joint-attention{emitt=operator}"],
        2,
        "fuse-joint-attention: unknown option 'emitt': expected one of emit=jointattn|operator, remarks=true|false",
    ),
    "bad-emit": (
        ["{d}/good.mlir", "-p", "fuse-joint-attention{emit=bar}"],
        2,
        "fuse-joint-attention: option emit=bar: expected one of jointattn, operator",
    ),
    "bad-target": (
        ["{d}/good.mlir", "-p", "lower-joint-attention{target=foo}"],
        2,
        "lower-joint-attention: option target=foo: expected one of ttnn, triton, ttlang",
    ),
    "missing-target": (
        ["{d}/good.mlir", "-p", "lower-joint-attention"],
        2,
        "lower-joint-attention: option target is missing: expected target=ttnn|triton|ttlang",
    ),
    "bool-as-word": (
        ["{d}/good.mlir", "-p", "fuse-joint-attention{remarks=maybe}"],
        2,
        "fuse-joint-attention: option remarks=maybe: expected true or false",
    ),
    "bool-as-int": (
        ["{d}/good.mlir", "-p", "fuse-joint-attention{remarks=3}"],
        2,
        "fuse-joint-attention: option remarks=3: expected true or false",
    ),
    "bool-without-value": (
        ["{d}/good.mlir", "-p", "fuse-joint-attention{remarks}"],
        2,
        "fuse-joint-attention: option remarks has no value: expected true or false",
    ),
    "pipeline-syntax": (
        ["{d}/good.mlir", "-p", "fuse-joint-attention{"],
        2,
        "pass pipeline 'fuse-joint-attention{' at column 22: Expected argument name here",
    ),
    "unknown-target": (
        ["{d}/good.mlir", "-t", "nope"],
        2,
        re.compile(r"argument -t/--target: invalid choice: 'nope' \(choose from .*python\)"),
    ),
    "target-syntax": (
        ["{d}/good.mlir", "-t", "python{"],
        2,
        "option -t/--target at column 8: Expected argument name here",
    ),
    "unknown-flag": (
        ["{d}/good.mlir", "--bogus"],
        2,
        "unrecognized arguments: --bogus: expected the options --help lists and at most one input file",
    ),
    "output-dir-missing": (
        ["{d}/good.mlir", "-o", "{d}/no-such-dir/out.mlir"],
        1,
        "output file '{d}/no-such-dir/out.mlir': no such file or directory: expected a writable file in an"
        " existing directory",
    ),
    "output-is-a-directory": (
        ["{d}/good.mlir", "-o", "{d}"],
        1,
        "output file '{d}': is a directory: expected a writable file in an existing directory",
    ),
    "pass-refuses": ([str(RUNTIME_SCALE), "-p", "lower-joint-attention{target=ttnn}"], 1, REFUSAL),
}


@pytest.fixture
def inputs(tmp_path) -> Path:
    for name, text in INPUTS.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    """`main(args)` in this process: (exit status, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(err: str, expected) -> None:
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    line = err.removeprefix(PREFIX).removesuffix("\n")
    assert err.startswith(PREFIX), err
    if isinstance(expected, re.Pattern):
        assert expected.fullmatch(line), line
    else:
        assert line == expected


def _fill(value, directory: Path):
    if isinstance(value, re.Pattern):
        return value
    return value.replace("{d}", str(directory))


@pytest.mark.parametrize("case", list(CASES))
def test_an_error_is_one_line_naming_what_and_what_was_expected(case, inputs, capsys):
    args, status, expected = CASES[case]
    code, out, err = run_main([_fill(a, inputs) for a in args], capsys)
    assert code == status
    assert out == ""
    assert_one_line(err, _fill(expected, inputs))


def test_a_parse_error_in_a_later_chunk_gives_the_file_line(inputs, capsys):
    split = inputs / "split.mlir"
    split.write_text("func.func @f() {\n  func.return\n}\n// -----\nfunc.func @g( {\n")
    code, out, err = run_main([str(split), "--split-input-file"], capsys)
    assert code == 1
    assert "func.func @f()" in out  # the first chunk was fine
    assert_one_line(err, f"{split}:5:15: Expected argument or type")


def test_an_unreadable_input_file_is_named(inputs, capsys, monkeypatch):
    locked = inputs / "locked.mlir"
    locked.write_text(GOOD)
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # root reads through chmod 000: refuse the open as the kernel would

        def refuse(path, *args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

        monkeypatch.setattr(opt_main, "open", refuse, raising=False)
    code, _, err = run_main([str(locked)], capsys)
    assert code == 1
    assert_one_line(err, f"input file '{locked}': permission denied: expected a readable MLIR file")


def test_empty_stdin_is_named(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n")))
    code, _, err = run_main([], capsys)
    assert code == 1
    assert_one_line(err, "stdin: is empty: expected MLIR text (a module or functions)")


def test_a_pass_that_crashes_is_named_and_points_at_debug(inputs, capsys, monkeypatch):
    def crash(self, ctx, module):
        raise KeyError("boom")

    monkeypatch.setattr(FuseJointAttentionPass, "apply", crash)
    args = [str(inputs / "good.mlir"), "-p", "fuse-joint-attention"]
    code, _, err = run_main(args, capsys)
    assert code == 1
    assert_one_line(
        err, "fuse-joint-attention: internal error: KeyError: 'boom'; --debug shows the traceback"
    )
    with pytest.raises(PassError) as raised:
        main([*args, "--debug"])
    assert isinstance(raised.value.__cause__, KeyError)


def test_a_pass_that_leaves_invalid_ir_is_named(inputs, capsys, monkeypatch):
    def drop_return(self, ctx, module):
        next(iter(module.body.block.ops)).body.block.last_op.detach()

    monkeypatch.setattr(FuseJointAttentionPass, "apply", drop_return)
    code, _, err = run_main([str(inputs / "good.mlir"), "-p", "fuse-joint-attention"], capsys)
    assert code == 1
    assert_one_line(err, re.compile(r"fuse-joint-attention: left IR that does not verify: .*terminator"))


def test_debug_raises_with_the_traceback(inputs):
    with pytest.raises(PassError, match=re.escape(REFUSAL)) as raised:
        main([str(RUNTIME_SCALE), "-p", "lower-joint-attention{target=ttnn}", "--debug"])
    assert isinstance(raised.value.__cause__, PassFailedException)
    with pytest.raises(UsageError, match="unknown pass 'fuse-joint'"):
        main([str(inputs / "good.mlir"), "-p", "fuse-joint", "--debug"])


def test_a_failed_run_leaves_no_output_file(inputs, capsys):
    out = inputs / "out.mlir"
    out.write_text("stale\n")
    code, _, err = run_main(
        [str(RUNTIME_SCALE), "-p", "lower-joint-attention{target=ttnn}", "-o", str(out)], capsys
    )
    assert code == 1
    assert_one_line(err, REFUSAL)
    assert not out.exists()
    assert run_main([str(inputs / "good.mlir"), "-o", str(out)], capsys) == (0, "", "")
    assert "func.return %a" in out.read_text()


@pytest.mark.parametrize(
    "text,pipeline,error,line",
    [
        (
            GOOD,
            "fuse-joint",
            UsageError,
            "unknown pass 'fuse-joint': expected fuse-joint-attention, "
            "lower-joint-attention (did you mean 'fuse-joint-attention'?)",
        ),
        (
            GOOD,
            "fuse-joint-attention{emit=bar}",
            UsageError,
            "fuse-joint-attention: option emit=bar: expected one of jointattn, operator",
        ),
        (
            GOOD,
            "fuse-joint-attention{remarks=3}",
            UsageError,
            "fuse-joint-attention: option remarks=3: expected true or false",
        ),
        (
            GOOD,
            "fuse-joint-attention{",
            UsageError,
            "pass pipeline 'fuse-joint-attention{' at column 22: Expected argument name here",
        ),
        ("", "", InputError, "<input>: is empty: expected MLIR text (a module or functions)"),
        ("func.func @f( {\n", "", InputError, "<input>:1:15: Expected argument or type"),
        (RUNTIME_SCALE.read_text(), "lower-joint-attention{target=ttnn}", PassError, REFUSAL),
    ],
    ids=["unknown-pass", "bad-value", "bad-type", "syntax", "empty", "malformed", "pass-refuses"],
)
def test_run_pipeline_raises_the_same_lines(text, pipeline, error, line):
    with pytest.raises(error) as raised:
        run_pipeline(text, pipeline)
    assert str(raised.value) == line
    # The families callers already catch: ValueError for bad input, xDSL's exception for a failed pass.
    assert isinstance(raised.value, PassFailedException if error is PassError else ValueError)


# ---------------------------------------------------------------------------------------------------------
# Real processes: what a shell sees (no traceback printed by the interpreter, the exit status).

PROCESSES = {
    "pipeline-syntax": (["{d}/good.mlir", "-p", "fuse-joint-attention{"], 2),
    "pass-refuses": ([str(RUNTIME_SCALE), "-p", "lower-joint-attention{target=ttnn}"], 1),
    "debug": ([str(RUNTIME_SCALE), "-p", "lower-joint-attention{target=ttnn}", "--debug"], 1),
}


@pytest.fixture(scope="module")
def processes(tmp_path_factory) -> tuple[dict[str, subprocess.CompletedProcess], Path]:
    """Every process of PROCESSES, started together (each spends seconds importing torch), and their inputs'
    directory."""
    directory = tmp_path_factory.mktemp("inputs")
    (directory / "good.mlir").write_text(GOOD)
    started = {
        name: subprocess.Popen(
            [sys.executable, "-m", "jointattn.compiler.mlir.opt_main", *[_fill(a, directory) for a in args]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, _) in PROCESSES.items()
    }
    # A reader that goes away before the output comes (`jointattn-opt ... | head`, head already done).
    started["closed-stdout"] = subprocess.Popen(
        [sys.executable, "-m", "jointattn.compiler.mlir.opt_main", str(directory / "good.mlir")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started["closed-stdout"].stdout.close()
    results = {}
    for name, process in started.items():
        if process.stdout.closed:
            out, err = "", process.stderr.read()
            process.wait(timeout=120)
        else:
            out, err = process.communicate(timeout=120)
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return results, directory


@pytest.mark.parametrize("case", [c for c in PROCESSES if c != "debug"])
def test_a_process_prints_one_line_and_fails(case, processes):
    results, directory = processes
    result = results[case]
    assert result.returncode == PROCESSES[case][1]
    assert result.stdout == ""
    assert_one_line(result.stderr, _fill(CASES[case][2], directory))


def test_a_process_with_debug_prints_the_traceback(processes):
    result = processes[0]["debug"]
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert f"PassError: {REFUSAL}" in result.stderr


def test_a_reader_that_goes_away_gets_no_traceback(processes):
    result = processes[0]["closed-stdout"]
    assert result.returncode == 1
    assert result.stderr == ""
