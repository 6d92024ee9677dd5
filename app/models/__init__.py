"""ORM tables, one module per table; import from here so every table is registered."""

from app.models.answer_feedback import AnswerFeedback
from app.models.api_key import APIKey
from app.models.audit_entry import AuditChainHead, AuditEntry
from app.models.auth_session import AuthSession
from app.models.authz import AuthzRevision, CasbinRule
from app.models.base import Base
from app.models.chat import ChatCitation, ChatMessage, ChatMessageSource, ChatSession
from app.models.chunk import Chunk
from app.models.deletion_receipt import DeletionReceipt
from app.models.document import Document, DocumentTag
from app.models.index_shard import IndexShard
from app.models.job import Job
from app.models.membership import Membership
from app.models.periodic_run import PeriodicRun
from app.models.tenant import Tenant
from app.models.tenant_key import TenantKey
from app.models.tenant_settings import TenantSettings
from app.models.tombstone import Tombstone
from app.models.user import User

__all__ = [
    "AnswerFeedback",
    "APIKey",
    "AuditChainHead",
    "AuditEntry",
    "AuthSession",
    "AuthzRevision",
    "Base",
    "CasbinRule",
    "ChatCitation",
    "ChatMessage",
    "ChatMessageSource",
    "ChatSession",
    "Chunk",
    "DeletionReceipt",
    "Document",
    "DocumentTag",
    "IndexShard",
    "Job",
    "Membership",
    "PeriodicRun",
    "Tenant",
    "Tombstone",
    "TenantKey",
    "TenantSettings",
    "User",
]
