from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.kit.public_ids import TenantId
from app.kit.text import DisplayText

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"

TenantRole = Literal["admin", "editor", "viewer", "restricted_viewer", "guest", "auditor"]


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: str = Field(pattern=SLUG_PATTERN)
    name: DisplayText = Field(min_length=1, max_length=200)


class TenantRead(BaseModel):
    id: TenantId
    slug: str
    name: str
    created_at: datetime
    # The caller's role; None for a platform admin managing a tenant it has no role in.
    role: str | None = None


class MemberSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: TenantRole


class MemberRead(BaseModel):
    username: str
    role: str
    since: datetime
