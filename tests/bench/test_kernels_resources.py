"""The resources report compiles the reduction kernels for sm_90 on CPU (no GPU): one row here,
in a fresh process without TRITON_INTERPRET (the interpreter cannot compile)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json
from normlab.bench.kernels.resources import resources
print(json.dumps(resources([((8192, 512), "float32", "nc")])))
"""


def test_every_setting_of_a_row_compiles_and_reports_its_resources():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    entries = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [e["setting"] for e in entries] == ["adopted", "unroll", "rows_cap", "finalize", "stages", "v4"]
    by = {e["setting"]: e for e in entries}
    for e in entries:
        for kernel in ("stats", "bwd_reduce"):
            assert 0 < e[kernel]["regs"] <= 255 and e[kernel]["spill_bytes"] >= 0, e
    # a pipelined loop stages its loads in shared memory; the plain loop needs far less
    assert by["stages"]["stats"]["smem_bytes"] > 4 * by["adopted"]["stats"]["smem_bytes"]
