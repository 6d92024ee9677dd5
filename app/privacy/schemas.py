"""What a person's data export holds (GDPR article 15) and what an erasure request names.

Every id in an export is a public id (app/kit/public_ids.py), like everywhere in the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.audit.schemas import AuditEntryRead
from app.chat.schemas import CheckOutcome, CitationOut, FeedbackOut
from app.kit.public_ids import APIKeyId, ChatSessionId, DocumentId, TenantId, UserId

EXPORT_FORMAT = "cairn.privacy-export.v1"


class EraseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)


class ExportAccount(BaseModel):
    id: UserId
    username: str
    email: str | None
    is_platform_admin: bool
    is_active: bool
    created_at: datetime


class ExportMembership(BaseModel):
    tenant_id: TenantId
    tenant: str
    tenant_name: str
    role: str
    created_at: datetime
    updated_at: datetime


class ExportAPIKey(BaseModel):
    """A key's metadata; the key itself is never stored, and its hash is never exported."""

    id: APIKeyId
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ExportMessage(BaseModel):
    """A message as the person's chat history shows it (app/chat/adapter.py `message_out`),
    with its finish reason."""

    role: Literal["user", "assistant"]
    # None when withheld: the answer was written from a document the person can no longer
    # see (deleted, or above their level now), exactly as their chat history shows it.
    content: str | None
    finish_reason: str | None
    created_at: datetime
    citations: list[CitationOut]
    withheld: bool
    # What the faithfulness check made of an answer; null as in the chat history.
    grounded: bool | None = None
    check: CheckOutcome | None = None
    note: str | None = None
    # The person's own rating of an answer (with their comment), if they gave one.
    feedback: FeedbackOut | None = None


class ExportChatSession(BaseModel):
    id: ChatSessionId
    tenant_id: TenantId
    tenant: str
    title: str
    created_at: datetime
    updated_at: datetime
    messages: list[ExportMessage]


class ExportDocument(BaseModel):
    """A document the person uploaded: its metadata (the content belongs to the tenant)."""

    id: DocumentId
    tenant_id: TenantId
    tenant: str
    title: str
    filename: str | None
    media_type: str
    size_bytes: int
    sha256: str
    sensitivity: str
    tags: list[str]
    status: str
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class ExportAuditEntry(AuditEntryRead):
    """An audit entry the person acted in (`by_subject`) or that is about their account.

    `actor` is the person's own username on entries they acted in, and None otherwise: the
    export is about them, not about the colleagues or admins who acted on their account."""

    chain: str
    by_subject: bool


class PrivacyExport(BaseModel):
    format: str = EXPORT_FORMAT
    generated_at: datetime
    account: ExportAccount
    memberships: list[ExportMembership]
    api_keys: list[ExportAPIKey]
    chat_sessions: list[ExportChatSession]
    documents: list[ExportDocument]
    audit_entries: list[ExportAuditEntry]
    # Tenants whose content (chat sessions, uploaded documents, audit entries) is about this
    # person but was left out: the requester is not a tenant admin there. Their admins, or
    # the person themself, can export it.
    content_withheld: list[str] = []
