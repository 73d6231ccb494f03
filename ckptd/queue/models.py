"""SQLAlchemy 2.0 declarative schema: ``jobs``, ``job_events``, ``workers``.

Timestamps are float unix seconds everywhere (REAL on SQLite, double precision on PostgreSQL): they
compare and add without timezone handling, and tests drive them with an injectable clock.
JSON payloads are stored as text and (de)serialised in ``records``, so both databases behave alike.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import (
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names, so migrations can refer to (and alter) them on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# The claim query only ever looks at live jobs; a partial index keeps done/dead history out of its way.
# The query repeats this exact text: SQLite uses a partial index only when the query's WHERE contains
# its WHERE term verbatim (a bound parameter or a reordered IN list does not count).
LIVE_JOBS_SQL = "state IN ('queued', 'failed', 'waiting')"
# The reaper's index: only running jobs have a lease.
RUNNING_JOBS_SQL = "state = 'running'"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("source", "output"),
        Index(
            "ix_jobs_claim_order",
            "priority",
            "step",
            "id",
            sqlite_where=text(LIVE_JOBS_SQL),
            postgresql_where=text(LIVE_JOBS_SQL),
        ),
        Index(
            "ix_jobs_running_lease",
            "lease_expires_at",
            sqlite_where=text(RUNNING_JOBS_SQL),
            postgresql_where=text(RUNNING_JOBS_SQL),
        ),
        Index("ix_jobs_experiment_step", "experiment", "step"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(Text)
    output: Mapped[str] = mapped_column(Text)
    experiment: Mapped[str] = mapped_column(Text)
    step: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(64))
    watch_root: Mapped[str] = mapped_column(Text)
    options: Mapped[str] = mapped_column(Text, default="{}")
    state: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    not_before: Mapped[float | None] = mapped_column(Float)
    fencing_token: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class JobEventRow(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(Integer, ForeignKey("jobs.id", ondelete="CASCADE"))
    at: Mapped[float] = mapped_column(Float)
    event: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str | None] = mapped_column(String(16))
    worker_id: Mapped[str | None] = mapped_column(String(200))
    message: Mapped[str | None] = mapped_column(Text)


class WorkerRow(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    stopped_at: Mapped[float | None] = mapped_column(Float)


# Core handles for the repository's SQL (it runs statements on connections, never ORM sessions).
jobs = cast(Table, JobRow.__table__)
job_events = cast(Table, JobEventRow.__table__)
workers = cast(Table, WorkerRow.__table__)
