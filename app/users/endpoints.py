from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.kit.auth import CurrentPrincipal
from app.kit.authz import PlatformAuthorizer
from app.kit.db import ReadSession, Session
from app.kit.errors import ResourceNotFound
from app.kit.pagination import Page, Pagination
from app.kit.principal import Principal
from app.users.repository import user_repository
from app.users.schemas import Me, UserCreate, UserRead
from app.users.service import user_service

router = APIRouter(prefix="/api/v1/users", tags=["users"])

UsersCreate = Annotated[Principal, Depends(PlatformAuthorizer("users", "create"))]
UsersRead = Annotated[Principal, Depends(PlatformAuthorizer("users", "read"))]


@router.post("", status_code=201, response_model=UserRead)
async def create_user(data: UserCreate, principal: UsersCreate, session: Session) -> UserRead:
    user = await user_service.create(session, principal, data)
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
    return Me(**UserRead.model_validate(user).model_dump(), memberships=memberships)
