"""Which implementation runs a call of the block-sparse op: "reference" (exact, any device), "triton" (our
block-sparse kernels, CUDA), or "auto": the kernels where they can run the call, else the reference."""

from __future__ import annotations

SPARSE_RUNTIMES = ("auto", "reference", "triton")


def _triton():
    from .sparse_triton_runtime import SparseTritonRuntime

    return SparseTritonRuntime()


def select_sparse_runtime(name: str, call, layout, *, backward: bool, grad_lse=None):
    from .sparse_reference import SparseReferenceRuntime

    if name == "reference" or (name == "auto" and not call.q.is_cuda):
        return SparseReferenceRuntime()  # "auto" off CUDA: the reference (the interpreter is for tests)
    if name not in SPARSE_RUNTIMES:
        raise ValueError(
            f"joint_attention: with a block_mask, runtime must be one of {SPARSE_RUNTIMES}; got {name!r}"
        )
    try:
        kernels = _triton()
    except ImportError as e:
        reason = f"the Triton runtime cannot be imported here ({type(e).__name__}: {e})"
    else:
        reason = kernels.unsupported(call, layout, backward=backward, grad_lse=grad_lse)
        if reason is None:
            return kernels
    if name == "triton":
        raise ValueError(f"joint_attention: runtime='triton' cannot run this block-sparse call: {reason}")
    return SparseReferenceRuntime()
