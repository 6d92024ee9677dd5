from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from app.kit.auth import AppSettings, CurrentPrincipal, InteractivePrincipal
from app.kit.authz import PlatformAuthorizer
from app.kit.bounds import UsernamePath
from app.kit.db import ReadSession, Session
from app.kit.errors import ResourceNotFound
from app.kit.pagination import Page, Pagination
from app.kit.principal import Principal
from app.kit.ratelimit import ClientAddress, SignInThrottle
from app.users.passwords import AppPasswordPolicy
from app.users.repository import user_repository
from app.users.schemas import (
    Me,
    PasswordChange,
    PasswordChanged,
    PasswordReset,
    UserCreate,
    UserRead,
    UserUpdate,
)
from app.users.service import user_service

router = APIRouter(prefix="/api/v1/users", tags=["users"])

UsersCreate = Annotated[Principal, Depends(PlatformAuthorizer("users", "create"))]
UsersRead = Annotated[Principal, Depends(PlatformAuthorizer("users", "read"))]
UsersResetPassword = Annotated[Principal, Depends(PlatformAuthorizer("users", "reset_password"))]
UsersDisable = Annotated[Principal, Depends(PlatformAuthorizer("users", "disable"))]


@router.post("", status_code=201, response_model=UserRead)
async def create_user(
    data: UserCreate, principal: UsersCreate, session: Session, policy: AppPasswordPolicy
) -> UserRead:
    user = await user_service.create(session, principal, data, policy=policy)
    return UserRead.model_validate(user)


@router.get("", response_model=Page[UserRead])
async def list_users(
    principal: UsersRead, session: ReadSession, page: Pagination
) -> Page[UserRead]:
    users = await user_repository.list(session, limit=page.limit, offset=page.offset)
    total = await user_repository.count(session)
    return Page(
        items=[UserRead.model_validate(u) for u in users],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/me", response_model=Me)
async def me(principal: CurrentPrincipal, session: ReadSession) -> Me:
    user = await user_repository.get(session, principal.user_id)
    if user is None:
        raise ResourceNotFound()
    memberships = await user_service.memberships(session, user.id)
    return Me(**dict(UserRead.model_validate(user)), memberships=memberships)


# Declared before /{username}/password, so "me" means the caller here.
@router.post("/me/password", response_model=PasswordChanged)
async def change_password(
    data: PasswordChange,
    principal: InteractivePrincipal,
    session: Session,
    settings: AppSettings,
    throttle: SignInThrottle,
    address: ClientAddress,
) -> PasswordChanged:
    token = await user_service.change_password(
        session, principal, data, settings=settings, throttle=throttle, address=address
    )
    return PasswordChanged(access_token=token, expires_in=settings.jwt_ttl_minutes * 60)


@router.post("/{username}/password", status_code=204)
async def reset_password(
    username: UsernamePath,
    data: PasswordReset,
    principal: UsersResetPassword,
    session: Session,
    policy: AppPasswordPolicy,
) -> Response:
    await user_service.reset_password(
        session, principal, username, data.new_password, policy=policy
    )
    return Response(status_code=204)


@router.patch("/{username}", response_model=UserRead)
async def update_user(
    username: UsernamePath, data: UserUpdate, principal: UsersDisable, session: Session
) -> UserRead:
    """Disable or re-enable an account (platform admin)."""
    user = await user_service.set_active(session, principal, username, active=data.is_active)
    return UserRead.model_validate(user)
