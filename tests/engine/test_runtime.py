"""Process-wide settings made on import of the engine."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

CHECK = "from darkroom.engine import runtime; print(runtime.keep_freed_memory())"


def _applied(env_extra: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"} | env_extra
    return subprocess.run([sys.executable, "-c", CHECK], env=env, check=True, text=True,
                          capture_output=True, timeout=60).stdout.strip()


def test_freed_memory_is_kept_unless_the_user_tuned_malloc():
    glibc = str(platform.libc_ver()[0] == "glibc")  # another libc is left alone
    assert _applied({}) == glibc
    assert _applied({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"}) == "False"
    assert _applied({"GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=2048"}) == glibc


def test_blas_runs_on_the_calling_thread():
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", "import darkroom, os; "
                          "print(os.environ['OPENBLAS_NUM_THREADS'])"], env=env, check=True,
                         text=True, capture_output=True, timeout=60).stdout.strip()
    assert out == "1"
