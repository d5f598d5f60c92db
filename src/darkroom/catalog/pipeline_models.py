"""The pipelines' tables: definitions, each run's steps and attempts, and the workers'
heartbeats."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from darkroom.catalog.models import Base, utcnow


class PipelineRow(Base):
    """A pipeline as declared (YAML or API): its validated definition as JSON."""

    __tablename__ = "pipelines"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    definition: Mapped[dict]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobStep(Base):
    """One step of a job: state, attempts, timing, error and output of its latest attempt."""

    __tablename__ = "job_steps"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int]
    kind: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    duration_ms: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    output: Mapped[dict | None]


class JobAttempt(Base):
    """One ended attempt of a step in a run, in the order the run made them (`seq`): its
    outcome as the run answered it, so a run replayed after a crash answers it again
    instead of running the attempt twice; and the job's history."""

    __tablename__ = "job_attempts"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    run: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(primary_key=True)
    step: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    outcome: Mapped[dict]


class Worker(Base):
    """A worker process (DBOS executor) and its latest heartbeat."""

    __tablename__ = "workers"

    executor_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    recovered_at: Mapped[datetime | None]
