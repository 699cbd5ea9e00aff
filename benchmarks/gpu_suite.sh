#!/usr/bin/env bash
# One device-tool call: the test suite's GPU paths (CUDA tests not skipped, Triton compiled)
# and the training-loop benchmark on the GPU (eager, CUDA graph, + bf16, + torch.compile). Logs and JSON go to $OUT.
#   bash benchmarks/gpu_suite.sh      (needs .whl/ with pydantic & co. where the image lacks them)
set -uo pipefail
source benchmarks/gpu_env.sh
export NORMLAB_DATA=/tmp/normlab-data
nvidia-smi --query-gpu=name --format=csv,noheader
SECONDS=0
timeout 170 python -m pytest -q -n 8 -p no:cacheprovider -rs \
  tests/layers tests/kernels tests/data/test_loader.py tests/train tests/models 2>&1 \
  | tee "$OUT/pytest_gpu.log" | tail -25
echo "pytest: ${SECONDS}s"; SECONDS=0
timeout 100 python benchmarks/training_loop.py --device cuda --repeats 2 \
  --out "$OUT/training_loop_cuda.json" 2>&1 | tee "$OUT/training_loop.log"
echo "training_loop: ${SECONDS}s"; SECONDS=0
timeout 100 python benchmarks/training_loop.py --device cuda --repeats 2 --cuda-graph \
  --out "$OUT/training_loop_cuda_graph.json" 2>&1 | tee "$OUT/training_loop_graph.log"
echo "training_loop cuda graph: ${SECONDS}s"; SECONDS=0
timeout 80 python benchmarks/training_loop.py --device cuda --repeats 2 --precision bf16 --cuda-graph \
  --out "$OUT/training_loop_cuda_graph_bf16.json" 2>&1 | tee "$OUT/training_loop_graph_bf16.log"
echo "training_loop cuda graph bf16: ${SECONDS}s"; SECONDS=0
timeout 100 python benchmarks/training_loop.py --device cuda --repeats 2 --cuda-graph --compile \
  --out "$OUT/training_loop_cuda_graph_compile.json" 2>&1 | tee "$OUT/training_loop_graph_compile.log"
echo "training_loop cuda graph + compile: ${SECONDS}s"
