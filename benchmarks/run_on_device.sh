#!/usr/bin/env bash
# Runs the Triton kernel's GPU tests and benchmark on the lent GPU machine (see benchmarks/NOTES-triton.md).
#   bash benchmarks/run_on_device.sh tune    # versions, GPU tests (bf16), forward config sweep
#   bash benchmarks/run_on_device.sh bench   # versions, GPU tests, focused sweep, full benchmark (JSON/PNG/md)
# Writes logs and results under $OUT (the device tool brings them back). The machine has no network and no
# install of this package: jointattn is assembled under /tmp/site from the checkout (package-dir mapping).
set -o pipefail
mode=${1:-bench}   # tune | bench | final (benchmark only: tests and sweep already done)
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/jointattn-out}
mkdir -p "$OUT" /tmp/site/jointattn
cp jointattn/*.py /tmp/site/jointattn/
for d in compiler passes runtime kernels distributed; do ln -sfn "$PWD/$d" "/tmp/site/jointattn/$d"; done
export PYTHONPATH=/tmp/site
# `pytest` (not `python3 -m pytest`): the checkout's own jointattn/ folder must not shadow /tmp/site.
(cd /tmp && python3 -c "import jointattn.runtime.triton_runtime, jointattn.kernels.configs") || exit 1
{
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/versions.log"
t0=$SECONDS
if [ "$mode" = final ]; then
  nvidia-smi -q -d POWER,CLOCK,PERFORMANCE > "$OUT/gpu_state_before.log" 2>&1
  python3 benchmarks/joint_attention.py --out "$OUT" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" | tail -42
  nvidia-smi -q -d POWER,CLOCK,PERFORMANCE > "$OUT/gpu_state_after.log" 2>&1
  echo "total: $((SECONDS - t0)) s"
  exit 0
fi
pytest tests/test_triton_kernel.py -q -n 8 -p no:cacheprovider 2>&1 | tee "$OUT/tests.log" | tail -25
echo "gpu tests: $((SECONDS - t0)) s"
if [ "$mode" = tune ]; then
  python3 benchmarks/joint_attention.py --sweep --ws-top 0 --shapes ${SHAPES:-flux_1024 sd35_1024} --out "$OUT" 2>&1 \
    | tee "$OUT/sweep.log" | grep -E "BEST|KERNEL|Error|error" | head -60
  # Warp specialization last and in its own process: a compiler crash there must not lose the sweep.
  python3 benchmarks/joint_attention.py --sweep --ws-top 3 --shapes flux_1024 --out "$OUT/ws" 2>&1 \
    | grep '"warp_specialize": true' | tee "$OUT/ws.log"
else
  python3 benchmarks/joint_attention.py --sweep --focused --ws-top 0 --out "$OUT" 2>&1 | tee "$OUT/sweep.log" \
    | grep -E "BEST|rror" | head -20
  python3 benchmarks/joint_attention.py --out "$OUT" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" | tail -42
fi
echo "total: $((SECONDS - t0)) s"
