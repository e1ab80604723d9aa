"""The host program around the kernels: what one request to the TT-Lang runtime runs, on whichever `ttnn` is
given (the real one with an opened device, or tt-lang-sim's).

Entry point: `execute(ttnn, device, request) -> outputs`:
- {"kind": "joint", "plan", "scale", "dtype", "inputs": seven 2-D host tensors} -> the four outputs of the plan's
  launches (`launch.py`) as host tensors;
- {"kind": "ring", "shards", "joint", ...`ring.ring_joint_attention` keywords} -> per device, its four outputs.
"""

from __future__ import annotations

from . import launch, ring


def execute(ttnn, device, request: dict):
    if request["kind"] == "joint":
        plan, dtype = request["plan"], request["dtype"]
        inputs = [launch.upload(ttnn, device, t, dtype) for t in request["inputs"]]
        outputs = launch.output_tensors(ttnn, device, plan, dtype)
        launch.run(plan, request["scale"], inputs, outputs)
        return [ttnn.to_torch(t) for t in outputs]
    if request["kind"] == "ring":
        keywords = {k: v for k, v in request.items() if k not in ("kind", "shards", "joint")}
        return ring.ring_joint_attention(ttnn, request["shards"], request["joint"], **keywords)
    raise ValueError(f"ttlang program: unknown request kind {request['kind']!r}")
