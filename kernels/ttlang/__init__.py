"""TT-Lang kernels of joint attention (Tenstorrent), for the TT-Lang compiler or the tt-lang-sim simulator.

`schedule.py` (the work of a launch, pure Python) imports nothing device-side; `joint_attention.py` (the
operation), `launch.py` (one launch from host tensors) and `ring.py` (ring attention over devices) import `ttl` /
`ttnn`, so only code that runs kernels imports them (see `jointattn.runtime.ttlang`).
"""
