#!/usr/bin/env bash
# One slice (<= ~8 min on one H200, an estimate from FLOP arithmetic, not a measurement) of the long-context
# grid at the papers' settings (configs/longctx/gpu.yaml). Rerun it until `list` shows nothing pending; each
# run continues where the last stopped (records: results/longctx/gpu.jsonl, one line per finished cell).
#   bash scripts/gpu_longcontext.sh            # BUDGET_S (default 420 s) of cells, then the pending count
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -m hf_attn_variants_research.longctx run configs/longctx/gpu.yaml --budget-s "${BUDGET_S:-420}" --device "${DEVICE:-cuda}" "$@"
"$PY" -m hf_attn_variants_research.longctx list configs/longctx/gpu.yaml | grep -c '^pending' || true
