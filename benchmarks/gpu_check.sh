#!/usr/bin/env bash
# One device-tool call: GPU kernel tests (compiled, TRITON_INTERPRET unset) + the benchmark.
#   bash benchmarks/gpu_check.sh [--v4] [--sweep] [--final]
# (the timing phases of `normlab bench kernels`, plus its tuning phases with --v4 / --sweep)
# Writes logs and JSON to $OUT (the device tool brings them back). Worst case about 5 minutes:
# tests <= 90 s, bench <= 210 s (--budget-s 190 skips the last v4 rows / sweep entries if the
# run is slower than estimated; benchmarks/README.md "v4" has the estimate), training loop
# (--final only) <= 90 s more.
set -uo pipefail
source benchmarks/gpu_env.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
SECONDS=0
timeout 90 python -m pytest -q -x -n 8 -p no:cacheprovider tests/kernels 2>&1 \
  | tee "$OUT/pytest.log" | tail -15
echo "pytest: ${SECONDS}s"; SECONDS=0
BENCH_ARGS=(--budget-s 190)
[[ " $* " == *" --v4 "* ]] && BENCH_ARGS+=(--v4)
[[ " $* " == *" --sweep "* ]] && BENCH_ARGS+=(--sweep)
timeout 210 python benchmarks/bn_kernels.py --out "$OUT/bn_kernels.json" "${BENCH_ARGS[@]}" 2>&1 \
  | tee "$OUT/bench.log"
echo "bench: ${SECONDS}s"
if [[ " $* " == *" --final "* ]]; then
  timeout 90 python benchmarks/training_loop.py --device cuda 2>&1 | tee "$OUT/training_loop.log"
fi
