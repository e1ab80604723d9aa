#!/usr/bin/env bash
# Runs the Triton kernel's GPU tests and benchmark on the lent GPU machine (see benchmarks/NOTES-triton.md).
#   bash benchmarks/run_on_device.sh tune    # versions, GPU tests (bf16), forward config sweep
#   bash benchmarks/run_on_device.sh bench   # versions, GPU tests, focused sweep, full benchmark (JSON/PNG/md)
# Writes logs and results under $OUT (the device tool brings them back); device_env.sh sets up the package.
set -o pipefail
mode=${1:-bench}   # tune | bench | final (benchmark only: tests and sweep already done)
source benchmarks/device_env.sh
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
