"""A person's rights over their data: access (GDPR article 15) and erasure (article 17).

An export gathers everything held about one account. An erasure removes the account, its
memberships, role assignments, API keys and chat sessions with their messages; documents the
person uploaded stay with their tenant without the link to them; their audit entries keep
the keyed actor commitment (inside the hash, so every chain still verifies) and lose the
readable actor, each re-sealed as erased (app/audit/chain.py: an actor blanked any other way
fails verification). It runs in one transaction under a deletion receipt that is completed
only after the removal was verified; a failed verification rolls the whole erasure back.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.chain import actor_commitment
from app.audit.schemas import AuditEntryRead, public_chain
from app.audit.service import ShownEntry, audit_secret_of, audit_service, shown_actor
from app.backup.tombstone_file import user_digest
from app.backup.tombstones import tombstone_service
from app.chat.adapter import message_out
from app.chat.service import TranscriptEntry, chat_service
from app.kit import authz
from app.kit.actor import SystemActor
from app.kit.authz import Enforcer
from app.kit.db import Database
from app.kit.errors import CairnError, Conflict, ResourceNotFound
from app.kit.principal import Principal
from app.models import AnswerFeedback, AuditEntry, DeletionReceipt, User
from app.models.base import utcnow
from app.privacy.repository import privacy_repository
from app.privacy.schemas import (
    ExportAccount,
    ExportAPIKey,
    ExportAuditEntry,
    ExportChatSession,
    ExportDocument,
    ExportMembership,
    ExportMessage,
    PrivacyExport,
)
from app.receipts.service import Verification, receipt_service
from app.search.visibility import Visibility

logger = logging.getLogger(__name__)


class ErasureUnverified(CairnError):
    status_code = 500
    code = "erasure_unverified"
    message = "The erasure could not be verified and was rolled back"


def _export_message(entry: TranscriptEntry, feedback: AnswerFeedback | None) -> ExportMessage:
    """The message as the chat history shows it (with the person's rating of an answer), but
    a withheld answer without any text."""
    shown = message_out(entry, feedback)
    return ExportMessage(
        **shown.model_dump(exclude={"content", "citations"}),
        content=None if shown.withheld else shown.content,
        citations=shown.citations,
        finish_reason=entry.stored.message.finish_reason,
    )


class PrivacyService:
    async def export(
        self,
        session: AsyncSession,
        principal: Principal | SystemActor,
        enforcer: Enforcer,
        *,
        username: str,
    ) -> PrivacyExport:
        """Everything held about the user (404 when unknown); the export itself is audited.

        Chat answers are exported as the person's own history shows them: one written from a
        document they can no longer see is withheld (its text and citations left out).

        What belongs to a tenant (chat sessions, uploaded documents' metadata, the tenant's
        audit entries) is exported to the person themself, and to anyone else (a platform
        admin) only for the tenants where that requester is a tenant admin: a platform admin
        reads no tenant content by virtue of the platform role. The other tenants are named in
        `content_withheld`. The export is audited in the platform chain and in the chain of
        every tenant whose content it carries."""
        user = await self._user(session, username)
        readable = await self._readable_tenants(session, principal, user)

        def shown(tenant_id: int | None) -> bool:
            return tenant_id is None or readable is None or tenant_id in readable

        withheld: set[int] = set()
        sessions: list[ExportChatSession] = []
        for chat_session, tenant in await privacy_repository.chat_sessions(session, user.id):
            if not shown(tenant.id):
                withheld.add(tenant.id)
                continue
            visibility = Visibility.for_tenant(
                tenant.id, enforcer.sensitivity_levels(user.id, tenant.id)
            )
            transcript = await chat_service.transcript(session, visibility, chat_session)
            rated = await chat_service.feedback(session, transcript)
            sessions.append(
                ExportChatSession(
                    id=chat_session.id,
                    tenant_id=tenant.id,
                    tenant=tenant.slug,
                    title=chat_session.title,
                    created_at=chat_session.created_at,
                    updated_at=chat_session.updated_at,
                    messages=[
                        _export_message(e, rated.get(e.stored.message.id)) for e in transcript
                    ],
                )
            )
        documents = []
        for document, tenant, tags in await privacy_repository.uploaded_documents(session, user.id):
            if not shown(tenant.id):
                withheld.add(tenant.id)
                continue
            documents.append(
                ExportDocument(
                    id=document.id,
                    tenant_id=tenant.id,
                    tenant=tenant.slug,
                    title=document.title,
                    filename=document.filename,
                    media_type=document.media_type,
                    size_bytes=document.size_bytes,
                    sha256=document.content_sha256,
                    sensitivity=document.sensitivity,
                    tags=tags,
                    status=document.status,
                    created_at=document.created_at,
                    updated_at=document.updated_at,
                    deleted_at=document.deleted_at,
                )
            )
        entries = []
        carried = {s.tenant_id for s in sessions} | {d.tenant_id for d in documents}
        for entry in await privacy_repository.audit_entries_about(session, user.id):
            if entry.tenant_id is not None and not shown(entry.tenant_id):
                withheld.add(entry.tenant_id)
                continue
            if entry.tenant_id is not None:
                carried.add(entry.tenant_id)
            entries.append(self._audit_entry(entry, user))
        memberships = await privacy_repository.memberships(session, user.id)
        slugs = {tenant.id: tenant.slug for _, tenant in memberships}
        slugs.update(await privacy_repository.tenant_slugs(session, withheld - set(slugs)))
        export = PrivacyExport(
            generated_at=utcnow(),
            account=ExportAccount(
                id=user.id,
                username=user.username,
                email=user.email,
                is_platform_admin=user.is_platform_admin,
                is_active=user.is_active,
                created_at=user.created_at,
            ),
            memberships=[
                ExportMembership(
                    tenant_id=tenant.id,
                    tenant=tenant.slug,
                    tenant_name=tenant.name,
                    role=membership.role,
                    created_at=membership.created_at,
                    updated_at=membership.updated_at,
                )
                for membership, tenant in memberships
            ],
            api_keys=[
                ExportAPIKey(
                    id=key.id,
                    name=key.name,
                    prefix=key.prefix,
                    created_at=key.created_at,
                    expires_at=key.expires_at,
                    last_used_at=key.last_used_at,
                    revoked_at=key.revoked_at,
                )
                for key in await privacy_repository.api_keys(session, user.id)
            ],
            chat_sessions=sessions,
            documents=documents,
            audit_entries=entries,
            content_withheld=sorted(slugs[t] for t in withheld if t in slugs),
        )
        own = isinstance(principal, Principal) and principal.user_id == user.id
        await audit_service.record(
            session,
            action="privacy.export",
            actor=principal,
            target_type="user",
            target_id=user.id,
            details={"self": own, "tenants_withheld": len(withheld)},
        )
        for tenant_id in sorted(carried):
            # Each tenant's own chain says its content left in an export, and to whom.
            await audit_service.record(
                session,
                action="privacy.export",
                actor=principal,
                tenant_id=tenant_id,
                target_type="user",
                target_id=user.id,
                details={"self": own},
            )
        return export

    async def _readable_tenants(
        self, session: AsyncSession, principal: Principal | SystemActor, user: User
    ) -> set[int] | None:
        """The tenants whose content an export of `user` may carry for this requester: all
        (None) for the person themself and for the CLI; otherwise the tenants where the
        requester is a tenant admin."""
        if isinstance(principal, SystemActor) or principal.user_id == user.id:
            return None
        return {
            tenant.id
            for membership, tenant in await privacy_repository.memberships(
                session, principal.user_id
            )
            if membership.role == "admin"
        }

    async def erase(
        self,
        session: AsyncSession,
        principal: Principal | SystemActor,
        *,
        username: str,
        replay: bool = False,
    ) -> DeletionReceipt:
        """Erase a person (a platform admin, or the operator or a restore); the completed
        receipt. 409 for the last active platform admin, 404 for an unknown username.
        `replay`: a restore doing again an erasure done after its backup was taken; it was
        allowed then, so it is done even if the backup's only platform admin is the person.

        Everything happens in the caller's transaction. Once it has committed, call `scrub`
        so that on SQLite the erased bytes also leave the write-ahead log."""
        user = await self._user(session, username)
        if (
            not replay
            and user.is_platform_admin
            and user.is_active
            and await privacy_repository.count_active_platform_admins(session) <= 1
        ):
            raise Conflict(
                "The last platform admin cannot be erased; make another platform admin first",
                code="last_platform_admin",
            )
        user_id, name, subject = user.id, user.username, user.subject
        identity = [v for v in (user.username, user.email) if v]
        commitment = actor_commitment(audit_secret_of(session), user_id, name)
        session.expunge(user)
        receipt = await receipt_service.open(
            session,
            subject_type="user",
            subject_id=user_id,
            tenant_id=None,
            requested_by=principal,
            name=name,
        )
        chat_sessions, chat_messages = await privacy_repository.delete_chat(session, user_id)
        role_rules = await privacy_repository.count_role_rules(session, user_id)
        await authz.revoke_roles(session, user_id=user_id)
        removed = {
            "chat_sessions": chat_sessions,
            "chat_messages": chat_messages,
            "api_keys": await privacy_repository.delete_api_keys(session, user_id),
            "sign_in_sessions": await privacy_repository.delete_sign_in_sessions(session, user_id),
            "memberships": await privacy_repository.delete_memberships(session, user_id),
            "role_rules": role_rules,
            "documents_unlinked": await privacy_repository.unlink_documents(session, user_id),
            "audit_entries_pseudonymised": await audit_service.pseudonymise_actor(session, user_id),
            "users": await privacy_repository.delete_user(session, user_id),
        }
        verification = await self._verify(
            session,
            user_id,
            identity=identity,
            commitment=commitment,
            pseudonymised=removed["audit_entries_pseudonymised"],
        )
        if not verification.passed:
            raise ErasureUnverified(
                f"{ErasureUnverified.message}: {'; '.join(verification.failures)}"
            )
        # Outlives the account and every backup taken before the erasure (app/backup/): a
        # restore of one of those erases the person again before serving.
        await tombstone_service.record(
            session, "user", tenant_id=None, subject_id=user_id, digest=user_digest(subject)
        )
        await receipt_service.complete(
            session,
            receipt,
            removed=removed,
            verification=verification,
            action="user.erase",
            actor=principal,
        )
        if isinstance(principal, Principal) and principal.user_id == user_id:
            # A platform admin erasing their own account: the entry just recorded names them.
            await audit_service.pseudonymise_actor(session, user_id)
        return receipt

    async def scrub(self, database: Database) -> None:
        """After an erasure has committed: empty SQLite's write-ahead log (no-op elsewhere)."""
        if not await database.checkpoint_wal():
            logger.warning(
                "the write-ahead log was not emptied after an erasure (a reader held it); "
                "erased bytes leave it at a later checkpoint"
            )

    async def _user(self, session: AsyncSession, username: str) -> User:
        user = await privacy_repository.user_by_username(session, username.strip().lower())
        if user is None:
            raise ResourceNotFound("User not found")
        return user

    def _audit_entry(self, entry: AuditEntry, user: User) -> ExportAuditEntry:
        # The person sees themself by name; anyone else who acted on them is not named.
        read = AuditEntryRead.of(ShownEntry(entry, shown_actor(entry, {user.id})))
        by_subject = entry.actor_id == user.id
        fields = {name: getattr(read, name) for name in AuditEntryRead.model_fields}
        return ExportAuditEntry(**fields, chain=public_chain(entry.chain), by_subject=by_subject)

    async def _verify(
        self,
        session: AsyncSession,
        user_id: int,
        *,
        identity: list[str],
        commitment: str,
        pseudonymised: int,
    ) -> Verification:
        """Check, in the erasing transaction, that nothing of the person is left."""
        verification = Verification()
        for store, count in (await privacy_repository.remaining(session, user_id)).items():
            verification.check(f"no {store}", count == 0, f"{count} left" if count else "")
        kept = await privacy_repository.pseudonymous_entries(session, commitment)
        verification.check(
            "audit entries keep their commitment",
            kept == pseudonymised,
            f"{kept} of {pseudonymised}",
        )
        tables = await privacy_repository.identity_matches(session, identity)
        verification.check(
            "username and e-mail in no identity column",
            not tables,
            f"found in {', '.join(tables)}" if tables else "",
        )
        return verification


privacy_service = PrivacyService()
