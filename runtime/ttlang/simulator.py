"""The client side of the tt-lang-sim worker process (`sim_worker.py`).

Entry point: `simulate(request) -> outputs`: sends one request to the worker, starting it on first use, and
returns its outputs or raises `RuntimeError` with the worker's traceback. The worker stays up for later calls (the
simulator's import costs seconds) and is stopped at exit. It runs with OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import atexit
import os
import pickle
import subprocess
import sys
import threading

import torch

from .sim_worker import decode, encode, read_frame, write_frame

_lock = threading.Lock()
_worker: subprocess.Popen | None = None


def _start() -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "jointattn.runtime.ttlang.sim_worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,  # the simulator's warnings and the kernels' prints show up as the caller's stderr
        env=env,
    )


def _stop() -> None:
    global _worker
    if _worker is not None:
        _worker.stdin.close()
        try:
            _worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _worker.kill()
        _worker = None


atexit.register(_stop)


def simulate(request: dict):
    global _worker
    payload = pickle.dumps(encode(request, torch))
    with _lock:
        if _worker is None or _worker.poll() is not None:
            _worker = _start()
        try:
            write_frame(_worker.stdin, payload)
            frame = read_frame(_worker.stdout)
        except BrokenPipeError:
            frame = None
        if frame is None:
            code = _worker.wait()
            _worker = None
            raise RuntimeError(f"the tt-lang-sim worker exited (status {code}); its stderr is above")
    reply = pickle.loads(frame)
    if "error" in reply:
        raise RuntimeError(f"the TT-Lang kernel failed in tt-lang-sim:\n{reply['error']}")
    return decode(reply["outputs"], torch)
