#!/usr/bin/env bash
# The GPU check, in one run: the GPU tests (tests/test_gpu.py: CUDA graphs, bf16, the memory
# probe and the default job against the exact path), then the benchmark (python -m rnsf.bench).
# Everything lands in OUT (default outputs/gpu_check): versions, test log, bench_gpu.json and the
# benchmark's Markdown tables (bench.md) for the README's performance section.
#
#   bash benchmarks/gpu_check.sh [OUT]            # PYTHON=python3 by default
#   STEPS=tests bash benchmarks/gpu_check.sh      # one step only: tests | bench
#
# On an offline machine, install the carried wheels first and set PYTHONPATH (README:
# Performance on a GPU). Exit status: the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-outputs/gpu_check}
python=${PYTHON:-python3}
mkdir -p "$out"
export WANDB_MODE=${WANDB_MODE:-disabled} PYTHONUNBUFFERED=1
failed=0

"$python" - <<'EOF' 2>&1 | tee "$out/versions.txt"
import platform, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "python", platform.python_version())
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
EOF

steps=" ${STEPS:-tests bench} "

if [[ $steps == *" tests "* ]]; then
  timeout 900 "$python" -m pytest -q -p no:nbmake -p no:cacheprovider -o addopts="" -rs \
    tests/test_gpu.py 2>&1 | tee "$out/test_gpu.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || failed=$((failed + 1))
fi

if [[ $steps == *" bench "* ]]; then
  if "$python" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    timeout 900 "$python" -m rnsf.bench --out "$out/bench_gpu.json" 2>&1 | tee "$out/bench.md"
    [ "${PIPESTATUS[0]}" -eq 0 ] || failed=$((failed + 1))
  else
    echo "no CUDA device: the benchmark is skipped (python -m rnsf.bench --smoke: its CPU check)"
    failed=$((failed + 1))
  fi
fi

echo "gpu_check: $failed step(s) failed; results in $out"
exit "$failed"
