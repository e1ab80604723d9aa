"""The fusion, twice: an FX pass (`fx/`, inside the torch.compile backend and `jointattn.export`) and an MLIR
pass over torch-mlir's torch dialect (`mlir/`, driven by `jointattn-opt`).

What both passes know lives here, once, keyed by ATen names, so the two cannot drift apart:
- `rules.py`: what counts as joint attention and why a candidate is refused (the sentences both print);
- `positionwise.py`: which ops are position-wise along the sequence, and of what kind (ATen's `pointwise`
  tag plus a table of casts, views and reductions);
- `mask_proofs.py`: what proves a key-padding mask to be valid lengths (exact arange positions, factories
  that admit every key, casts that keep a mask's meaning, -inf as the only absent bias);
- `decisions.py`: `Decision`, `FusionReport` and the summary sentence of a fusion.

The two passes mirror each other module by module; each reads its own IR:

| what | FX | MLIR |
| --- | --- | --- |
| entry point and rewrite | `fx/fuse.py` | `mlir/fuse.py` (matching in `mlir/joint_match.py`) |
| a tensor as its token sets (resolve, replay per set) | `fx/parts.py` | `mlir/parts.py` |
| how one position-wise op maps the sequence axis | `fx/axes.py` | `mlir/axes.py` |
| ranges of the sequence taken back out (slice, split) | `fx/ranges.py` | `mlir/ranges.py` |
| key-padding masks: proven lengths or a run-time check | `fx/masks.py` | `mlir/masks.py` (check: `padding_check.py`) |
| reading and building the IR | `fx/nodes.py` | `mlir/ir_values.py`, `mlir/torch_builder.py` |

Only in FX: `unpad.py` (Mochi's per-sample loop), `mutations.py` (in-place writes; torch-mlir imports
value-semantic IR), `prologue.py` (the post-grad QK-norm + RoPE pass). Only in MLIR: the lowering
(`lower_joint_attention.py`, `lower_masked.py`, `target_calls.py`) and the dialects (`dialects/`).
"""
