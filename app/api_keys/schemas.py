from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.kit.public_ids import APIKeyId
from app.kit.text import DisplayText


class APIKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: DisplayText = Field(default="default", min_length=1, max_length=100)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class APIKeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: APIKeyId
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class APIKeyCreated(APIKeyRead):
    # Shown exactly once; only its SHA-256 is stored.
    key: str
