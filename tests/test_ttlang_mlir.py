"""The MLIR path to the TT-Lang kernels, executed: import -> fuse-joint-attention -> lower-joint-attention{target=ttlang}
-> emit -> run on tt-lang-sim (`JOINTATTN_TTLANG=sim`), against the module in float64 eager, with padding on both
token sets and sizes that are not multiples of 32; and the configuration printed into the IR is the runtime's.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import float64_eager
from jointattn.compiler.mlir.emit import compile_module
from jointattn.compiler.mlir.importer import import_module
from jointattn.compiler.mlir.opt_main import run_pipeline
from jointattn.passes.mlir.dialects import TtlangJointAttentionOp, parse_module
from jointattn.runtime.ttlang import backend, config

pytestmark = pytest.mark.skipif(
    backend.simulator_missing() is not None,
    reason=f"tt-lang-sim unavailable: {backend.simulator_missing()}",
)
LOWER = "fuse-joint-attention{emit=operator},lower-joint-attention{target=ttlang}"


@pytest.fixture(autouse=True)
def _simulated(monkeypatch):
    monkeypatch.setenv(backend.ENV_VAR, backend.SIM)


class BothPadded(torch.nn.Module):
    """Image and text both padded, per batch: `arange(S) < lengths` for each, concatenated, additive."""

    def forward(self, q, k, v, eq, ek, ev, image_lengths, text_lengths):
        valid = torch.cat(
            [
                torch.arange(q.shape[2])[None, :] < image_lengths[:, None],
                torch.arange(eq.shape[2])[None, :] < text_lengths[:, None],
            ],
            dim=1,
        )
        bias = torch.zeros(valid.shape, dtype=q.dtype).masked_fill(~valid, float("-inf"))[:, None, None, :]
        o = F.scaled_dot_product_attention(
            torch.cat([q, eq], 2), torch.cat([k, ek], 2), torch.cat([v, ev], 2), attn_mask=bias
        )
        return o[:, :, : q.shape[2]], o[:, :, q.shape[2] :]


def _inputs(b, h, n, length, dh, seed, lengths):
    g = torch.Generator().manual_seed(seed)
    return (*(torch.randn(b, h, s, dh, generator=g) for s in (n, n, n, length, length, length)), *lengths)


def _only_ttlang_op(text):
    ops = [op for op in parse_module(text).walk() if isinstance(op, TtlangJointAttentionOp)]
    assert len(ops) == 1, text
    return ops[0]


@pytest.mark.parametrize(
    ("b", "h", "n", "length", "dh", "image_lengths", "text_lengths", "chunks"),
    [
        (2, 2, 37, 5, 16, [37, 20], [5, 2], (None, None)),  # chunk sizes the runtime chooses
        (2, 1, 70, 19, 40, [70, 33], [0, 19], (3, 2)),  # overrides at lowering time, a text with no valid key
    ],
    ids=["chosen", "overridden"],
)
def test_padded_joint_attention_lowered_to_ttlang_and_run(
    b, h, n, length, dh, image_lengths, text_lengths, chunks
):
    module = BothPadded()
    lengths = (torch.tensor(image_lengths), torch.tensor(text_lengths))
    with config.overrides(q_chunk=chunks[0], k_chunk=chunks[1], grid=(2, 3)):
        lowered = run_pipeline(import_module(module, *_inputs(b, h, n, length, dh, 0, lengths)), LOWER)
        expected_chunks = config.chunk_sizes(n, length, dh, b=b, nh=h, dtype="float32")
    assert "torch.aten.scaled_dot_product_attention" not in lowered
    chosen = _only_ttlang_op(lowered).config.values()
    assert chosen == {
        "q_chunk": expected_chunks[0],
        "k_chunk": expected_chunks[1],
        "grid_rows": 2,
        "grid_cols": 3,
        "ring_size": 1,
    }
    assert chunks == (None, None) or (chosen["q_chunk"], chosen["k_chunk"]) == chunks
    fresh = _inputs(b, h, n, length, dh, 1, lengths)
    got = compile_module(lowered)(*fresh)
    want = float64_eager(module, fresh)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.double(), w, rtol=2e-5, atol=2e-6)


def test_emitted_code_runs_with_the_ir_configuration(monkeypatch):
    """The emitted Python calls the TT-Lang lowering with the IR's chunk sizes, grid and ring size."""
    from jointattn.runtime.ttlang import lowering

    module = BothPadded()
    lengths = (torch.tensor([30, 9]), torch.tensor([3, 5]))
    with config.overrides(q_chunk=2, k_chunk=3, grid=(1, 2), ring_size=2):
        lowered = run_pipeline(import_module(module, *_inputs(2, 1, 30, 5, 16, 0, lengths)), LOWER)
    seen = []
    real = lowering.joint_attention

    def spy(*args, **kwargs):
        settings = config.current()
        seen.append((kwargs["q_chunk"], kwargs["k_chunk"], settings.grid, settings.ring_size))
        return real(*args, **kwargs)

    monkeypatch.setattr(lowering, "joint_attention", spy)
    fresh = _inputs(2, 1, 30, 5, 16, 1, lengths)
    got = compile_module(lowered)(*fresh)
    assert seen == [(2, 3, (1, 2), 2)]
    assert config.current().ring_size == 1  # restored after the call
    for g, w in zip(got, float64_eager(module, fresh), strict=True):
        torch.testing.assert_close(g.double(), w, rtol=2e-5, atol=2e-6)
