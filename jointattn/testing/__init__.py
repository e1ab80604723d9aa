"""What the tests use and the product does not: stand-ins for hardware, recorded APIs, and judges.

- `ttnn_emulation`: a CPU emulation of exactly the ttnn subset the ttnn lowering uses. `load_ttnn()`
  (`runtime/ttnn/module.py`) returns it instead of `ttnn` only when `JOINTATTN_TTNN=emulate` asks for it.
- `ttnn_signatures`: the ttnn signatures the lowering is held to, recorded from the ttnn 0.81.1 wheel.
- `ttnn_recording`: `recording()`, which records every ttnn call the lowering makes inside a block.
- `comparison`: how tt-metal judges its kernels against torch (`pcc`, `rmse`, `fa_rand`, the thresholds).

Nothing in the product imports this package, apart from that one switch to the emulation.
"""
