"""API key queries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import APIKey


class APIKeyRepository:
    async def get_by_hash(self, session: AsyncSession, key_hash: str) -> APIKey | None:
        return await session.scalar(select(APIKey).where(APIKey.key_hash == key_hash))

    async def get_owned(self, session: AsyncSession, user_id: int, key_id: int) -> APIKey | None:
        return await session.scalar(
            select(APIKey).where(APIKey.id == key_id, APIKey.user_id == user_id)
        )

    async def list_owned(self, session: AsyncSession, user_id: int) -> Sequence[APIKey]:
        result = await session.scalars(
            select(APIKey).where(APIKey.user_id == user_id).order_by(APIKey.id)
        )
        return result.all()

    def add(self, session: AsyncSession, key: APIKey) -> APIKey:
        session.add(key)
        return key

    async def revoke_all_owned(self, session: AsyncSession, user_id: int, *, now: datetime) -> int:
        """Revoke every unrevoked key of the user; how many were revoked."""
        result = await session.execute(
            update(APIKey)
            .where(APIKey.user_id == user_id, APIKey.revoked_at.is_(None))
            .values(revoked_at=now)
            .returning(APIKey.id)
        )
        return len(result.all())


api_key_repository = APIKeyRepository()
