"""lit configuration of jointattn's MLIR tests: `lit -v tests/lit` from the repository root.

Substitutions: `%jointattn-opt` (the installed console script), `%python` (this interpreter, for the import
tests), `%torch-mlir-opt` (torch-mlir's own opt, for round trips), `%filecheck` (PyPI `filecheck`,
which has no numeric variables). Tools are taken from this interpreter's bin directory first, so the suite
runs the same installation pytest does.
"""

import os
import shutil
import sys
import tempfile

import lit.formats

config.name = "jointattn-mlir"  # noqa: F821 (`config` and `lit_config` are provided by lit)
config.test_source_root = os.path.dirname(__file__)  # noqa: F821
# Scripts and temporaries go to the system temp dir, not into the source tree.
config.test_exec_root = os.path.join(tempfile.gettempdir(), "jointattn-lit")  # noqa: F821
config.suffixes = [".mlir", ".py"]  # noqa: F821
config.excludes = ["lit.cfg.py", "Inputs"]  # noqa: F821
# lit's own shell: portable, and it provides `not` for the tests that expect a failure.
config.test_format = lit.formats.ShTest(execute_external=False)  # noqa: F821

_BIN = os.path.dirname(sys.executable)


def _tool(name: str) -> str:
    local = os.path.join(_BIN, name)
    found = local if os.access(local, os.X_OK) else shutil.which(name)
    if found is None:
        lit_config.fatal(f"{name} not found next to {sys.executable} or on PATH: pip install -e '.[test]'")  # noqa: F821
    return found


config.substitutions.append(("%jointattn-opt", _tool("jointattn-opt")))  # noqa: F821
config.substitutions.append(("%torch-mlir-opt", _tool("torch-mlir-opt")))  # noqa: F821
config.substitutions.append(("%filecheck", _tool("filecheck")))  # noqa: F821
config.substitutions.append(("%python", sys.executable))  # noqa: F821

for name in ("HOME", "PYTHONPATH", "XDG_CACHE_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):
    if name in os.environ:
        config.environment[name] = os.environ[name]  # noqa: F821

supported, why = lit_config.maxIndividualTestTimeIsSupported  # noqa: F821
if supported:
    lit_config.maxIndividualTestTime = 120  # noqa: F821
