from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from app.kit.public_ids import UserId

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,63}$"


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=USERNAME_PATTERN)
    # Length and the rest of the policy are checked by app.users.passwords (422 weak_password).
    password: str = Field(max_length=256)
    email: EmailStr | None = None
    is_platform_admin: bool = False

    @field_validator("username")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class MembershipRead(BaseModel):
    tenant: str
    tenant_name: str
    role: str


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UserId
    username: str
    email: str | None
    is_platform_admin: bool
    is_active: bool
    created_at: datetime


class Me(UserRead):
    memberships: list[MembershipRead]


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class UserUpdate(BaseModel):
    """What a platform admin changes on an account: disable (every credential stops working at
    once, kept for re-enabling) or enable it."""

    model_config = ConfigDict(extra="forbid")

    is_active: bool


class PasswordReset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    new_password: str = Field(max_length=1024)


class PasswordChanged(BaseModel):
    """A fresh access token: the change revoked every token issued before it."""

    access_token: str
    token_type: str = "bearer"
    expires_in: int
