"""User queries."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Membership, Tenant, User


class UserRepository:
    async def get(self, session: AsyncSession, user_id: int) -> User | None:
        return await session.get(User, user_id)

    async def get_by_username(self, session: AsyncSession, username: str) -> User | None:
        return await session.scalar(select(User).where(User.username == username))

    async def count(self, session: AsyncSession) -> int:
        return int(await session.scalar(select(func.count()).select_from(User)) or 0)

    async def list(self, session: AsyncSession, *, limit: int, offset: int) -> Sequence[User]:
        result = await session.scalars(select(User).order_by(User.id).limit(limit).offset(offset))
        return result.all()

    async def memberships(
        self, session: AsyncSession, user_id: int
    ) -> Sequence[tuple[Tenant, str]]:
        result = await session.execute(
            select(Tenant, Membership.role)
            .join(Membership, Membership.tenant_id == Tenant.id)
            .where(Membership.user_id == user_id)
            .order_by(Tenant.slug)
        )
        return [(tenant, role) for tenant, role in result]

    def add(self, session: AsyncSession, user: User) -> User:
        session.add(user)
        return user

    async def set_password(self, session: AsyncSession, user_id: int, password_hash: str) -> int:
        """Store a new password hash and bump token_version in one statement; the new version.

        The increment happens in SQL, so two concurrent changes cannot both land on the same
        version (and leave a token of the first one valid).
        """
        version = await session.scalar(
            update(User)
            .where(User.id == user_id)
            .values(password_hash=password_hash, token_version=User.token_version + 1)
            .returning(User.token_version)
        )
        if version is None:
            raise LookupError(f"no user {user_id}")
        return int(version)


user_repository = UserRepository()
