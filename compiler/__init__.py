"""The torch.compile backend (`backend="jointattn"`, `backend.py`), `explain`, `export`, and the MLIR driver
(`mlir_import.py`, `opt_main.py`, `mlir_emit.py`). Import the module you need: this package imports nothing
itself, so `jointattn-opt` does not pay for Dynamo and the backend does not pay for xDSL."""
