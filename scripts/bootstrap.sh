#!/usr/bin/env bash
# One-time set-up of normlab in ./.venv. Idempotent: a second call only checks.
#   bash scripts/bootstrap.sh         # the library, CLI and study
#   bash scripts/bootstrap.sh --dev   # + test tools, Triton (CPU interpreter), Ray, Chromium
set -euo pipefail
cd "$(dirname "$0")/.."
extras="gpu"
dev=0
[ "${1:-}" = "--dev" ] && { extras="dev"; dev=1; }
python3 -m venv .venv
# torch first and pinned: the CPU wheel. An unpinned torch could pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${extras}]"
if [ "$dev" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
    # Browser test of the HTML report; skipped (with a reason) where this cannot install.
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
            || echo "bootstrap: could not install chromium; the browser test will skip" >&2
    fi
fi
echo "bootstrap: ready (.venv, extras: ${extras})"
