"""Privacy queries: everything held about one person, read for an export and removed for an
erasure. The only SQL of the privacy domain."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, Executable, String, Text, and_, delete, func, or_, select
from sqlalchemy import update as sql_update
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.authz import subject_of
from app.models import (
    APIKey,
    AuditEntry,
    AuthSession,
    Base,
    CasbinRule,
    ChatMessage,
    ChatSession,
    Document,
    DocumentTag,
    Membership,
    Tenant,
    User,
)

# Tables whose rows an erasure keeps on purpose, whatever text they hold: documents stay with
# their tenant (only the link to the uploader goes), and a citation quotes a document. The
# identity scan after an erasure skips them, so a document titled like a person cannot keep
# that person from being erased.
_TENANT_CONTENT = frozenset({"documents", "document_tags", "chunks", "chat_citations"})
# Tables that hold ids and hashes only, by construction (app/models/tombstone.py): their
# kind column ("user", "document") must not pass for a person named so.
_IDS_AND_HASHES = frozenset({"tombstones"})


async def _affected(session: AsyncSession, statement: Executable) -> int:
    result = cast(CursorResult[Any], await session.execute(statement))
    return int(result.rowcount or 0)


def _owned_sessions(user_id: int) -> Any:
    return select(ChatSession.id).where(ChatSession.user_id == user_id)


class PrivacyRepository:
    async def user_by_username(self, session: AsyncSession, username: str) -> User | None:
        return await session.scalar(select(User).where(User.username == username))

    async def count_active_platform_admins(self, session: AsyncSession) -> int:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(User)
                .where(User.is_platform_admin.is_(True), User.is_active.is_(True))
            )
            or 0
        )

    # Reads for an export.

    async def memberships(
        self, session: AsyncSession, user_id: int
    ) -> Sequence[tuple[Membership, Tenant]]:
        rows = await session.execute(
            select(Membership, Tenant)
            .join(Tenant, Tenant.id == Membership.tenant_id)
            .where(Membership.user_id == user_id)
            .order_by(Tenant.slug)
        )
        return [(m, t) for m, t in rows]

    async def tenant_slugs(self, session: AsyncSession, tenant_ids: set[int]) -> dict[int, str]:
        if not tenant_ids:
            return {}
        rows = await session.execute(
            select(Tenant.id, Tenant.slug).where(Tenant.id.in_(sorted(tenant_ids)))
        )
        return {tenant_id: slug for tenant_id, slug in rows}

    async def api_keys(self, session: AsyncSession, user_id: int) -> Sequence[APIKey]:
        rows = await session.scalars(
            select(APIKey).where(APIKey.user_id == user_id).order_by(APIKey.id)
        )
        return rows.all()

    async def chat_sessions(
        self, session: AsyncSession, user_id: int
    ) -> Sequence[tuple[ChatSession, Tenant]]:
        rows = await session.execute(
            select(ChatSession, Tenant)
            .join(Tenant, Tenant.id == ChatSession.tenant_id)
            .where(ChatSession.user_id == user_id)
            .order_by(ChatSession.id)
        )
        return [(s, t) for s, t in rows]

    async def uploaded_documents(
        self, session: AsyncSession, user_id: int
    ) -> Sequence[tuple[Document, Tenant, list[str]]]:
        """Documents the user uploaded (soft-deleted ones too), each with its tenant and tags."""
        rows = [
            (d, t)
            for d, t in await session.execute(
                select(Document, Tenant)
                .join(Tenant, Tenant.id == Document.tenant_id)
                .where(Document.uploaded_by == user_id)
                .order_by(Document.id)
            )
        ]
        tags: dict[int, list[str]] = {}
        if rows:
            tagged = await session.execute(
                select(DocumentTag.document_id, DocumentTag.tag)
                .where(DocumentTag.document_id.in_([d.id for d, _ in rows]))
                .order_by(DocumentTag.document_id, DocumentTag.tag)
            )
            for document_id, tag in tagged:
                tags.setdefault(document_id, []).append(tag)
        return [(d, t, tags.get(d.id, [])) for d, t in rows]

    async def audit_entries_about(
        self, session: AsyncSession, user_id: int
    ) -> Sequence[AuditEntry]:
        """Entries the user acted in or whose target is the user's account, by chain and seq."""
        rows = await session.scalars(
            select(AuditEntry)
            .where(
                or_(
                    AuditEntry.actor_id == user_id,
                    and_(AuditEntry.target_type == "user", AuditEntry.target_id == str(user_id)),
                )
            )
            .order_by(AuditEntry.chain, AuditEntry.seq)
        )
        return rows.all()

    # Writes for an erasure; each returns how many rows it changed.

    async def delete_chat(self, session: AsyncSession, user_id: int) -> tuple[int, int]:
        """Delete the user's chat sessions and their messages (citations and prompt sources
        go with the messages, ON DELETE CASCADE); (sessions, messages)."""
        messages = await _affected(
            session,
            delete(ChatMessage)
            .where(ChatMessage.session_id.in_(_owned_sessions(user_id)))
            .execution_options(synchronize_session=False),
        )
        sessions = await _affected(
            session,
            delete(ChatSession)
            .where(ChatSession.user_id == user_id)
            .execution_options(synchronize_session=False),
        )
        return sessions, messages

    async def delete_api_keys(self, session: AsyncSession, user_id: int) -> int:
        return await _affected(
            session,
            delete(APIKey)
            .where(APIKey.user_id == user_id)
            .execution_options(synchronize_session=False),
        )

    async def delete_memberships(self, session: AsyncSession, user_id: int) -> int:
        return await _affected(
            session,
            delete(Membership)
            .where(Membership.user_id == user_id)
            .execution_options(synchronize_session=False),
        )

    async def count_role_rules(self, session: AsyncSession, user_id: int) -> int:
        """The user's Casbin role assignments (g rules), in every domain."""
        return int(
            await session.scalar(
                select(func.count())
                .select_from(CasbinRule)
                .where(CasbinRule.ptype == "g", CasbinRule.v0 == subject_of(user_id))
            )
            or 0
        )

    async def unlink_documents(self, session: AsyncSession, user_id: int) -> int:
        """Documents keep their content and tenant but lose the user as uploader or deleter."""
        uploaded = await _affected(
            session,
            sql_update(Document)
            .where(Document.uploaded_by == user_id)
            .values(uploaded_by=None)
            .execution_options(synchronize_session=False),
        )
        await session.execute(
            sql_update(Document)
            .where(Document.deleted_by == user_id)
            .values(deleted_by=None)
            .execution_options(synchronize_session=False)
        )
        return uploaded

    async def delete_sign_in_sessions(self, session: AsyncSession, user_id: int) -> int:
        return await _affected(
            session,
            delete(AuthSession)
            .where(AuthSession.user_id == user_id)
            .execution_options(synchronize_session=False),
        )

    async def delete_user(self, session: AsyncSession, user_id: int) -> int:
        return await _affected(
            session,
            delete(User).where(User.id == user_id).execution_options(synchronize_session=False),
        )

    # Checks after an erasure.

    async def remaining(self, session: AsyncSession, user_id: int) -> dict[str, int]:
        """Rows still linked to the user id, per store (all zero after an erasure)."""
        counts = {
            "users": select(func.count()).select_from(User).where(User.id == user_id),
            "memberships": select(func.count())
            .select_from(Membership)
            .where(Membership.user_id == user_id),
            "api_keys": select(func.count()).select_from(APIKey).where(APIKey.user_id == user_id),
            "sign_in_sessions": select(func.count())
            .select_from(AuthSession)
            .where(AuthSession.user_id == user_id),
            "chat_sessions": select(func.count())
            .select_from(ChatSession)
            .where(ChatSession.user_id == user_id),
            "chat_messages": select(func.count())
            .select_from(ChatMessage)
            .where(ChatMessage.session_id.in_(_owned_sessions(user_id))),
            "role_rules": select(func.count())
            .select_from(CasbinRule)
            .where(CasbinRule.v0 == subject_of(user_id)),
            "documents_linked": select(func.count())
            .select_from(Document)
            .where(or_(Document.uploaded_by == user_id, Document.deleted_by == user_id)),
            "audit_readable_actor": select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.actor_id == user_id),
        }
        return {name: int(await session.scalar(stmt) or 0) for name, stmt in counts.items()}

    async def pseudonymous_entries(self, session: AsyncSession, commitment: str) -> int:
        """Entries that carry this actor commitment with the readable actor blanked."""
        return int(
            await session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(
                    AuditEntry.actor_commitment == commitment,
                    AuditEntry.actor_id.is_(None),
                    AuditEntry.actor_name.is_(None),
                )
            )
            or 0
        )

    async def identity_matches(self, session: AsyncSession, values: Sequence[str]) -> list[str]:
        """The tables (other than tenant content) where some short text column equals one of
        the values: every bounded String column of every table, found from the metadata, so
        a table added later is scanned too. Free text (Text columns) is not searched."""
        found: list[str] = []
        for table in Base.metadata.sorted_tables:
            if table.name in _TENANT_CONTENT or table.name in _IDS_AND_HASHES:
                continue
            columns = [
                c
                for c in table.columns
                if isinstance(c.type, String) and not isinstance(c.type, Text)
            ]
            if not columns:
                continue
            hits = await session.scalar(
                select(func.count())
                .select_from(table)
                .where(or_(*(c.in_(list(values)) for c in columns)))
            )
            if hits:
                found.append(table.name)
        return found


privacy_repository = PrivacyRepository()
