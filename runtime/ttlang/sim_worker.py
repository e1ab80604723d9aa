"""The tt-lang-sim process: runs TT-Lang launches for `simulator.py`, one request at a time.

Run as `python -m jointattn.runtime.ttlang.sim_worker` (the client starts it with OMP_NUM_THREADS=1: with two
torch threads the simulator runs about 8x slower). It must be its own process: `import ttl.sim` rebinds
`torch.bfloat16` (and float16) to float32 for the whole process, which the rest of jointattn must not see.

Protocol, on stdin/stdout: frames of an 8-byte little-endian length and a pickle, tensors sent as NumPy arrays
(`torch.save` cannot be used: with float16 and bfloat16 rebound, the worker would label float32 storages wrongly). A request is
{"kind": "joint", "plan", "scale", "dtype", "inputs"} or {"kind": "ring", "shards", "joint", **ring kwargs};
the reply is {"outputs": ...} or {"error": traceback}. Anything printed goes to stderr.
"""

from __future__ import annotations

import pickle
import struct
import sys
import traceback


def read_frame(stream):
    header = stream.read(8)
    if len(header) < 8:
        return None
    (size,) = struct.unpack("<Q", header)
    return stream.read(size)


def write_frame(stream, payload: bytes) -> None:
    stream.write(struct.pack("<Q", len(payload)))
    stream.write(payload)
    stream.flush()


def encode(value, torch):
    """`value` with every tensor replaced by a NumPy array (recursively through lists, tuples and dicts)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, (list, tuple)):
        return type(value)(encode(v, torch) for v in value)
    if isinstance(value, dict):
        return {k: encode(v, torch) for k, v in value.items()}
    return value


def decode(value, torch):
    import numpy

    if isinstance(value, numpy.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, (list, tuple)):
        return type(value)(decode(v, torch) for v in value)
    if isinstance(value, dict):
        return {k: decode(v, torch) for k, v in value.items()}
    return value


def _serve(handle, torch) -> None:
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # the kernels' and the simulator's prints must not corrupt the frames
    while (frame := read_frame(requests)) is not None:
        try:
            reply = {"outputs": encode(handle(decode(pickle.loads(frame), torch)), torch)}
        except Exception:  # noqa: BLE001 - every failure goes back to the caller, with its traceback
            reply = {"error": traceback.format_exc()}
        write_frame(replies, pickle.dumps(reply))


def main() -> None:
    import torch
    from ttl.sim import ttl, ttnn

    # What the `tt-lang-sim` launcher does: kernels written for the compiler import the simulator's modules.
    sys.modules["ttl"] = ttl
    sys.modules["ttnn"] = ttnn
    from jointattn.kernels.ttlang.program import execute

    def handle(request):
        if request["kind"] == "ring":  # the simulator offers 4 devices unless told otherwise
            ttnn.set_num_devices(max(len(request["shards"]), ttnn.GetNumAvailableDevices()))
        return execute(ttnn, None, request)

    _serve(handle, torch)


if __name__ == "__main__":
    main()
