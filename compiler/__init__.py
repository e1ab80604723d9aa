"""The two front ends around the passes: the torch.compile backend (`backend="jointattn"`, `backend.py`),
`explain`, `export`; and the MLIR path's driver (`mlir/`: import, `jointattn-opt`, and the emitter that runs
lowered IR). Import the module you need: this package imports nothing itself, so `jointattn-opt` does not pay
for Dynamo and the backend does not pay for xDSL."""
