from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from app.kit.public_ids import TenantId
from app.kit.text import DisplayText
from app.models import Tenant

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"

MAX_RETENTION_DAYS = 36_500

TenantRole = Literal["admin", "editor", "viewer", "restricted_viewer", "guest", "auditor"]


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: str = Field(pattern=SLUG_PATTERN)
    name: DisplayText = Field(min_length=1, max_length=200)
    # Days a soft-deleted document stays restorable; None: the deployment's retention_days.
    retention_days: int | None = Field(default=None, ge=0, le=MAX_RETENTION_DAYS)
    # Whether the caller becomes the new tenant's admin (the usual case: whoever sets up a
    # department runs it). False: a platform operator creating it for someone else, who is then
    # named with PUT .../members/{username}. Strict: "false" or 0 is a 422, not a guess.
    join: StrictBool = True


class TenantUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: DisplayText | None = Field(default=None, min_length=1, max_length=200)
    # A number of days, or null for the deployment's default.
    retention_days: int | None = Field(default=None, ge=0, le=MAX_RETENTION_DAYS)


class TenantRead(BaseModel):
    id: TenantId
    slug: str
    name: str
    created_at: datetime
    # None: the deployment's retention_days applies.
    retention_days: int | None = None
    # The caller's role; None for a platform admin managing a tenant it has no role in.
    role: str | None = None
    # Shown only to a platform admin and to the tenant's own admins, who can list both anyway;
    # None for every other role (a restricted viewer must not learn how many documents it
    # cannot see). Documents: not soft-deleted and not being purged.
    members_count: int | None = None
    documents_count: int | None = None

    @classmethod
    def of(
        cls, tenant: Tenant, role: str | None = None, counts: TenantCounts | None = None
    ) -> TenantRead:
        return cls(
            id=tenant.id,
            slug=tenant.slug,
            name=tenant.name,
            created_at=tenant.created_at,
            retention_days=tenant.retention_days,
            role=role,
            members_count=counts.members if counts else None,
            documents_count=counts.documents if counts else None,
        )


@dataclass(frozen=True)
class TenantCounts:
    """How many members and (live) documents a tenant has: metadata, never content."""

    members: int
    documents: int


@dataclass(frozen=True)
class TenantRow:
    """One row of a tenant list: the tenant, the caller's role in it, and counts when the caller
    may see them."""

    tenant: Tenant
    role: str | None
    counts: TenantCounts | None

    def read(self) -> TenantRead:
        return TenantRead.of(self.tenant, self.role, self.counts)


class MemberSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: TenantRole


class MemberRead(BaseModel):
    username: str
    role: str
    since: datetime
