from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class GeneratorPreparationRead(BaseModel):
    """Where the answer model's preparation stands (app/generation/progress.py)."""

    # idle (not started: not preloaded and nobody asked yet), assembling, converting, loading,
    # ready or failed.
    state: str
    preparing: bool
    percent: int  # over the whole preparation
    stage_percent: int | None  # within the current stage, while preparing
    seconds: float | None  # since the preparation started
    eta_seconds: int | None  # estimated seconds left, while preparing
    error: str | None  # the type of the error that stopped the last preparation


class ReadyRead(BaseModel):
    status: Literal["ready"] = "ready"
    # Each check's state: "ok", or why it does not apply ("not configured", "not preloaded").
    checks: dict[str, str]
    generator: GeneratorPreparationRead | None = None
