"""API keys: created for the calling user, shown once, stored hashed, revocable."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys.repository import api_key_repository
from app.api_keys.schemas import APIKeyCreate
from app.audit.service import audit_service
from app.kit.errors import ResourceNotFound
from app.kit.principal import Principal
from app.kit.security import generate_api_key, hash_api_key
from app.models import APIKey
from app.models.base import utcnow


class APIKeyService:
    async def create(
        self, session: AsyncSession, principal: Principal, data: APIKeyCreate
    ) -> tuple[APIKey, str]:
        """A new key for the caller; returns the row and the plaintext key."""
        plaintext = generate_api_key()
        now = utcnow()
        key = api_key_repository.add(
            session,
            APIKey(
                user_id=principal.user_id,
                name=data.name,
                prefix=plaintext[:12],
                key_hash=hash_api_key(plaintext),
                created_at=now,
                expires_at=(
                    now + timedelta(days=data.expires_in_days) if data.expires_in_days else None
                ),
            ),
        )
        await session.flush()
        await audit_service.record(
            session,
            action="api_key.create",
            actor=principal,
            target_type="api_key",
            target_id=key.id,
        )
        return key, plaintext

    async def revoke(self, session: AsyncSession, principal: Principal, key_id: int) -> None:
        """Revoke one of the caller's keys; someone else's key answers 404."""
        key = await api_key_repository.get_owned(session, principal.user_id, key_id)
        if key is None:
            raise ResourceNotFound("API key not found")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            await audit_service.record(
                session,
                action="api_key.revoke",
                actor=principal,
                target_type="api_key",
                target_id=key.id,
            )


api_key_service = APIKeyService()
