"""`python -m normlab` is the CLI (src/normlab/__main__.py); the commands are tested in test_cli.py."""

import subprocess
import sys


def test_python_dash_m_normlab_lists_the_commands():
    proc = subprocess.run([sys.executable, "-m", "normlab", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for command in ("study", "run", "sweep", "ls", "compare", "export", "report", "data"):
        assert command in proc.stdout


def test_python_dash_m_normlab_refuses_an_unknown_command_with_exit_2():
    proc = subprocess.run([sys.executable, "-m", "normlab", "trian"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "trian" in proc.stderr
