"""Models of the OpenAI-compatible API: one per tenant the caller may chat in, named
`cairn:<tenant-slug>`."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.authz import Enforcer, TenantAccess, domain_of, tenant_access
from app.kit.errors import NotPermitted, ResourceNotFound
from app.kit.principal import Principal
from app.openai_compat.schemas import ModelCard, ModelList
from app.tenants.repository import tenant_repository

MODEL_PREFIX = "cairn:"
CHAT_PERMISSION = ("chat", "ask")


class ModelNotFound(ResourceNotFound):
    code = "model_not_found"
    message = "The model does not exist or you do not have access to it"


class ModelService:
    async def models(
        self, session: AsyncSession, principal: Principal, enforcer: Enforcer
    ) -> ModelList:
        """One model per tenant the caller may chat in."""
        rows = await session.execute(
            tenant_repository.readable_statement(principal).order_by("slug")
        )
        cards = [
            ModelCard(id=MODEL_PREFIX + tenant.slug, created=int(tenant.created_at.timestamp()))
            for tenant, _role in rows
            if enforcer.allowed(principal.user_id, domain_of(tenant.id), *CHAT_PERMISSION)
        ]
        return ModelList(data=cards)

    async def access(
        self, session: AsyncSession, principal: Principal, enforcer: Enforcer, *, model: str
    ) -> TenantAccess:
        """The caller's chat access to the model's tenant; an unknown model and a tenant you
        have no chat role in both answer 404 model_not_found, so neither leaks existence."""
        if not model.startswith(MODEL_PREFIX) or len(model) == len(MODEL_PREFIX):
            raise ModelNotFound(
                f"Unknown model {model[:100]!r}: Cairn's models are named cairn:<tenant-slug>; "
                "GET /v1/models lists yours"
            )
        obj, act = CHAT_PERMISSION
        try:
            return await tenant_access(
                session, principal, enforcer, slug=model[len(MODEL_PREFIX) :], obj=obj, act=act
            )
        except (ResourceNotFound, NotPermitted) as exc:
            raise ModelNotFound() from exc


model_service = ModelService()
