"""The MLIR path, in the order a model travels it:

1. `importer.py`: model -> torch-dialect MLIR (torch.export, then torch-mlir's FX importer; SDPA kept whole).
2. `passes/mlir/fuse.py` (`fuse-joint-attention`): SDPA over concats -> `jointattn.joint_attention`.
3. `passes/mlir/lower_joint_attention.py` (`lower-joint-attention{target=...}`): the op -> the target's call,
   with the configuration the runtime would choose.
4. `emit.py`: any stage -> a Python function that runs it on the runtime (`-t python`, `compile_module`): the
   lowered IR's runtime, which is how lowered IR is checked against eager.

`opt_main.py` is `jointattn-opt`, xDSL's opt driver with these passes and targets; `opt_errors.py` makes every
failure one line. Nothing is imported here, so each step loads only what it needs.
"""
