#!/usr/bin/env bash
# End-to-end model benchmark on the GPU machine (issue 7), one or more models per call:
#   bash benchmarks/run_models.sh sd3 flux        # needs .whl/ with the diffusers wheel (see README)
set -o pipefail
source benchmarks/device_env.sh
for model in "$@"; do
  t0=$SECONDS
  # `python3 benchmarks/...` from the repo root would import the checkout's jointattn/ folder (no mapping).
  (cd /tmp && python3 "$OLDPWD/benchmarks/models.py" --model "$model" ${MODEL_ARGS:-}) 2>&1 | tee "$OUT/models-$model.log" | grep -v Warning | tail -12
  cp benchmarks/results/models-"$model".json "$OUT/" 2>/dev/null
  echo "$model: $((SECONDS - t0)) s"
done
nvidia-smi --query-gpu=clocks.sm,power.draw,clocks_throttle_reasons.active --format=csv | tee -a "$OUT/versions.log"
