"""The uvicorn configuration `cairn serve` runs (and the live-server tests run, so they test
what is deployed): the bounded HTTP protocol for slow clients, the connection limit, and no
proxy-header handling of uvicorn's own.

uvicorn would otherwise believe `X-Forwarded-For` from 127.0.0.1 and ::1 (its default for
`forwarded_allow_ips`, or whatever FORWARDED_ALLOW_IPS says), so any local process, or any
client of a proxy that passes the header on, names its own address. Cairn reads forwarding
headers in one place, app/kit/forwarded.py, from `server.trusted_proxies` only.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from app.kit.settings import Settings
from app.kit.slow_clients import ConnectionLimits, bounded_protocol

logger = logging.getLogger(__name__)


def server_config(
    app: Any,
    settings: Settings,
    *,
    host: str,
    port: int,
    log_level: str,
    log_config: dict[str, Any] | None = LOGGING_CONFIG,
) -> uvicorn.Config:
    """uvicorn's Config for serving `app` with `settings.server`'s bounds."""
    server = settings.server
    if os.environ.get("FORWARDED_ALLOW_IPS"):
        logger.warning(
            "FORWARDED_ALLOW_IPS is ignored: list reverse proxies in CAIRN_SERVER__TRUSTED_PROXIES"
        )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=log_config,
        # app.kit.request_context writes the access line (with the request id) instead.
        access_log=False,
        http=bounded_protocol(ConnectionLimits.from_settings(server)),
        # Off: app.kit.forwarded applies server.trusted_proxies. The list is passed anyway so
        # that uvicorn's default (loopback) can never apply, should the switch be turned on.
        proxy_headers=False,
        forwarded_allow_ips=list(server.trusted_proxies),
        limit_concurrency=server.max_connections,
        lifespan="on",
    )
