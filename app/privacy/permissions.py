"""Who may export or erase a person's data.

Both hand out or destroy everything about an account, so both need an interactive sign-in
(a password, not an API key): a leaked key must not be able to download a person's chats or
erase anyone. Export: the person themself, or a platform admin for anyone; for anyone else
the answer is 403 whether or not the username exists. A platform admin's export carries a
tenant's content only where they are that tenant's admin (app/privacy/service.py). Erase:
platform admins only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query

from app.kit import authz
from app.kit.auth import InteractivePrincipal
from app.kit.authz import CurrentEnforcer, PlatformAuthorizer
from app.kit.errors import NotPermitted
from app.kit.principal import Principal


@dataclass(frozen=True)
class ExportGrant:
    principal: Principal
    username: str


async def _exporter(
    username: Annotated[str, Query(min_length=1, max_length=64)],
    principal: InteractivePrincipal,
    enforcer: CurrentEnforcer,
) -> ExportGrant:
    name = username.strip().lower()
    if name != principal.username and not enforcer.allowed(
        principal.user_id, authz.PLATFORM_DOMAIN, "privacy", "export"
    ):
        raise NotPermitted()
    return ExportGrant(principal, name)


async def _eraser(
    principal: Annotated[Principal, Depends(PlatformAuthorizer("privacy", "erase"))],
    _: InteractivePrincipal,
) -> Principal:
    return principal


PrivacyExporter = Annotated[ExportGrant, Depends(_exporter)]
PrivacyEraser = Annotated[Principal, Depends(_eraser)]
