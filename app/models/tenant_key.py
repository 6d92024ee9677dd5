from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class TenantKey(Base):
    """A tenant's data key, only ever stored wrapped by the KEK (app/kit/kek.py). Deleting
    the row is the crypto-shred: nothing sealed under the key can be read again."""

    __tablename__ = "tenant_keys"

    tenant_id: Mapped[int] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    # Which KEK wrapped it (a hash, app/kit/kek.py): a wrong KEK is named as such.
    kek_fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    wrapped_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Rotation (app/crypto/rotation.py): new data is sealed under `generation`; until the
    # tenant is re-encrypted the previous key stays here, wrapped, and is then deleted.
    generation: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    retired_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    retired_generation: Mapped[int | None] = mapped_column(Integer)
    rotated_at: Mapped[datetime | None] = mapped_column()
