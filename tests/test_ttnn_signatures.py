"""Signature conformance of the ttnn lowering: every ttnn call it makes, recorded through
`jointattn.testing.ttnn_recording.recording()`, binds (`inspect.Signature.bind`) to the signature recorded from
the ttnn 0.81.1 wheel (or, where that record has none, from tt-metal's sources; see
`jointattn/testing/ttnn_signatures.py`), and to the live `ttnn` module when it imports.

The calls come from the lowering running on the emulation (single device, per-batch padding, bfloat8_b, rings of
2 and 4, and through `joint_attention(runtime="ttnn")`). The emulation's own signatures are checked against the
same record, so the emulation cannot accept a call the real ttnn would refuse.
"""

import inspect
import sys

import pytest
import torch
from jointattn.runtime.ttnn import config, lowering
from jointattn.runtime.ttnn.module import ENV_VAR

import jointattn
from jointattn.testing import ttnn_emulation as emulation
from jointattn.testing import ttnn_signatures as signatures
from jointattn.testing.ttnn_emulation.sdpa import _RING_UNMODELLED
from jointattn.testing.ttnn_recording import recording

NOT_IMPORTABLE = f"ttnn not importable on CPython {sys.version_info.major}.{sys.version_info.minor}"


def _try_import_ttnn():
    try:
        import ttnn

        return ttnn
    except ImportError:
        return None


@pytest.fixture(scope="module")
def recorded_calls():
    """Every ttnn call of a representative set of lowering runs on the emulation."""
    mp = pytest.MonkeyPatch()
    mp.setenv(ENV_VAR, "emulate")
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 45, 32) for _ in range(3))
    jq, jk, jv = (torch.randn(2, 2, 13, 32) for _ in range(3))
    lengths = dict(logical_n=torch.tensor([45, 20]), logical_l=torch.tensor([13, 3]))
    try:
        with recording() as calls:
            lowering.joint_sdpa(q, k, v, jq, jk, jv, scale=0.2, **lengths)
            with config.overrides(dtype="bfloat8_b"):
                lowering.joint_sdpa(q, k, v, jq, jk, jv, scale=0.2, q_chunk_size=64, k_chunk_size=32)
            for ring in (2, 4):
                lowering.ring_joint_sdpa(q, k, v, jq, jk, jv, scale=0.2, ring_size=ring, **lengths)
            jointattn.joint_attention(q, k, v, jq, jk, jv, runtime="ttnn", logical_l=7)
            lowering.close_devices()
    finally:
        mp.undo()
    return calls


def test_recorded_text_parses_to_the_documented_structure():
    joint = signatures.signature_of("transformer.joint_scaled_dot_product_attention").parameters
    assert list(joint)[:6] == [
        "input_tensor_q",
        "input_tensor_k",
        "input_tensor_v",
        "joint_tensor_q",
        "joint_tensor_k",
        "joint_tensor_v",
    ]
    assert (
        joint["joint_strategy"].kind is inspect.Parameter.KEYWORD_ONLY
        and joint["joint_strategy"].default is inspect.Parameter.empty
    )
    assert joint["program_config"].default is inspect.Parameter.empty and joint["scale"].default is None
    ring = signatures.signature_of("transformer.ring_joint_scaled_dot_product_attention").parameters
    assert ring["logical_l"].default == 0 and ring["logical_n"].default is inspect.Parameter.empty
    assert (
        ring["joint_tensor_q"].default is None
        and ring["ccl_core_grid_offset"].kind is inspect.Parameter.KEYWORD_ONLY
    )
    fidelity = signatures.signature_of("WormholeComputeKernelConfig").parameters["math_fidelity"].default
    assert isinstance(fidelity, signatures.SourceDefault) and fidelity.text == "MathFidelity.Invalid"
    assert signatures.is_catch_all(inspect.signature(lambda *function_args, **function_kwargs: None))
    doc = "Some op.\n\n    __call__(self, a: int, *, b: str = 'x') -> None\n"
    assert list(signatures.docstring_signature(type("Op", (), {"__doc__": doc})).parameters) == ["a", "b"]


def test_every_lowering_call_binds_to_its_recorded_signature(recorded_calls):
    used = {c.name for c in recorded_calls}
    unknown = used - set(signatures.SIGNATURES)
    assert not unknown, f"ttnn calls without a recorded signature: {unknown}"
    for call in recorded_calls:
        signatures.bind_call(call.name, call.args, call.kwargs)  # TypeError if the call does not fit
    # The lowering exercises every recorded entry but the plain SDPA, which it does not use.
    assert set(signatures.SIGNATURES) - used == {"transformer.scaled_dot_product_attention"}
    ops = [c for c in recorded_calls if c.name.startswith("transformer.")]
    assert {c.name for c in ops} == {
        "transformer.joint_scaled_dot_product_attention",
        "transformer.ring_joint_scaled_dot_product_attention",
    }


def test_binding_rejects_what_ttnn_would_reject(recorded_calls):
    """The check can fail: misplaced or unknown arguments do not bind."""
    joint = next(c for c in recorded_calls if c.name == "transformer.joint_scaled_dot_product_attention")
    with pytest.raises(TypeError):  # joint_strategy is keyword-only
        signatures.bind_call(
            joint.name,
            (*joint.args, "rear"),
            {k: v for k, v in joint.kwargs.items() if k != "joint_strategy"},
        )
    with pytest.raises(TypeError):  # no such keyword in 0.81.1
        signatures.bind_call(joint.name, joint.args, {**joint.kwargs, "logical_n": 3})
    ring = next(c for c in recorded_calls if c.name == "transformer.ring_joint_scaled_dot_product_attention")
    with pytest.raises(TypeError):  # required keyword missing
        signatures.bind_call(
            ring.name, ring.args, {k: v for k, v in ring.kwargs.items() if k != "ccl_core_grid_offset"}
        )


def _resolve(module, name: str):
    target = module
    for part in name.split("."):
        target = getattr(target, part)
    return target


def _structure(signature: inspect.Signature):
    return [(p.name, p.kind, p.default is inspect.Parameter.empty) for p in signature.parameters.values()]


@pytest.mark.parametrize(
    "name", sorted(set(signatures.SIGNATURES) - {"transformer.scaled_dot_product_attention"})
)
def test_emulation_signatures_match_the_record(name):
    recorded = signatures.signature_of(name)
    emulated = inspect.signature(_resolve(emulation, name))
    if name == "transformer.ring_joint_scaled_dot_product_attention":
        # The emulation names the parameters it models and takes the variants it refuses through **kwargs.
        named = [p for p in emulated.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        assert _structure(inspect.Signature(named)) == _structure(recorded)[: len(named)]
        assert [p for p, _, _ in _structure(recorded)[len(named) :]] == list(_RING_UNMODELLED)
        return
    assert _structure(emulated) == _structure(recorded)


@pytest.mark.skipif(_try_import_ttnn() is None, reason=NOT_IMPORTABLE)
def test_recorded_calls_bind_to_the_live_ttnn(recorded_calls):
    ttnn = _try_import_ttnn()
    for call in recorded_calls:
        if call.name == "MeshDevice.compute_with_storage_grid_size":
            live = ttnn.MeshDevice.compute_with_storage_grid_size
        else:
            live = _resolve(ttnn, call.name)
        try:
            signature = inspect.signature(live)
        except (TypeError, ValueError):
            signature = None
        if signature is None or signatures.is_catch_all(signature):
            signature = signatures.docstring_signature(live)
        if signature is not None:
            signature.bind(*call.args, **call.kwargs)
        else:  # a Python wrapper with a catch-all signature: its docstring must document every keyword passed
            doc = live.__doc__ or ""
            missing = [k for k in call.kwargs if f"{k} (" not in doc]
            assert not missing, f"{call.name}: keywords {missing} are not in the live docstring"
