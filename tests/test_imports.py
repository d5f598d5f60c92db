"""Any module of the catalog or the pipelines may be the first darkroom module a process
imports (a worker, a migration, a script): none depends on an import order that only the
server's happens to give."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import darkroom.catalog
import darkroom.pipelines

MODULES = [m.name for package in (darkroom.catalog, darkroom.pipelines)
           for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")
           if not m.name.endswith(".migrations")]


@pytest.mark.parametrize("module", MODULES)
def test_the_module_imports_first_in_a_fresh_process(module):
    run = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
