# Sourced by the device scripts: makes `import jointattn` work on the GPU machine, which has torch and triton
# but no network and no install of this package. The repo-top folders are assembled under /tmp/site as the
# package-dir mapping of pyproject.toml does; wheels carried in .whl/ (diffusers, ...) are installed there.
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/jointattn-out}
mkdir -p "$OUT" /tmp/site/jointattn
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
cp -r jointattn/. /tmp/site/jointattn/  # the public API, the demo, the zoo and jointattn.testing
for d in compiler passes runtime kernels distributed sparse; do ln -sfn "$PWD/$d" "/tmp/site/jointattn/$d"; done
# The dist-info that `pip install` would write, with the torch_dynamo_backends entry point of pyproject.toml,
# so backend="jointattn" resolves through the same entry-point lookup as on an installed machine.
mkdir -p /tmp/site/jointattn-0.1.0.dist-info
printf 'Metadata-Version: 2.1\nName: jointattn\nVersion: 0.1.0\n' > /tmp/site/jointattn-0.1.0.dist-info/METADATA
python3 - <<'PY' > /tmp/site/jointattn-0.1.0.dist-info/entry_points.txt
import tomllib
for group, entries in tomllib.load(open("pyproject.toml", "rb"))["project"]["entry-points"].items():
    print(f"[{group}]")
    for name, target in entries.items():
        print(f"{name} = {target}")
PY
export PYTHONPATH=/tmp/site
(cd /tmp && python3 -c "
import jointattn.runtime.triton_runtime, jointattn.kernels.configs
from torch._dynamo.backends.registry import lookup_backend
lookup_backend('jointattn')") || exit 1
{
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,clocks_throttle_reasons.active --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/versions.log"
