#!/usr/bin/env bash
# One GPU session: the CUDA-only tests, then the kernel and model benchmarks on the GPU, each timing
# mode in a fresh process, results in benchmarks/results/gpu-*.md (device and versions named in
# each file) and a log in benchmarks/results/gpu-session.log. Sized for device calls of <= 10 minutes:
#
#   bash benchmarks/gpu_session.sh                              # tests band low_rank models: <= 590 s
#   STAGES="additive lstmn" bash benchmarks/gpu_session.sh      # the second call: <= 180 s
#
# Stages (each has its own time limit, so one slow stage cannot eat the session):
#   tests     CUDA tests: bf16/fp16+GradScaler autocast of every variant, band flex on CUDA (one block
#             mask per forward, no recompile), flex against the reference          (limit 150 s)
#   band      bench_kernels --only band, bf16: band vs flex with a prebuilt mask, SDPA flash, SDPA
#             with the dense band mask, T=4096, w=128, both directions             (limit 180 s)
#   low_rank  bench_kernels --only low_rank, bf16: padded vs unpadded vs dense     (limit 60 s)
#   models    bench_models --quick, bf16 autocast, both families, every variant    (limit 200 s)
#   additive  bench_kernels --only additive, fp32 (the kernel computes in fp32 under autocast)  (90 s)
#   lstmn     bench_kernels --only lstmn, fp32, T=256 and 1024 (target <= 150 ms at 1024)  (90 s)
# Python: $PYTHON, else .venv/bin/python, else python3.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
STAGES="${STAGES:-tests band low_rank models}"
LOG=benchmarks/results/gpu-session.log
mkdir -p benchmarks/results
: > "$LOG"

say() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$LOG"; }
run() {  # run LIMIT_S CMD...: one stage in a fresh process, its output appended to the log
  local limit=$1; shift
  say "$*  (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG" | tail -n 40
  local rc=${PIPESTATUS[0]}
  say "exit $rc"
}

say "device"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true; } | tee -a "$LOG"
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)" \
  2>&1 | tee -a "$LOG"

for stage in $STAGES; do
  case "$stage" in
    tests)
      run 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_precision.py tests/test_band_flex.py \
        tests/test_kernels.py -k "cuda" ;;
    band)
      run 180 "$PY" benchmarks/bench_kernels.py --quick --only band --device cuda --dtype bf16 ;;
    low_rank)
      run 60 "$PY" benchmarks/bench_kernels.py --quick --only low_rank --device cuda --dtype bf16 ;;
    models)
      run 200 "$PY" benchmarks/bench_models.py --quick --device cuda --dtype bf16 ;;
    additive)
      run 90 "$PY" benchmarks/bench_kernels.py --quick --only additive --device cuda --dtype fp32 ;;
    lstmn)
      run 90 "$PY" benchmarks/bench_kernels.py --quick --only lstmn --device cuda --dtype fp32 ;;
    *)
      say "unknown stage $stage (known: tests band low_rank models additive lstmn)" ;;
  esac
done
say "results:"
ls -1 benchmarks/results/gpu-* | tee -a "$LOG"
