"""Sign-in sessions: the rows that tokens and browser cookies name, and their ending."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AuthSession, User

# Ended and expired sessions are kept this long (for "signed out" to stay a 401 rather than
# look like a forged token in logs), then removed when someone signs in.
_KEEP_ENDED = timedelta(days=1)


class AuthSessionRepository:
    async def start(
        self, session: AsyncSession, *, user_id: int, kind: str, expires_at: datetime
    ) -> AuthSession:
        """A new live sign-in session for the user."""
        row = AuthSession(user_id=user_id, kind=kind, expires_at=expires_at)
        session.add(row)
        await session.flush()
        return row

    async def live(
        self, session: AsyncSession, *, handle: str, subject: str, now: datetime
    ) -> tuple[AuthSession, User] | None:
        """The session `handle` and its user, when the session is live and belongs to the
        account whose subject is `subject`; None otherwise."""
        row = (
            await session.execute(
                select(AuthSession, User)
                .join(User, User.id == AuthSession.user_id)
                .where(
                    AuthSession.handle == handle,
                    AuthSession.ended_at.is_(None),
                    AuthSession.expires_at > now,
                    User.subject == subject,
                )
            )
        ).first()
        return None if row is None else (row[0], row[1])

    async def end(
        self, session: AsyncSession, session_id: int, *, reason: str, now: datetime
    ) -> bool:
        """End one session; whether it was live."""
        result = await session.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id, AuthSession.ended_at.is_(None))
            .values(ended_at=now, end_reason=reason)
        )
        return bool(getattr(result, "rowcount", 0))

    async def end_all(
        self, session: AsyncSession, user_id: int, *, reason: str, now: datetime
    ) -> int:
        """End every live session of a user; how many."""
        result = await session.execute(
            update(AuthSession)
            .where(AuthSession.user_id == user_id, AuthSession.ended_at.is_(None))
            .values(ended_at=now, end_reason=reason)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def count_live(self, session: AsyncSession, user_id: int, *, now: datetime) -> int:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(AuthSession)
                .where(
                    AuthSession.user_id == user_id,
                    AuthSession.ended_at.is_(None),
                    AuthSession.expires_at > now,
                )
            )
            or 0
        )

    async def prune(self, session: AsyncSession, *, now: datetime) -> None:
        """Remove sessions that expired or ended more than a day ago."""
        cutoff = now - _KEEP_ENDED
        await session.execute(
            delete(AuthSession).where(
                (AuthSession.expires_at < cutoff) | (AuthSession.ended_at < cutoff)
            )
        )


auth_session_repository = AuthSessionRepository()
