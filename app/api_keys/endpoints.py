from __future__ import annotations

from fastapi import APIRouter, Response

from app.api_keys.repository import api_key_repository
from app.api_keys.schemas import APIKeyCreate, APIKeyCreated, APIKeyRead
from app.api_keys.service import api_key_service
from app.kit.auth import InteractivePrincipal
from app.kit.db import ReadSession, Session
from app.kit.public_ids import APIKeyRef

router = APIRouter(prefix="/api/v1/api-keys", tags=["api-keys"])

# Every route here takes an interactive sign-in (a JWT), never an API key: a key that could
# mint keys would outlive its own expiry and revocation through its children, and one that
# could list and revoke its owner's other keys could lock the owner's integrations out.


@router.post("", status_code=201, response_model=APIKeyCreated)
async def create_api_key(
    principal: InteractivePrincipal, session: Session, data: APIKeyCreate | None = None
) -> APIKeyCreated:
    key, plaintext = await api_key_service.create(session, principal, data or APIKeyCreate())
    return APIKeyCreated(**dict(APIKeyRead.model_validate(key)), key=plaintext)


@router.get("", response_model=list[APIKeyRead])
async def list_api_keys(principal: InteractivePrincipal, session: ReadSession) -> list[APIKeyRead]:
    keys = await api_key_repository.list_owned(session, principal.user_id)
    return [APIKeyRead.model_validate(k) for k in keys]


@router.delete("/{key_id}", status_code=204)
async def revoke_api_key(
    key_id: APIKeyRef, principal: InteractivePrincipal, session: Session
) -> Response:
    await api_key_service.revoke(session, principal, key_id)
    return Response(status_code=204)
