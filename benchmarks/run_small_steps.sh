#!/usr/bin/env bash
# One device call for the small-step and estimator work (fifteenth session): the GPU tests of the eager shortcut,
# the cuDNN cache, the joins, padded sdpa calls and the estimator's kernels; the estimator's cost at Mochi's and
# SD3.5's sizes (both implementations); the training step's host time at small shapes; never_slower at small
# points (the flash step's) and at SD3.5's (cuDNN's step). Logs and results under $OUT.
set -o pipefail
source benchmarks/device_env.sh
t0=$SECONDS
pytest -q -n 8 -p no:cacheprovider tests/test_eager_sdpa.py tests/test_cudnn_graph_cache.py tests/test_join.py \
  tests/test_sdpa_padded.py tests/test_sparse_estimate_triton.py 2>&1 | tee "$OUT/tests.log" | tail -4
status=$?
echo "tests: $((SECONDS - t0)) s"
for _ in $(seq 30); do [ -z "$(nvidia-smi --query-compute-apps=pid --format=csv,noheader)" ] && break; sleep 1; done
python3 benchmarks/sparse.py --estimator-only --no-flex --out "$OUT" > "$OUT/estimator.log" 2>&1
grep -E '"variant": "estimator' "$OUT/estimator.log" | cut -c1-260
echo "estimator: $((SECONDS - t0)) s"
python3 benchmarks/host_overhead.py --step --out "$OUT" > "$OUT/host_step.log" 2>&1
grep -E "host .* us|copies" "$OUT/host_step.log"
echo "host step: $((SECONDS - t0)) s"
python3 benchmarks/never_slower.py --no-paths --budget-ms 25 --limit-s ${NS_LIMIT:-120} --out "$OUT" --points \
  1,8,256,0,64 1,8,256,77,64 2,24,256,77,64 1,8,1024,77,64 2,24,1024,333,64 2,24,1024,512,64 1,8,1024,256,128 \
  2,24,1024,77,128 1,8,1024,77,96 1,8,256,512,256 2,24,1024,333,64,100 1,8,4096,77,64 2,38,4096,333,64 \
  2>"$OUT/never_slower.err" | tee "$OUT/never_slower.log" | grep -v "^{" | tail -40
echo "never slower: $((SECONDS - t0)) s"
exit $status
