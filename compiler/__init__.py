"""The torch.compile backend (`backend="jointattn"`), `explain`, and the MLIR driver."""

from .backend import BackendOptions, eager_backend, jointattn_backend

__all__ = ["jointattn_backend", "eager_backend", "BackendOptions"]
