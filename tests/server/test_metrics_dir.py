"""The folder a server of several workers keeps their metrics in, and those that servers
killed before they could remove theirs left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from darkroom.server import run
from darkroom.storage import temps


def test_a_killed_servers_metrics_folder_goes_with_the_next_start(tmp_path: Path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    gone_pid = int(ended.stdout)
    prefix = f"{run.METRICS_PREFIX}{temps.place()}-"
    gone = tmp_path / f"{prefix}{gone_pid}-a1"  # its server killed: its process is gone
    gone.mkdir()
    (gone / "counter_1.db").write_bytes(b"metrics")
    live = tmp_path / f"{prefix}{os.getpid()}-b2"  # a server still running here
    foreign = tmp_path / f"{run.METRICS_PREFIX}{'0' * 8}-{gone_pid}-c3"  # another host's
    earlier = tmp_path / f"{run.METRICS_PREFIX}d4"  # an earlier version's name
    for folder in (live, foreign, earlier):
        folder.mkdir()

    made = Path(run.metrics_dir(tmp_path))
    assert made.is_dir() and made.name.startswith(f"{prefix}{os.getpid()}-")
    assert not gone.exists()
    assert live.exists() and foreign.exists() and earlier.exists()
