"""TT-Lang kernels of joint attention (Tenstorrent), for the TT-Lang compiler or the tt-lang-sim simulator.

`schedule.py` (the work of a launch, pure Python) imports nothing device-side; `joint_attention.py` (the
operation), `launch.py` (a plan's launches on device tensors) and `ring.py` (ring attention over devices) import `ttl` /
`ttnn`, so only code that runs kernels imports them (see `jointattn.runtime.ttlang`). `spelling.py` is the `ttl`
the kernel imports (the compiler's, or tt-lang-sim's in the compiler's spelling); `compile_check.py` is a standalone
script that compiles the kernel with the TT-Lang compiler (COMPILER.md).
"""
