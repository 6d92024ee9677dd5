from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class PeriodicRun(Base):
    """When a periodic task is next due. Every process that runs jobs may try to start a due
    task; the one whose conditional update moves `next_run_at` wins the period, so the task
    runs once per period however many processes there are."""

    __tablename__ = "periodic_runs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_run_at: Mapped[datetime] = mapped_column()
    last_run_at: Mapped[datetime | None] = mapped_column()
    last_job_id: Mapped[int | None] = mapped_column()
