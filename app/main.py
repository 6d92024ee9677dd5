"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from app.api_keys.endpoints import router as api_keys_router
from app.audit.endpoints import router as audit_router
from app.auth.endpoints import router as auth_router
from app.chat.endpoints import router as chat_router
from app.container import AppState, Container
from app.crypto.endpoints import router as encryption_router
from app.documents.chunk_endpoints import router as chunks_router
from app.documents.endpoints import router as documents_router
from app.documents.service import document_service
from app.feedback.endpoints import router as feedback_router
from app.health.endpoints import router as health_router
from app.jobs.dispatch import PollingDispatcher
from app.kit.authz import sync_role_permissions
from app.kit.db import Database
from app.kit.errors import install_error_handlers
from app.kit.files import secure_data_dir
from app.kit.forwarded import ForwardedHeaders
from app.kit.headers import SecurityHeaders
from app.kit.limits import BodySizeLimit
from app.kit.metrics import MetricsMiddleware
from app.kit.public_ids import configure_public_ids
from app.kit.request_context import RequestContextMiddleware
from app.kit.security import configure_password_hashing
from app.kit.settings import Settings, get_settings
from app.kit.slow_clients import BodyReadTimeout
from app.knowledge_base.endpoints import router as knowledge_base_router
from app.openai_compat.endpoints import router as openai_router
from app.privacy.endpoints import router as privacy_router
from app.receipts.endpoints import router as receipts_router
from app.search.endpoints import router as search_router
from app.search.index.tokenize import load_segmenter
from app.tenants.endpoints import router as tenants_router
from app.users.endpoints import router as users_router
from app.users.passwords import PasswordPolicy
from app.users.service import user_service
from app.web import install_web

logger = logging.getLogger("cairn")


async def bootstrap(database: Database, settings: Settings) -> tuple[str, str] | None:
    """Sync role permissions; on an empty database create the first platform admin."""
    async with database.sessionmaker() as session, session.begin():
        await sync_role_permissions(session)
        return await user_service.ensure_initial_admin(
            session, settings.admin_password, policy=PasswordPolicy.from_settings(settings)
        )


def announce_initial_admin(username: str, password: str, settings: Settings) -> None:
    """Tell the operator about the first admin; only a generated password is shown."""
    if settings.admin_password:
        # The operator chose it (CAIRN_ADMIN_PASSWORD): echoing it would only copy a secret
        # into terminal scrollback and service logs.
        message = (
            f"\n  Created platform admin '{username}' with the configured password "
            "(CAIRN_ADMIN_PASSWORD).\n"
        )
    else:
        # Printed once, to the operator's console; it is never stored in clear.
        message = (
            f"\n  Created platform admin '{username}' with password: {password}\n"
            "  Log in and change it; it will not be shown again.\n"
        )
    print(message, flush=True)  # noqa: T201


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. The database must already be migrated (cairn serve does that)."""
    settings = settings or get_settings()
    configure_password_hashing(
        time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib
    )
    configure_public_ids(settings.secret("audit_secret"))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # First, before the database, the content store or an index writes anything:
        # everything under data_dir is tenant-private (0700 directories, 0600 files).
        secure_data_dir(settings.data_dir, settings.resolved_database_url)
        container: Container = app.state.container
        # Built now, not on the first search: the embedded workers' new shard versions reach
        # searches from memory, not disk (and a configured reranker loads at start).
        container.retriever  # noqa: B018
        await asyncio.to_thread(load_segmenter)
        created = await bootstrap(container.database, settings)
        # Every tenant gets its data key now, not inside a request (app/crypto/keyring.py).
        await container.keyring.ensure_keys()
        # Blobs written before files were kept per tenant move under their tenants once.
        await document_service.relocate_legacy_blobs(container.database, container.store)
        if created is not None:
            announce_initial_admin(*created, settings)
        if isinstance(container.dispatcher, PollingDispatcher) and settings.embedded_workers:
            await container.start_workers()
        # Started last: the preparation (minutes on a first start) runs beside the serving
        # process, and its threads do not slow the start-up steps above.
        preloading = (
            asyncio.create_task(container.generator.preload())
            if settings.generator.preload
            else None
        )
        container.serving = True
        try:
            yield
        finally:
            if preloading is not None and not preloading.done():
                # The load runs in a thread and cannot be interrupted; do not wait for it.
                preloading.cancel()
            # Stops the worker pool, then closes the cache and the database.
            await container.close()

    docs = settings.api_docs
    app = FastAPI(
        title="Cairn",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    # One attribute: the container, started and closed by the lifespan (the older names,
    # app.state.database and the like, are aliases onto it).
    app.state = AppState()
    app.state.container = Container.for_api(settings)
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware)
    if settings.cors_origins:
        # Bearer tokens, not cookies: no credentials mode needed.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    # Multipart framing adds a little on top of the file itself.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + 64 * 1024)
    # A body trickled in too slowly is cut with 408 (headers are bounded by cairn serve's
    # protocol, app/kit/slow_clients.py).
    app.add_middleware(
        BodyReadTimeout,
        timeout=settings.server.body_timeout_seconds,
        min_bytes_per_second=settings.server.body_min_bytes_per_second,
    )
    # The web admin at `/` (the API stays under /api and /v1); inside the security headers.
    install_web(app, settings)
    # Added late, so outer: the 413 above and CORS answers get the headers too.
    app.add_middleware(SecurityHeaders)
    # Outermost that answers: every response carries X-Request-ID and every request writes
    # its log line.
    app.add_middleware(RequestContextMiddleware)
    # Outside everything (it only rewrites the scope): the client's address and scheme, from
    # configured proxies only.
    app.add_middleware(ForwardedHeaders, trusted_proxies=settings.server.trusted_proxies)
    for router in (
        health_router,
        auth_router,
        users_router,
        api_keys_router,
        tenants_router,
        documents_router,
        chunks_router,
        knowledge_base_router,
        search_router,
        chat_router,
        feedback_router,
        openai_router,
        audit_router,
        encryption_router,
        receipts_router,
        privacy_router,
    ):
        app.include_router(router)
    return app
