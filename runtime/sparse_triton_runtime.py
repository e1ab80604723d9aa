"""Placeholder until the block-sparse Triton kernels land: supports nothing, and says so."""


class SparseTritonRuntime:
    name = "triton"

    def unsupported(self, call, layout, *, backward=False, grad_lse=None) -> str | None:
        return "the block-sparse Triton kernels are not built yet"
