# Sourced by the gpu_*.sh scripts (run from the repository root on the device machine):
# the Python path (the wheels in .whl/ that the GPU image lacks, when they travelled with
# `carry=[".whl"]`, then src/), unbuffered output, compiled Triton, and the $OUT folder.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:src
else
  export PYTHONPATH=src
fi
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
