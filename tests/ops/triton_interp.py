"""Run Triton kernels under the interpreter (``TRITON_INTERPRET=1``) on the CPU.

The variable must be set before triton builds its jit functions, so the code runs in a fresh
interpreter; it must print ``OK`` as its last line.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_interpreted(code: str, timeout: int = 120) -> None:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                       timeout=timeout, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout + r.stderr
