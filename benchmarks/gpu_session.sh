#!/usr/bin/env bash
# One GPU session, one command, <= 8 minutes on an H200 (issue 19):
#
#   bash benchmarks/gpu_session.sh
#
# Each stage runs in a fresh process under its own time limit (coreutils `timeout`), so one slow stage
# cannot eat the session; a stage that hits its limit is reported as cut and the next one starts. Writes
# benchmarks/results/gpu-session.md (device, versions, commit, every stage's exit status and time) beside
# the tables the benchmarks write (gpu-kernels-*.md, gpu-long.md) and the full log gpu-session.log; when
# $OUT is set (the device tool), copies them there too (at most 8 files).
#
# A bare GPU image (2026-12: PyTorch 2.11, transformers 5.17, no `datasets`) lacks what pyproject pins
# (transformers >= 5.24). Wheels in .whl/ are installed first (pip --no-index --target /tmp/site); make
# them on a machine with PyPI with `bash benchmarks/gpu_wheels.sh` and carry .whl along (device tool:
# carry [".whl"]). Without them the session still runs, on the image's transformers, and says so in
# gpu-session.md. The CUDA tests need only the core and test extras (the training tests skip without
# `datasets`).
#
# Stage limits, set from the times measured on 2026-12-04 (H200, torch 2.11.0+cu130, transformers 5.24.0,
# commit c0344d2; logs in the steering repo's shared/gpu-runs/2026-12-04):
#   setup     install carried wheels                                                        15 s
#   tests     pytest -k cuda (CUDA-only tests: autocast of every variant, band flex, LSTMN graphs);
#             measured: 20 tests in 14.3 s (35 s wall) before -x stopped at the fp16 case   70 s
#   band      bench_kernels --only band, bf16: T=8192 w=128 and T=32768 w=256, both directions, no padding
#             and 5% padding, band vs the pure-index anchor vs blocked vs SDPA; measured: the old full band
#             table did 4 rows in 130 s (compiles dominate); the rows print as they finish   130 s
#   long      bench_long, GPT-2 small, T=16384 and 65536, dense / band / band+anchor, dropout 0, then band
#             and dense at dropout 0.1; measured: one 16k model process 15-25 s wall          120 s
#   low_rank  bench_kernels --quick --only low_rank, bf16; measured 23 s                      35 s
#   additive  bench_kernels --quick --only additive, fp32, T=2048 (target: compiled >= 150 G/s);
#             measured: the old quick table (T=256/1024) finished its rows inside 50 s      50 s
#   lstmn     bench_kernels --quick --only lstmn, fp32, T=1024: eager vs CUDA graphs (target <= 150 ms
#             f+b); measured: T=256 f+b 378 ms; the old stage (with the reference at 1024) overran 50 s  50 s
# Sum 470 s. Optional (not in the default list; a second call):
#   long_more bench_long, BERT-base MLM and low_rank_band at 16k and 64k                      240 s
#   STAGES="long_more" bash benchmarks/gpu_session.sh
set -u
cd "$(dirname "$0")/.."
ROOT="$PWD"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
STAGES="${STAGES:-setup tests band long low_rank additive lstmn}"
RES=benchmarks/results
LOG=$RES/gpu-session.log
SUMMARY=$RES/gpu-session.md
mkdir -p "$RES"
: > "$LOG"
MARK=$(mktemp)  # results files newer than this were written by this session
declare -a ROWS=()
START_ALL=$(date +%s)

say() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$LOG"; }
stage() {  # stage NAME LIMIT_S CMD...: one stage in a fresh process, output appended to the log
  local name=$1 limit=$2; shift 2
  say "[$name] $*  (limit ${limit}s)"
  local t0; t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG" | tail -n 30
  local rc=${PIPESTATUS[0]}
  local dt=$(( $(date +%s) - t0 ))
  local status="ok"
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status="cut at its limit"; elif [ "$rc" != 0 ]; then status="failed"; fi
  say "[$name] exit $rc after ${dt}s ($status)"
  ROWS+=("| $name | \`$*\` | $limit | $dt | $rc | $status |")
}

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
for stage_name in $STAGES; do
  case "$stage_name" in
    setup)
      if ls .whl/*.whl >/dev/null 2>&1; then
        stage setup 15 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
          --target /tmp/site .whl/*.whl
        export PYTHONPATH="/tmp/site:$PYTHONPATH"
      else
        say "[setup] no wheels in .whl/: the image's packages are used (see gpu-session.md)"
      fi ;;
    tests)
      stage tests 70 "$PY" -m pytest -q -p no:cacheprovider -rfs tests/ -k cuda ;;
    band)
      stage band 130 "$PY" benchmarks/bench_kernels.py --only band --device cuda --dtype bf16 ;;
    long)
      stage long 120 "$PY" benchmarks/bench_long.py --device cuda --families gpt2 --variants dense band band+anchor \
        --lengths 16384 65536 --budget 110 --run-limit 45 ;;
    long_more)
      stage long_more 240 "$PY" benchmarks/bench_long.py --device cuda --families bert gpt2 \
        --variants dense band band+anchor low_rank_band --lengths 16384 65536 --budget 230 --run-limit 50 \
        --out "$RES/gpu-long-more.md" ;;
    low_rank)
      stage low_rank 35 "$PY" benchmarks/bench_kernels.py --quick --only low_rank --device cuda --dtype bf16 ;;
    additive)
      stage additive 50 "$PY" benchmarks/bench_kernels.py --quick --only additive --device cuda --dtype fp32 ;;
    lstmn)
      stage lstmn 50 "$PY" benchmarks/bench_kernels.py --quick --only lstmn --device cuda --dtype fp32 ;;
    *)
      say "unknown stage $stage_name (known: setup tests band long long_more low_rank additive lstmn)" ;;
  esac
done

TOTAL=$(( $(date +%s) - START_ALL ))
VERSIONS=$("$PY" -c "
import platform, torch, transformers
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device'
print(f'{gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}); transformers {transformers.__version__} '
      f'(from {transformers.__file__}); Python {platform.python_version()}')" 2>&1 | tail -n 1)
NEED=$(sed -n 's/.*"transformers>=\([0-9.]*\).*/\1/p' pyproject.toml | head -n 1)
HAVE=$("$PY" -c "import transformers; print(transformers.__version__)" 2>/dev/null || echo none)
GAP=""
if [ "$("$PY" -c "
from packaging.version import Version as V
print(int(V('$HAVE') < V('$NEED')))" 2>/dev/null || echo 1)" = 1 ]; then
  GAP="**transformers $HAVE is below the $NEED that pyproject requires**: carry the pinned wheel (bash benchmarks/gpu_wheels.sh, then carry .whl). The figures above ran on $HAVE."
fi
COMMIT="${PROJECT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
DIRTY=""
if git rev-parse --git-dir >/dev/null 2>&1 && ! git diff --quiet HEAD -- 2>/dev/null; then
  DIRTY=" (with uncommitted changes)"
fi
{
  echo "# GPU session"
  echo
  echo "Command: \`bash benchmarks/gpu_session.sh\` (STAGES=\"$STAGES\"). Commit $COMMIT$DIRTY, $(date -u +%Y-%m-%d)."
  echo
  echo "Device and versions: $VERSIONS."
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/nvidia-smi: /; s/$/./'
  [ -n "$GAP" ] && { echo; echo "$GAP"; }
  echo
  echo "| stage | command | limit s | took s | exit | status |"
  echo "|---|---|---|---|---|---|"
  for row in "${ROWS[@]}"; do echo "$row"; done
  echo
  echo "Total ${TOTAL} s. Tables written by this session: $(find $RES -maxdepth 1 -name 'gpu-*.md' -newer "$MARK" \
    ! -name gpu-session.md -printf '%f ' 2>/dev/null)"
  echo "Full output: gpu-session.log."
} > "$SUMMARY.tmp" && mv "$SUMMARY.tmp" "$SUMMARY"
say "wrote $SUMMARY (total ${TOTAL}s)"
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then  # the device tool brings back at most 8 files from $OUT
  cp "$SUMMARY" "$LOG" "$OUT"/ 2>/dev/null
  for f in $RES/gpu-kernels-band.md $RES/gpu-long.md $RES/gpu-kernels-quick-low_rank.md \
           $RES/gpu-kernels-quick-additive.md $RES/gpu-kernels-quick-lstmn.md $RES/gpu-long-more.md; do
    [ -f "$f" ] && [ "$f" -nt "$MARK" ] && cp "$f" "$OUT"/
  done
fi
