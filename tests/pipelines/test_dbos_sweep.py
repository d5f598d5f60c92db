"""DBOS's sweep for delayed and timed-out workflows, neither of which darkroom makes,
slowed by the worker before DBOS launches."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import event

from darkroom.catalog import make_engine
from darkroom.config import Settings
from darkroom.pipelines.queue import migrate
from darkroom.pipelines.worker import BACKGROUND_JOBS_S, Worker


def _idle_statements(settings: Settings, seconds: float) -> list[str]:
    """The statements a started worker runs on DBOS's engine while idle, after its first
    second."""
    engine = make_engine(settings.database_url)
    migrate(engine)
    worker = Worker(settings, "timers", engine)
    worker.start()
    seen: list[str] = []
    try:
        time.sleep(1.0)  # the launch's own first rounds
        event.listen(worker._system_engine, "before_cursor_execute",
                     lambda _c, _k, statement, *_a: seen.append(statement))
        time.sleep(seconds)
    finally:
        worker.stop()
        engine.dispose()
    return seen


def test_dbos_sweeps_for_delays_and_deadlines_once_a_minute(tmp_path: Path):
    settings = Settings(data_dir=tmp_path / "data")
    seen = _idle_statements(settings, 2.5)
    assert BACKGROUND_JOBS_S == 60.0
    # DBOS's sweeps name the columns of delays and deadlines; once a second before
    assert not [s for s in seen if "delay_until_epoch_ms <=" in s
                or "workflow_deadline_epoch_ms <" in s]
    assert any("main.queues" in s or "workflow_status" in s for s in seen)  # it polls
