#!/usr/bin/env bash
# One device call: the GPU tests of the kernels, the op, the dispatcher and NaN semantics, then the host-overhead
# and never-slower benchmarks (arguments for the latter in NS_ARGS). Logs and results under $OUT.
#   bash benchmarks/run_gpu_checks.sh [tests|bench|all|proof|host]   (proof: the tests, then never_slower only;
#   host: the tests, then host_overhead only)
#   bash benchmarks/run_gpu_checks.sh sparse   (the sparse op's tests, then benchmarks/sparse.py --quick; SPARSE_ARGS
#   replaces --quick, e.g. SPARSE_ARGS="--e2e" for the full run with real-size Mochi)
#   bash benchmarks/run_gpu_checks.sh small    (the eager shortcut's, the cuDNN cache's, the joins', padded sdpa
#   calls' and the estimator's GPU tests; the estimator's cost per implementation; the training step's host time
#   and its forward's pieces; never_slower.py at small points and SD3.5's, three rounds each)
#   bash benchmarks/run_gpu_checks.sh step     (the training step's rule: the eager shortcut's, the dispatcher's, the
#   padded sdpa path's, the FX pass's and the cuDNN cache's GPU tests, compiled_backward_check.py, then
#   never_slower.py at the step points without per-path times)
set -o pipefail
mode=${1:-all}
source benchmarks/device_env.sh
t0=$SECONDS
# Benchmarks after tests: wait (up to 30 s) until the test workers have left the GPU, or the first timings share it.
wait_for_idle_gpu() {
  for _ in $(seq 30); do
    [ -z "$(nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null)" ] && return
    sleep 1
  done
  echo "warning: other processes still on the GPU" >&2
}
if [ "$mode" = step ]; then
  pytest -q -n 8 -p no:cacheprovider tests/test_eager_sdpa.py tests/test_dispatch.py tests/test_sdpa_padded.py \
    tests/test_pytorch_path.py tests/test_join.py tests/test_cudnn_graph_cache.py 2>&1 | tee "$OUT/step_tests.log" | tail -6
  status=$?
  echo "step tests: $((SECONDS - t0)) s"
  # Ours and PyTorch's own SDPA backwards at one shape, eager and compiled, each order in a fresh process.
  python3 benchmarks/compiled_backward_check.py > "$OUT/compiled_backward_check.log" 2>&1
  check=$?
  tail -1 "$OUT/compiled_backward_check.log"
  status=$(( status || check ))
  wait_for_idle_gpu
  python3 benchmarks/never_slower.py --no-paths --budget-ms 25 --limit-s 240 --out "$OUT" --points 2,38,4096,333,64 \
    1,24,4096,512,128 1,24,4096,512,128,77 2,24,4096,333,64,77 1,24,44520,256,128,100 2>"$OUT/never_slower.err" \
    | tee "$OUT/never_slower.log" | tail -14
  ns=$?
  [ $ns -eq 0 ] || tail -5 "$OUT/never_slower.err"
  echo "step never slower: $((SECONDS - t0)) s"
  exit $(( status || ns ))
fi
if [ "$mode" = small ]; then
  pytest -q -n 8 -p no:cacheprovider tests/test_eager_sdpa.py tests/test_cudnn_graph_cache.py tests/test_join.py \
    tests/test_sdpa_padded.py tests/test_sparse_estimate_triton.py 2>&1 | tee "$OUT/tests.log" | tail -4
  status=$?
  echo "small tests: $((SECONDS - t0)) s"
  wait_for_idle_gpu
  python3 benchmarks/sparse.py --estimator-only --no-flex --out "$OUT" > "$OUT/estimator.log" 2>&1
  grep -E '"variant": "estimator' "$OUT/estimator.log" | cut -c1-260
  python3 benchmarks/host_overhead.py --step --out "$OUT" > "$OUT/host_step.log" 2>&1
  grep -E "host .* us|copies" "$OUT/host_step.log"
  python3 benchmarks/never_slower.py --no-paths --rounds 3 --budget-ms 25 --limit-s ${NS_LIMIT:-180} --out "$OUT" --points \
    1,8,256,0,64 1,8,256,77,64 2,24,256,77,64 1,8,1024,77,64 2,24,1024,333,64 2,24,1024,512,64 1,8,1024,256,128 \
    2,24,1024,77,128 1,8,1024,77,96 1,8,256,512,256 2,24,1024,333,64,100 1,8,4096,77,64 2,38,4096,333,64 \
    2>"$OUT/never_slower.err" | tee "$OUT/never_slower.log" | grep -v "^{" | tail -40
  echo "small never slower: $((SECONDS - t0)) s"
  exit $status
fi
if [ "$mode" = sparse ]; then
  pytest -q -p no:cacheprovider tests/test_sparse_hopper.py tests/test_sparse_triton.py tests/test_sparse_op.py tests/test_sparse_compile.py \
    tests/test_sparse_patterns.py 2>&1 | tee "$OUT/sparse_tests.log" | tail -15
  status=$?
  echo "sparse tests: $((SECONDS - t0)) s"
  python3 benchmarks/sparse.py --out "$OUT" ${SPARSE_ARGS:---quick} 2>"$OUT/sparse.err" | tee "$OUT/sparse.log" | tail -30
  echo "sparse benchmark: $((SECONDS - t0)) s"
  exit $status
fi
if [ "$mode" != bench ]; then
  pytest -q -n 8 -p no:cacheprovider ${TESTS:-tests/test_nan.py tests/test_dispatch.py tests/test_hopper_kernel.py tests/test_hopper_backward.py tests/test_triton_kernel.py tests/test_op.py tests/test_masked_op.py tests/test_fast_launch.py tests/test_pytorch_path.py tests/test_eager_sdpa.py tests/test_join.py tests/test_cudnn_graph_cache.py} 2>&1 \
    | tee "$OUT/tests.log" | tail -15
  echo "gpu tests: $((SECONDS - t0)) s"
fi
if [ "$mode" != tests ]; then
  wait_for_idle_gpu
  if [ "$mode" != proof ]; then
    python3 benchmarks/host_overhead.py --out "$OUT" 2>&1 | tee "$OUT/host_overhead.log" | grep -E "host|rror" | head -100
    echo "host overhead: $((SECONDS - t0)) s"
  fi
  if [ "$mode" != host ]; then
    python3 benchmarks/never_slower.py --out "$OUT" ${NS_ARGS:-} 2>"$OUT/never_slower.err" | tee "$OUT/never_slower.log" | tail -45
    echo "never slower: $((SECONDS - t0)) s"
  fi
fi
