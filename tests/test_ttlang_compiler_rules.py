"""The TT-Lang kernels keep to what the TT-Lang compiler's front end accepts (PyPI `tt-lang` 1.1.1), checked on
their syntax tree and their closures, without the compiler: its wheel is CPython 3.12 only and needs a device.

The compiler runs an operation's body as Python (it makes the dataflow buffers) and translates each thread
function (`@ttl.compute()`, `@ttl.datamovement()`) from its syntax tree to MLIR. The rules below are copied from
its front end (kernels/ttlang/COMPILER.md cites the lines); each `RULE_*` is one of them. A kernel that breaks one
would not compile, so these tests fail if someone brings back host-plan iteration, dicts of buffers, Python-bool
branches, simulator-only block functions or the simulator's spelling.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from jointattn.kernels.ttlang.schedule import DATAFLOW_BUFFERS, MAX_DATAFLOW_BUFFERS, plan_joint_attention

KERNEL = Path(__file__).parents[1] / "kernels" / "ttlang" / "joint_attention.py"

# ttl/pykernel/_src/kernel_ast.py, TTCompilerBase.supported_nodes, plus ast.With and ast.AsyncFunctionDef
# (ttl/_src/ttl_ast.py, TTLGenericCompiler.__init__): `visit` raises "visit X not supported" for any other node.
SUPPORTED = {
    ast.Name, ast.Load, ast.Store, ast.If, ast.For, ast.Constant, ast.Attribute, ast.Expr, ast.IfExp, ast.Call,
    ast.UnaryOp, ast.UAdd, ast.USub, ast.Not, ast.Invert, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div,
    ast.FloorDiv, ast.Mod, ast.Pow, ast.LShift, ast.RShift, ast.BitOr, ast.BitXor, ast.BitAnd, ast.BoolOp, ast.And,
    ast.Or, ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Subscript, ast.List, ast.Tuple,
    ast.Pass, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Module, ast.FunctionDef, ast.arguments, ast.arg,
    ast.With, ast.AsyncFunctionDef,
}  # fmt: skip
# Nodes those visitors read themselves, never through `visit`: with-items, keyword arguments, slices (tensor
# subscripts), the matmul operator (BinOp dispatches `@` to `__matmul__`).
READ_IN_PLACE = {ast.withitem, ast.keyword, ast.Slice, ast.MatMult}
# `ttl.X` and `ttl.math.X` resolve by name in the compiler's syntax table (`_resolve_ttl_function`): the kernels
# may call these. `ttl.node` (dims=2 only), `ttl.copy`; `ttl.math`: the elementwise functions
# (ttl/_generated_elementwise.py) and fill, broadcast, reduce_sum, reduce_max, transpose (ttl/operators.py).
TTL_CALLS = {"copy", "node"}
TTL_MATH = {"exp", "log", "max", "recip", "fill", "broadcast", "reduce_max", "reduce_sum", "transpose"}
# Methods on a dataflow buffer (ttl/dataflow_buffer.py), a block (ttl/operators.py TensorBlock) and a copy's
# transfer handle (CopyTransferHandler.wait).
METHODS = {"reserve", "wait", "store", "pop", "push"}
# Simulator-only in the spec's functionality matrix, or absent from the compiler's `ttl`.
SIMULATOR_ONLY = {"where", "mask", "mask_posinf", "squeeze", "unsqueeze", "block", "grid_size"}


def _decorator_name(node: ast.FunctionDef) -> str | None:
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if (
            isinstance(target, ast.Attribute)
            and isinstance(target.value, ast.Name)
            and target.value.id == "ttl"
        ):
            return target.attr
    return None


def kernel_functions(source: str):
    """(operation, [threads]) of the one `@ttl.operation` in `source`."""
    tree = ast.parse(source)
    operations = [
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and _decorator_name(n) == "operation"
    ]
    assert len(operations) == 1
    op = operations[0]
    threads = [
        n
        for n in op.body
        if isinstance(n, ast.FunctionDef) and _decorator_name(n) in ("compute", "datamovement")
    ]
    return op, threads


def _is_ttl_math(node) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "ttl"
        and node.attr == "math"
    )


def violations(op: ast.FunctionDef, thread: ast.FunctionDef, constants: set[str]) -> list[str]:
    """Every place `thread` breaks a rule of the compiler's front end, as 'line: rule: what'."""
    found = []

    def bad(node, rule, what):
        found.append(f"{getattr(node, 'lineno', '?')}: {rule}: {what}")

    tensors = {a.arg for a in op.args.args}
    buffers = {
        t.id
        for n in op.body
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
        for t in n.targets
        if isinstance(t, ast.Name) and ast.unparse(n.value.func) == "ttl.make_dataflow_buffer_like"
    }
    captured = tensors | buffers | constants | {"ttl", "range"}
    # The compiler drops decorator lines before parsing (`_cleanup_source_code`): check the body.
    nodes = [node for stmt in thread.body for node in ast.walk(stmt)]

    # RULE_NODES: only node types the front end visits.
    for node in nodes:
        if type(node) not in SUPPORTED | READ_IN_PLACE:
            bad(node, "RULE_NODES", f"{type(node).__name__} is not a construct the compiler translates")
        if isinstance(node, ast.FunctionDef):
            bad(
                node,
                "RULE_NODES",
                "a function defined inside a kernel is only a PipeNet callback to the compiler",
            )
        if (
            isinstance(node, ast.Constant)
            and not isinstance(node.value, (int, float))
            or (isinstance(node, ast.Constant) and isinstance(node.value, bool))
        ):
            bad(node, "RULE_NODES", f"constant {node.value!r}: only int and float constants")
        if isinstance(node, ast.IfExp):
            bad(node, "RULE_NODES", "conditional expression: the front end has no visitor for it")
        if isinstance(node, ast.AugAssign):
            bad(
                node,
                "RULE_NODES",
                "augmented assignment works on memref scalars and += on reserved blocks only",
            )
    # RULE_FOR: `for name in range(...)`, "Only range() supported in for loops" (visit_For).
    for node in nodes:
        if isinstance(node, ast.For):
            it = node.iter
            if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"):
                bad(node, "RULE_FOR", f"loop over {ast.unparse(it)}: only range() loops")
            elif not 1 <= len(it.args) <= 3 or it.keywords:
                bad(node, "RULE_FOR", "range() takes 1 to 3 positional arguments")
            if not isinstance(node.target, ast.Name) or node.orelse:
                bad(node, "RULE_FOR", "a loop binds one name and has no else")
    # RULE_IF: the test is an integer comparison ("Cannot Compare Non-Integer Values", visit_If); a captured Python
    # int is an index constant, so even `if flag:` on a launch constant would not compile.
    for node in nodes:
        if isinstance(node, ast.If):
            tests = node.test.values if isinstance(node.test, ast.BoolOp) else [node.test]
            for test in tests:
                if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
                    bad(node, "RULE_IF", f"if {ast.unparse(test)}: compare integers (one operator) instead")
    # RULE_CALLS: ttl.X / ttl.math.X from the syntax table, buffer/block/handle methods, range as a loop bound.
    for node in nodes:
        if isinstance(node, ast.Attribute) and node.attr in SIMULATOR_ONLY:
            bad(node, "RULE_CALLS", f"{ast.unparse(node)} is not in the compiler's ttl (simulator only)")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name):
            if func.id != "range":
                bad(node, "RULE_CALLS", f"{func.id}(): not in the compiler's syntax table")
        elif isinstance(func, ast.Attribute):
            base = func.value
            if isinstance(base, ast.Name) and base.id == "ttl":
                if func.attr not in TTL_CALLS:
                    bad(node, "RULE_CALLS", f"ttl.{func.attr} is not a kernel call the compiler knows")
            elif _is_ttl_math(base):
                if func.attr not in TTL_MATH:
                    bad(node, "RULE_CALLS", f"ttl.math.{func.attr} is not used by / known to these kernels")
            elif func.attr not in METHODS:
                bad(node, "RULE_CALLS", f".{func.attr}() is no buffer, block or transfer method")
            elif not isinstance(base, (ast.Name, ast.Call)):
                bad(node, "RULE_CALLS", f"method on {ast.unparse(base)}: call methods on names or calls")
        else:
            bad(node, "RULE_CALLS", f"call of {ast.unparse(func)}")
    # RULE_SIGNATURES: the compiler 1.1.1 spelling (ttl/operators.py), not the simulator's keywords.
    for node in nodes:
        if isinstance(node, ast.Call) and _is_ttl_math(getattr(node.func, "value", None)):
            name, keywords = node.func.attr, {k.arg for k in node.keywords}
            expected = {"fill": (2, set()), "broadcast": (2, {"dims"}), "reduce_max": (2, {"dims"})}
            expected |= {"reduce_sum": (2, {"dims"}), "transpose": (1, set())}
            if name in expected and (len(node.args), keywords) != expected[name]:
                bad(
                    node,
                    "RULE_SIGNATURES",
                    f"{ast.unparse(node)[:60]}: compiler 1.1.1 spells {name} differently",
                )
    # RULE_WITH: `with name.reserve() as x` / `with name.wait() as x` only (_emit_cb_with_body).
    for node in nodes:
        if isinstance(node, ast.With):
            for item in node.items:
                ctx = item.context_expr
                ok = (
                    isinstance(ctx, ast.Call)
                    and isinstance(ctx.func, ast.Attribute)
                    and ctx.func.attr in ("reserve", "wait")
                    and isinstance(ctx.func.value, ast.Name)
                    and not ctx.args
                )
                if not ok:
                    bad(node, "RULE_WITH", f"with {ast.unparse(ctx)}: a named buffer's reserve() or wait()")
                elif ctx.func.value.id not in buffers:
                    bad(
                        node,
                        "RULE_WITH",
                        f"{ctx.func.value.id} is not a dataflow buffer made by the operation",
                    )
                if item.optional_vars is not None and not isinstance(item.optional_vars, ast.Name):
                    bad(node, "RULE_WITH", "with ... as <one name>")
    # RULE_SUBSCRIPT: only tensors are subscripted, with explicit start:stop slices (visit_Subscript); no dicts.
    for node in nodes:
        if isinstance(node, ast.Subscript):
            if not (isinstance(node.value, ast.Name) and node.value.id in tensors):
                bad(
                    node,
                    "RULE_SUBSCRIPT",
                    f"{ast.unparse(node)}: only the operation's tensors are subscripted",
                )
            parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            for part in parts:
                if isinstance(part, ast.Slice) and (part.lower is None or part.upper is None or part.step):
                    bad(node, "RULE_SUBSCRIPT", "slices need an explicit start and stop and no step")
    # RULE_ASSIGN: one target; a tuple only to unpack ttl.node(dims=2) (visit_Assign).
    for node in nodes:
        if isinstance(node, ast.Assign):
            target = node.targets[0]
            if len(node.targets) != 1:
                bad(node, "RULE_ASSIGN", "one target per assignment")
            elif isinstance(target, ast.Tuple) and ast.unparse(node.value) != "ttl.node(dims=2)":
                bad(node, "RULE_ASSIGN", "tuple assignment is only for ttl.node(dims=2)")
            elif not isinstance(target, (ast.Name, ast.Tuple)):
                bad(node, "RULE_ASSIGN", f"assignment to {ast.unparse(target)}")
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "ttl.node":
            if [ast.unparse(k) for k in node.keywords] != ["dims=2"]:
                bad(node, "RULE_ASSIGN", "ttl.node supports dims=2 only")
    # RULE_STAGING: the compiler's pipeline refuses a reduce fused with elementwise operations ("failed to legalize
    # operation 'ttl.reduce'") and a matmul added to another operand ("body must contain at least one
    # ttl.tile_store"): a reduce is stored on its own, a matmul on its own or scaled by a fill (what compiled).
    parents = {child: parent for parent in nodes for child in ast.iter_child_nodes(parent)}

    def stored(node):
        parent = parents.get(node)
        return isinstance(parent, ast.Call) and getattr(parent.func, "attr", None) == "store"

    for node in nodes:
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("reduce_max", "reduce_sum"):
            if not stored(node):
                bad(node, "RULE_STAGING", f"{ast.unparse(node)}: store a reduce to a buffer before using it")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            parent = parents.get(node)
            scaled = (
                isinstance(parent, ast.BinOp)
                and isinstance(parent.op, ast.Mult)
                and parent.left is node
                and getattr(parent.right, "func", None) is not None
                and getattr(parent.right.func, "attr", "") == "fill"
                and stored(parent)
            )
            if not (stored(node) or scaled):
                bad(
                    node,
                    "RULE_STAGING",
                    f"{ast.unparse(node)}: store a matmul to a buffer before adding to it",
                )
    # RULE_SCOPE: names resolve as the compiler's symbol tables do: `for` and `if` bodies are scopes of their own
    # (`with` is not), and free names are the captures (tensors, buffers, int/float constants).
    _check_scopes(thread.body, [set()], captured, bad)
    return found


def _check_scopes(body, scopes, captured, bad):
    def load(node):
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                if not any(sub.id in s for s in scopes) and sub.id not in captured:
                    bad(
                        sub, "RULE_SCOPE", f"{sub.id} is not defined in this scope nor captured by the kernel"
                    )

    for stmt in body:
        if isinstance(stmt, ast.For):
            load(stmt.iter)
            _check_scopes(
                stmt.body,
                [*scopes, {stmt.target.id} if isinstance(stmt.target, ast.Name) else set()],
                captured,
                bad,
            )
        elif isinstance(stmt, ast.If):
            load(stmt.test)
            _check_scopes(stmt.body, [*scopes, set()], captured, bad)
            _check_scopes(stmt.orelse, [*scopes, set()], captured, bad)
        elif isinstance(stmt, ast.With):
            for item in stmt.items:
                load(item.context_expr)
                if isinstance(item.optional_vars, ast.Name):
                    scopes[-1].add(item.optional_vars.id)
            _check_scopes(stmt.body, scopes, captured, bad)
        elif isinstance(stmt, ast.Assign):
            load(stmt.value)
            for target in stmt.targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        scopes[-1].add(sub.id)
        else:
            load(stmt)


def _factory_constants(source: str) -> set[str]:
    """Names the kernel factory binds before the operation: the candidates for captured constants (their values'
    types are checked on the closures below)."""
    tree = ast.parse(source)
    factory = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "make_joint_attention"
    )
    names = {a.arg for a in factory.args.args}
    for node in factory.body:
        if isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names - {"launch"}


def test_the_kernels_keep_to_the_compilers_front_end():
    source = KERNEL.read_text()
    op, threads = kernel_functions(source)
    assert sorted(t.name for t in threads) == ["attend", "read_qkv", "write_out"]
    constants = _factory_constants(source)
    problems = [f"{t.name} line {p}" for t in threads for p in violations(op, t, constants)]
    assert not problems, "\n".join(problems)


# What the rules catch: the constructs the simulator-only version of the kernel used, and the rule each breaks.
FORBIDDEN = {
    "host plan iteration": ("for item in plan.core_items(core):\n    pass", "RULE_FOR"),
    "attribute iteration": ("for piece in item.pieces:\n    pass", "RULE_FOR"),
    "dict of buffers": ("with q_dfbs[item].reserve() as blk:\n    pass", "RULE_WITH"),
    "indexing a dict": ("x = q_dfbs[2]", "RULE_SUBSCRIPT"),
    "python bool branch": ("if item.carry:\n    pass", "RULE_IF"),
    "python flag": ("started = 1\nif started:\n    pass", "RULE_IF"),
    "bool constant": ("started = True", "RULE_NODES"),
    "simulator-only where": ("x = ttl.block.where(a_blk, b_blk, c_blk)", "RULE_CALLS"),
    "simulator-only mask": ("x = ttl.block.mask(a_blk, b_blk)", "RULE_CALLS"),
    "squeeze": ("x = ttl.block.squeeze(a_blk, dims=[0])", "RULE_CALLS"),
    "unsqueeze": ("x = ttl.math.unsqueeze(a_blk, dims=[0])", "RULE_CALLS"),
    "simulator spelling of reduce": (
        "x = ttl.math.reduce_max(a_blk, dims=[-1], shape=(1, 1))",
        "RULE_SIGNATURES",
    ),
    "simulator spelling of fill": ("x = ttl.math.fill(1.0, shape=(1, 1))", "RULE_SIGNATURES"),
    "simulator spelling of broadcast": (
        "x = ttl.math.broadcast(a_blk, dims=[0], shape=(2, 1))",
        "RULE_SIGNATURES",
    ),
    "tensor choice": ("x = (q if item else joint_q)[0:1, 0:1]", "RULE_NODES"),
    "python slice object": ("rows = slice(0, 1)", "RULE_CALLS"),
    "dims=1 node": ("core = ttl.node(dims=1)", "RULE_ASSIGN"),
    "name from an if": ("if i < 3:\n    row = 1\nx = row", "RULE_SCOPE"),
    "while loop": ("while i < 3:\n    pass", "RULE_NODES"),
    "comprehension": ("x = [i for i in range(3)]", "RULE_NODES"),
    "fused reduce": (
        "with q_dfb.wait() as s:\n    with q_dfb.reserve() as m:\n        m.store(ttl.math.max(s, ttl.math.reduce_max(s, s, dims=[1])))",
        "RULE_STAGING",
    ),
    "matmul added to": (
        "with q_dfb.wait() as p:\n    with q_dfb.reserve() as acc:\n        acc.store(p * p + p @ p)",
        "RULE_STAGING",
    ),
}


@pytest.mark.parametrize("name", sorted(FORBIDDEN))
def test_the_rules_reject_what_would_not_compile(name):
    snippet, rule = FORBIDDEN[name]
    body = "\n".join("            " + line for line in snippet.splitlines())
    source = (
        "@ttl.operation(grid=(1, 1))\n"
        "def op(q, joint_q, a_blk, b_blk, c_blk):\n"
        "    q_dfb = ttl.make_dataflow_buffer_like(q, shape=(1, 1), block_count=2)\n"
        "    @ttl.compute()\n"
        "    def attend():\n"
        "        for i in range(4):\n"
        f"{body}\n"
    )
    op, threads = kernel_functions(source)
    # Captured names a host-plan kernel would use: the rule, not an unknown name, must be what trips.
    found = violations(op, threads[0], {"plan", "item", "core", "q_dfbs"})
    assert any(f": {rule}: " in problem for problem in found), (rule, found)


# --- the closures: what the compiler captures (ttl/ttl_api.py, _collect_captures) ------------------------------


class _Tensor:
    shape = (64, 64)
    dtype = "bfloat16"


class _Buffer:
    def __init__(self, tensor, shape, block_count):
        self.tensor, self.shape, self.block_count = tensor, shape, block_count


def _fake_compiler_ttl(threads: list, buffers: list):
    """A stand-in for the compiler's `ttl` that records what an operation builds: its threads and buffers."""
    fake = types.ModuleType("ttl")

    def operation(grid):
        assert len(grid) == 2 and all(isinstance(g, int) and g > 0 for g in grid)
        return lambda f: f

    def thread():
        return lambda f: threads.append(f) or f

    def make_dataflow_buffer_like(tensor, shape, block_count=2):
        buffers.append(_Buffer(tensor, shape, block_count))
        return buffers[-1]

    fake.operation, fake.compute, fake.datamovement = operation, thread, thread
    fake.make_dataflow_buffer_like = make_dataflow_buffer_like
    fake.math = types.SimpleNamespace()
    return fake


LAUNCH_CASES = [
    dict(b=2, nh=3, n=100, l=19, dh=64, valid_n=37, valid_l=5, q_chunk=3, k_chunk=5, grid=(2, 3)),
    dict(
        b=1,
        nh=1,
        n=3001,
        l=77,
        dh=64,
        valid_n=2990,
        valid_l=70,
        q_chunk=4,
        k_chunk=4,
        grid=(8, 8),
        carry=True,
    ),
    dict(b=1, nh=2, n=0, l=19, dh=128, valid_n=0, valid_l=19, q_chunk=2, k_chunk=16, grid=(1, 1)),
]


@pytest.mark.parametrize("case", LAUNCH_CASES, ids=["tails", "carry", "joint-only"])
def test_every_capture_is_an_int_float_tensor_or_buffer(monkeypatch, case):
    """The compiler raises "Unhandled capture" for any other closure value: a plan, a dict, a tuple, a list."""
    threads, buffers = [], []
    monkeypatch.setitem(sys.modules, "ttl", _fake_compiler_ttl(threads, buffers))
    package = importlib.import_module("jointattn.kernels.ttlang")
    for name in ("spelling", "joint_attention"):
        monkeypatch.delitem(sys.modules, f"jointattn.kernels.ttlang.{name}", raising=False)
        monkeypatch.delattr(package, name, raising=False)
    kernel = importlib.import_module("jointattn.kernels.ttlang.joint_attention")
    try:
        assert kernel.ttl is sys.modules["ttl"]  # the compiler's module passes through the spelling shim
        plan = plan_joint_attention(**case)
        assert plan.launches
        for launch in plan.launches:
            threads.clear()
            buffers.clear()
            kernel.make_joint_attention(launch, 0.125)(*[_Tensor() for _ in range(11)])
            assert sorted(t.__name__ for t in threads) == ["attend", "read_qkv", "write_out"]
            assert len(buffers) == DATAFLOW_BUFFERS <= MAX_DATAFLOW_BUFFERS
            for buffer in buffers:
                assert len(buffer.shape) == 2 and all(isinstance(s, int) and s > 0 for s in buffer.shape)
                assert 1 <= buffer.block_count <= 32
            for thread in threads:
                for name, cell in zip(thread.__code__.co_freevars, thread.__closure__ or (), strict=True):
                    value = cell.cell_contents
                    assert not isinstance(value, bool), f"{thread.__name__} captures bool {name}"
                    assert isinstance(value, (int, float, _Tensor, _Buffer)), (
                        f"{thread.__name__} captures {name} of type {type(value).__name__}"
                    )
    finally:
        for name in ("spelling", "joint_attention"):
            package.__dict__.pop(name, None)


# --- the compiler itself, where a CPython 3.12 with tt-lang 1.1.1 is at hand ------------------------------------

COMPILER_PYTHON = os.environ.get("JOINTATTN_TTLANG_COMPILER_PYTHON")


@pytest.mark.skipif(
    not COMPILER_PYTHON,
    reason="set JOINTATTN_TTLANG_COMPILER_PYTHON to a CPython 3.12 with tt-lang 1.1.1 installed "
    "(kernels/ttlang/compile_check.py says how) to compile the kernels",
)
def test_the_compiler_compiles_every_launch():
    check = Path(__file__).parents[1] / "kernels" / "ttlang" / "compile_check.py"
    done = subprocess.run([COMPILER_PYTHON, str(check)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert " 0 failed" in done.stdout and "FAILED" not in done.stdout


# --- the spelling shim on the simulator ----------------------------------------------------------------------------


class _Block:
    def __init__(self, shape, tag):
        self.shape, self.tag = shape, tag

    def __mul__(self, other):
        return _Block(self.shape, ("mul", self.tag, other.tag))


def _fake_simulator_ttl(calls: list):
    """An object shaped like tt-lang-sim's `ttl` namespace (its type lives in `ttl.sim`), recording calls in the
    simulator's 1.1.6 spelling."""

    def record(name, result_shape=None):
        def call(*args, **kwargs):
            calls.append((name, args, kwargs))
            return _Block(kwargs.get("shape", result_shape), name)

        return call

    namespace = type("_TTLNamespace", (), {"__module__": "ttl.sim"})()
    namespace.block = types.SimpleNamespace(
        fill=record("block.fill"),
        broadcast=record("block.broadcast"),
        transpose=record("block.transpose", (4, 2)),
    )
    namespace.math = types.SimpleNamespace(
        reduce_max=record("math.reduce_max"),
        reduce_sum=record("math.reduce_sum"),
        exp=record("math.exp", (2, 4)),
    )
    namespace.copy = record("copy")
    return namespace


def test_the_spelling_shim_maps_the_compilers_calls_onto_the_simulators(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "ttl", _fake_simulator_ttl(calls))
    monkeypatch.delitem(sys.modules, "jointattn.kernels.ttlang.spelling", raising=False)
    package = importlib.import_module("jointattn.kernels.ttlang")
    monkeypatch.delattr(package, "spelling", raising=False)
    ttl = importlib.import_module("jointattn.kernels.ttlang.spelling").ttl
    try:
        out, x, ones = _Block((2, 4), "out"), _Block((2, 4), "x"), _Block((1, 1), "ones")
        ttl.math.fill(out, 0.5)
        ttl.math.broadcast(_Block((2, 1), "m"), out, dims=[1])
        ttl.math.transpose(x)
        reduced = ttl.math.reduce_max(x, ones, dims=[1])
        ttl.math.reduce_sum(x, ones, dims=[0])
        ttl.math.exp(x)
        ttl.copy(x, out)
        assert [(name, kwargs) for name, _, kwargs in calls] == [
            ("block.fill", {"shape": (2, 4)}),
            ("block.broadcast", {"dims": [1], "shape": (2, 4)}),
            ("block.transpose", {}),
            ("math.reduce_max", {"dims": [1], "shape": (2, 1)}),
            ("block.broadcast", {"dims": [0, 1], "shape": (2, 1)}),  # the scaler, over the reduced block
            ("math.reduce_sum", {"dims": [0], "shape": (1, 4)}),
            ("block.broadcast", {"dims": [0, 1], "shape": (1, 4)}),
            ("math.exp", {}),
            ("copy", {}),
        ]
        assert calls[0][1] == (0.5,)  # fill's value moves to the front
        assert reduced.tag == ("mul", "math.reduce_max", "block.broadcast")  # scaled by the scaler
    finally:
        package.__dict__.pop("spelling", None)
