from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ReadyRead(BaseModel):
    status: Literal["ready"] = "ready"
    # Each check's state: "ok", or why it does not apply ("not configured", "not preloaded").
    checks: dict[str, str]
