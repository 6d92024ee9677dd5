"""Sign-in throttling (failed password attempts per username and per client address) and
per-caller quotas (searches, chat questions, uploads counted in files and in bytes).

Counters live in a `limits` storage: process memory by default, Redis when `redis_url` is set
(then every API process shares them). Each key has a moving window: an attempt is refused while
the failures recorded in the last window reach the limit, and `Retry-After` is the time until
the oldest of them leaves it. Keys are HMACs of the username or address, so the store never
holds what someone typed into the username field (sometimes a password).

Invariant: callers check before hashing any password and record only failures. Concurrent
attempts that all pass the check before any of them fails can overshoot a limit by the number
in flight; the bound still holds per window.

Quotas are counted per authenticated user — signed in with a JWT or calling with one of their
API keys, which share their budget (never anything the request merely claims, such as an
address or a header) — in each tenant, by the role the user holds there (`[quotas]`); only
admitted requests count, and a refusal says when to come back (and, for uploads, how to import
more at once). The upload defaults are sized for a department's first import of its folder: the
quota stops a runaway script, not a bulk import; `cairn ingest` runs as the operator, outside
any HTTP quota.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from typing import Annotated, Literal

import limits
from fastapi import Depends, Request
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from limits.errors import StorageError

from app.kit.authz import TenantAccess
from app.kit.errors import RateLimited, ServiceUnavailable
from app.kit.forwarded import parse_address
from app.kit.metrics import RATE_LIMIT_REJECTIONS
from app.kit.principal import Principal
from app.kit.security import keyed_digest
from app.kit.settings import (
    QuotaAction,
    QuotaSettings,
    Settings,
    parse_byte_quota,
    parse_quota,
)

logger = logging.getLogger(__name__)

Scope = Literal["username", "address"]

_REDIS_KEY_PREFIX = "cairn-signin"
_QUOTA_KEY_PREFIX = "cairn-quota"


def _storage(settings: Settings, key_prefix: str) -> Storage:
    """Memory storage, or Redis when `redis_url` is set."""
    if settings.redis_url:
        return RedisStorage(
            f"async+{settings.redis_url}",
            implementation="redispy",
            key_prefix=key_prefix,
            wrap_exceptions=True,
        )
    return MemoryStorage()


@dataclass(frozen=True)
class Throttled:
    """Why an attempt is refused."""

    scopes: tuple[Scope, ...]
    # Whole seconds until one more attempt is allowed under every limit that refused.
    retry_after: int
    # The first refusal of one of these keys in this window: the caller audits it, and only it,
    # so refused attempts cannot grow the audit log without bound.
    first: bool


class LoginThrottle:
    """Per-username and per-address budgets of failed sign-ins."""

    def __init__(
        self,
        storage: Storage,
        *,
        per_username: limits.RateLimitItem,
        per_address: limits.RateLimitItem,
        key_secret: str,
    ) -> None:
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)
        self._limits: dict[Scope, limits.RateLimitItem] = {
            "username": per_username,
            "address": per_address,
        }
        # One refusal notice per key and window: a limit of 1 whose hit succeeds only once.
        self._notices: dict[Scope, limits.RateLimitItem] = {
            scope: type(item)(1, item.multiples, namespace="NOTICE")
            for scope, item in self._limits.items()
        }
        self._key_secret = key_secret

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginThrottle:
        """Memory storage, or Redis when `redis_url` is set."""
        return cls(
            _storage(settings, _REDIS_KEY_PREFIX),
            per_username=limits.parse(settings.auth.login_failures_per_username),
            per_address=limits.parse(settings.auth.login_failures_per_address),
            key_secret=settings.secret("jwt_secret"),
        )

    def _keys(self, username: str, address: str | None) -> list[tuple[Scope, str]]:
        keys: list[tuple[Scope, str]] = [
            ("username", keyed_digest(self._key_secret, "username:" + username.strip().lower()))
        ]
        if address:
            keys.append(("address", keyed_digest(self._key_secret, "address:" + address)))
        return keys

    async def check(self, *, username: str, address: str | None) -> Throttled | None:
        """None when an attempt may go ahead; otherwise which limits refuse it and for how long."""
        scopes: list[Scope] = []
        retry_after = 0
        first = False
        try:
            for scope, key in self._keys(username, address):
                item = self._limits[scope]
                if await self._limiter.test(item, key):
                    continue
                stats = await self._limiter.get_window_stats(item, key)
                scopes.append(scope)
                retry_after = max(retry_after, math.ceil(stats.reset_time - time.time()), 1)
                if await self._limiter.hit(self._notices[scope], key):
                    first = True
        except StorageError as exc:
            raise _unavailable() from exc
        if not scopes:
            return None
        for scope in scopes:
            RATE_LIMIT_REJECTIONS.labels(f"signin_{scope}").inc()
        return Throttled(scopes=tuple(scopes), retry_after=retry_after, first=first)

    async def failed(self, *, username: str, address: str | None) -> None:
        """Count a failed attempt against the username and the address.

        Successful sign-ins are not counted, for the address either: many people share one
        address behind a NAT or proxy, and counting their successes would lock an office out on
        a busy morning, while guessing passwords produces failures.
        """
        try:
            for scope, key in self._keys(username, address):
                await self._limiter.hit(self._limits[scope], key)
        except StorageError as exc:
            raise _unavailable() from exc


class Quotas:
    """Searches, chat questions and uploads (files and bytes) per caller, tenant and window, by
    role."""

    def __init__(self, storage: Storage, settings: QuotaSettings, *, key_secret: str) -> None:
        self._limiter = MovingWindowRateLimiter(storage)
        # Bytes cost thousands per hit: a moving window keeps one entry per unit counted, a
        # sliding-window counter two numbers per window, close enough for a byte budget.
        self._bytes_limiter = SlidingWindowCounterRateLimiter(storage)
        self._settings = settings
        self._key_secret = key_secret
        self._parsed: dict[tuple[str, bool], list[limits.RateLimitItem]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Quotas:
        """Counters in memory, or in Redis (shared by every API process) when configured."""
        return cls(
            _storage(settings, _QUOTA_KEY_PREFIX),
            settings.quotas,
            key_secret=settings.secret("jwt_secret"),
        )

    def _limits(self, text: str, *, in_bytes: bool = False) -> list[limits.RateLimitItem]:
        parsed = self._parsed.get((text, in_bytes))
        if parsed is None:
            parsed = parse_byte_quota(text) if in_bytes else parse_quota(text)
            self._parsed[(text, in_bytes)] = parsed
        return parsed

    def _counters(
        self, action: QuotaAction, role: str | None, key: str, size: int
    ) -> list[_Counter]:
        text = self._settings.quota(role, action)
        counters = [_Counter(self._limiter, item, key, 1, text) for item in self._limits(text)]
        if action == "upload":
            text = self._settings.quota(role, "upload_bytes")
            for item in self._limits(text, in_bytes=True):
                # A file larger than a whole window's budget still goes once the window is
                # empty rather than never.
                cost = min(max(size, 1), item.amount)
                counters.append(
                    _Counter(self._bytes_limiter, item, key + ":bytes", cost, f"{text} of files")
                )
        return counters

    async def charge(self, access: TenantAccess, action: QuotaAction, *, size: int = 0) -> None:
        """`spend` for the caller of a tenant request."""
        await self.spend(
            action, access.principal, tenant_id=access.tenant_id, role=access.role, size=size
        )

    async def spend(
        self,
        action: QuotaAction,
        principal: Principal,
        *,
        tenant_id: int,
        role: str | None,
        size: int = 0,
    ) -> None:
        """Count one `action` of the principal in the tenant, where it holds `role` (an upload
        also counts its `size` in bytes), or raise RateLimited (429 with Retry-After and what
        to do) when any window of the role's quota is used up; nothing is counted then."""
        if not self._settings.enabled:
            return
        if role is None and principal.is_platform_admin:
            role = "platform_admin"
        # The user, also behind an API key: counting per key would let anyone multiply their
        # quota by minting keys. Keyed (HMAC) like the sign-in counters: ids of another
        # deployment sharing the Redis database never meet these, and the store does not list
        # who used what.
        key = keyed_digest(self._key_secret, f"quota:{action}:{tenant_id}:{principal.user_id}")
        counters = self._counters(action, role, key, size)
        if not counters:
            return
        refused: list[str] = []
        try:
            retry_after = 0
            for counter in counters:
                if not await counter.limiter.test(counter.item, counter.key, cost=counter.cost):
                    retry_after = max(retry_after, await counter.wait())
                    refused.append(counter.text)
            if not retry_after:
                for counter in counters:
                    if not await counter.limiter.hit(counter.item, counter.key, cost=counter.cost):
                        # Used up by a concurrent request since the test above.
                        retry_after = max(retry_after, await counter.wait())
                        refused.append(counter.text)
        except StorageError as exc:
            # Fail open: quotas share out capacity, they guard no secret, and a Redis outage
            # should not take search and chat down with it (sign-in, above, fails closed).
            logger.warning("quota store unavailable, %s not counted: %s", action, exc)
            return
        if retry_after:
            RATE_LIMIT_REJECTIONS.labels(f"quota_{action}").inc()
            limit = "; ".join(dict.fromkeys(refused))
            raise RateLimited(
                f"{_NOUNS[action]} quota used up ({limit} for your role in this tenant); "
                f"try again in {retry_after} seconds{_WAY_OUT[action]}",
                headers={"Retry-After": str(retry_after)},
                details={"quota": action, "retry_after": retry_after, "limit": limit},
            )


@dataclass(frozen=True)
class _Counter:
    """One window of a quota: what counts it, under which key, at what cost per request."""

    limiter: MovingWindowRateLimiter | SlidingWindowCounterRateLimiter
    item: limits.RateLimitItem
    key: str
    cost: int
    # The configured quota, for the refusal.
    text: str

    async def wait(self) -> int:
        """Whole seconds until this window takes the cost again, at least 1."""
        stats = await self.limiter.get_window_stats(self.item, self.key)
        return max(math.ceil(stats.reset_time - time.time()), 1)


_NOUNS: dict[QuotaAction, str] = {
    "search": "Search",
    "chat": "Chat",
    "upload": "Upload",
}

# What else a refused caller can do, besides waiting.
_WAY_OUT: dict[QuotaAction, str] = {
    "search": "",
    "chat": "",
    "upload": (
        ". To import more at once: a tenant admin's uploads are not limited by default, "
        "`cairn ingest FOLDER --tenant SLUG` on the server is not counted against any quota, "
        "and the operator can raise [quotas] upload and upload_bytes"
    ),
}


def _unavailable() -> ServiceUnavailable:
    # Fail closed: without its counters the throttle cannot tell a guesser from a person.
    return ServiceUnavailable("Sign-in is unavailable: the rate-limit store does not answer")


def login_throttle_of(request: Request) -> LoginThrottle:
    """The app's sign-in throttle."""
    throttle: LoginThrottle = request.app.state.container.login_throttle
    return throttle


def client_address(request: Request) -> str | None:
    """The address the sign-in throttle counts the caller under.

    The connection's peer, or the client a configured proxy names (app/kit/forwarded.py sets
    `request.client`; no request header is read here). An IPv6 caller counts as its /64: one
    host is usually given a whole /64, and counting single addresses would let it rotate
    through them.
    """
    host = request.client.host if request.client else None
    address = parse_address(host) if host else None
    if address is None:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def quotas_of(request: Request) -> Quotas:
    """The app's per-caller quotas."""
    quotas: Quotas = request.app.state.container.quotas
    return quotas


SignInThrottle = Annotated[LoginThrottle, Depends(login_throttle_of)]
CallerQuotas = Annotated[Quotas, Depends(quotas_of)]
ClientAddress = Annotated[str | None, Depends(client_address)]
