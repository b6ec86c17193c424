#!/usr/bin/env bash
# Download, on a machine with PyPI, the wheels a bare GPU image lacks for benchmarks/gpu_session.sh, into
# .whl/ (git-ignored; the device tool carries it with carry [".whl"]). The H200 image of 2026-12 has
# torch 2.11, transformers 5.17 (pyproject requires >= 5.24), huggingface_hub 1.33, tokenizers 0.23.2,
# safetensors 0.8.0, no `datasets`: only transformers, at the version constraints.txt pins, is needed
# (its other requirements are met there; datasets is not needed: the training tests skip without it).
#
#   bash benchmarks/gpu_wheels.sh            # then: device run with carry [".whl"], bash benchmarks/gpu_session.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
PIN=$(grep -i '^transformers==' constraints.txt)
mkdir -p .whl
rm -f .whl/transformers-*.whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "$PIN"
ls -la .whl
