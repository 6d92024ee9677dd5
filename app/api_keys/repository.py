"""API key queries."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
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


api_key_repository = APIKeyRepository()
