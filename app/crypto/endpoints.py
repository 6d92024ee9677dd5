"""The platform admin's view of a tenant's data key: which generation is in force, and a
rotation (the new key at once, the re-encryption queued for the workers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from pydantic import BaseModel

from app.container import container_of
from app.crypto.rotation import key_state, request_rotation
from app.kit.authz import Authorizer, TenantAccess
from app.kit.errors import Conflict

router = APIRouter(prefix="/api/v1/tenants", tags=["encryption"])

KeysRotate = Annotated[TenantAccess, Depends(Authorizer("tenants", "rotate_key"))]


class TenantKeyRead(BaseModel):
    enabled: bool  # encryption.enabled: new data is sealed
    generation: int  # of the key new data is sealed under; 0: no key yet
    rotating: bool  # older data is still being re-encrypted under it


@router.get("/{tenant}/encryption", response_model=TenantKeyRead)
async def get_key(access: KeysRotate, request: Request) -> TenantKeyRead:
    """The tenant's data-key generation and whether a rotation is still running (platform
    admin; no key material, no counts)."""
    runtime = container_of(request)
    state = await key_state(runtime, access.tenant.id)
    return TenantKeyRead(
        enabled=runtime.keyring.enabled, generation=state.generation, rotating=state.rotating
    )


@router.post("/{tenant}/encryption/rotate-key", status_code=202, response_model=TenantKeyRead)
async def rotate_key(
    access: KeysRotate, request: Request, background: BackgroundTasks
) -> TenantKeyRead:
    """Give the tenant a new data key: new data is sealed under it from this response on, the
    rest is re-encrypted in the background and then the old key is destroyed (platform admin;
    audited). Asked again while one runs, it reports that one."""
    runtime = container_of(request)
    if not runtime.keyring.enabled:
        raise Conflict(
            "Encryption at rest is off (CAIRN_ENCRYPTION__ENABLED): new data would not be "
            "sealed under a new key",
            code="encryption_off",
        )
    if (await key_state(runtime, access.tenant.id)).generation == 0:
        raise Conflict("This tenant has no data key yet: nothing is sealed", code="no_data_key")
    generation, job = await request_rotation(runtime, access.principal, access.tenant.id)
    background.add_task(container_of(request).dispatcher.enqueue, job.id)
    return TenantKeyRead(enabled=True, generation=generation, rotating=True)
