"""Forwarding headers (issue 21, item 8): believed from configured proxies only. A loopback
client that rotates X-Forwarded-For must not get a fresh sign-in budget with each value — in
process and over a real socket through the uvicorn Config `cairn serve` runs."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from app.kit.forwarded import TrustedProxies, parse_address
from app.kit.settings import ServerSettings, Settings
from app.main import create_app
from tests.chat.live import live_server
from tests.conftest import DatabaseFactory, make_settings, running_app

PER_ADDRESS = 3


# Every spelling a client might try instead of (or as well as) X-Forwarded-For.
def spoofed(n: int) -> dict[str, str]:
    address = f"198.51.100.{n}"
    return {
        "X-Forwarded-For": address,
        "X-Real-IP": address,
        "Forwarded": f"for={address}",
        "X-Forwarded-Proto": "https",
    }


@pytest.fixture
async def sqlite_settings(sqlite_factory: DatabaseFactory, tmp_path: Path) -> Settings:
    """Settings on a migrated SQLite database, the per-address sign-in budget cut to 3."""
    settings = make_settings(await sqlite_factory.new(), tmp_path / "data")
    auth = settings.auth.model_copy(
        update={"login_failures_per_address": f"{PER_ADDRESS}/15 minutes"}
    )
    return settings.model_copy(update={"auth": auth})


def behind(settings: Settings, *proxies: str) -> Settings:
    return settings.model_copy(update={"server": ServerSettings(trusted_proxies=list(proxies))})


async def fail_sign_in(client: httpx.AsyncClient, n: int, headers: dict[str, str]) -> int:
    """A wrong password for a new username each time, so only the address budget can refuse."""
    response = await client.post(
        "/api/v1/auth/token",
        data={"username": f"guesser-{n}", "password": "not-the-password"},
        headers=headers,
    )
    return response.status_code


# --- which hop is the client -----------------------------------------------------------------


def test_the_client_is_the_right_most_hop_that_is_not_a_trusted_proxy() -> None:
    proxies = TrustedProxies(["10.0.0.5", "10.1.0.0/16"])
    # The client wrote the left part; each proxy appended the address it saw.
    hops = ["6.6.6.6", "203.0.113.7", "10.1.2.3"]
    assert proxies.client_of("10.0.0.5", hops) == "203.0.113.7"
    assert proxies.client_of("10.0.0.5", ["203.0.113.7:5555"]) == "203.0.113.7"
    assert proxies.client_of("10.0.0.5", ["[2001:db8::1]:80"]) == "2001:db8::1"
    # Every hop a proxy: the left-most of them made the request.
    assert proxies.client_of("10.0.0.5", ["10.1.9.9", "10.1.2.3"]) == "10.1.9.9"
    # A hop that is no address stops the walk at the last hop anyone vouches for.
    assert proxies.client_of("10.0.0.5", ["203.0.113.7", "unknown"]) == "10.0.0.5"
    assert proxies.client_of("10.0.0.5", ["junk", "10.1.2.3"]) == "10.1.2.3"
    assert not proxies.trusts("127.0.0.1")
    assert not TrustedProxies([]).trusts("127.0.0.1")
    assert parse_address("::ffff:192.0.2.1") == parse_address("192.0.2.1")


def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    assert ServerSettings().trusted_proxies == []
    assert ServerSettings(trusted_proxies=[" 10.0.0.0/8 ", "::1"]).trusted_proxies == [
        "10.0.0.0/8",
        "::1",
    ]
    for bad in ("*", "proxy.example.org", "10.0.0.0/33"):
        with pytest.raises(ValidationError, match="trusted_proxies"):
            ServerSettings(trusted_proxies=[bad])


# --- in process ------------------------------------------------------------------------------


async def test_rotating_forwarding_headers_from_loopback_does_not_dodge_the_throttle(
    sqlite_settings: Settings,
) -> None:
    async with running_app(sqlite_settings, client_address=("127.0.0.1", 123)) as (_, api):
        statuses = [await fail_sign_in(api.client, n, spoofed(n)) for n in range(PER_ADDRESS + 2)]
    assert statuses == [401] * PER_ADDRESS + [429] * 2


async def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(
    sqlite_settings: Settings,
) -> None:
    settings = behind(sqlite_settings, "10.0.0.5")
    async with running_app(settings, client_address=("10.0.0.5", 4000)) as (_, api):
        # One client behind the proxy, rotating what it writes itself (the left part).
        one = [
            await fail_sign_in(api.client, n, {"X-Forwarded-For": f"6.6.6.{n}, 203.0.113.7"})
            for n in range(PER_ADDRESS + 1)
        ]
        # Another client behind the same proxy has a budget of its own.
        other = await fail_sign_in(api.client, 99, {"X-Forwarded-For": "203.0.113.8"})
        # An IPv6 client counts as its /64, whichever address of it it uses.
        v6 = [
            await fail_sign_in(api.client, 100 + n, {"X-Forwarded-For": f"2001:db8:0:1::{n + 1}"})
            for n in range(PER_ADDRESS + 1)
        ]
    assert one == [401] * PER_ADDRESS + [429]
    assert other == 401
    assert v6 == [401] * PER_ADDRESS + [429]


async def test_a_peer_that_is_not_a_trusted_proxy_names_no_client(
    sqlite_settings: Settings,
) -> None:
    settings = behind(sqlite_settings, "10.0.0.5")
    async with running_app(settings, client_address=("10.0.0.6", 4000)) as (_, api):
        statuses = [await fail_sign_in(api.client, n, spoofed(n)) for n in range(PER_ADDRESS + 1)]
    assert statuses == [401] * PER_ADDRESS + [429]


async def test_the_session_cookie_is_secure_only_when_a_trusted_proxy_says_https(
    sqlite_settings: Settings,
) -> None:
    https = {"X-Forwarded-Proto": "https"}
    async with running_app(sqlite_settings, client_address=("127.0.0.1", 123)) as (_, api):
        untrusted = await api.client.get("/signin", headers=https)
    settings = behind(sqlite_settings, "10.0.0.5")
    async with running_app(settings, client_address=("10.0.0.5", 4000)) as (_, api):
        trusted = await api.client.get("/signin", headers=https)
        plain = await api.client.get("/signin")
    assert untrusted.status_code == trusted.status_code == plain.status_code == 200
    assert "secure" not in untrusted.headers["set-cookie"].lower()
    assert "secure" in trusted.headers["set-cookie"].lower()
    assert "secure" not in plain.headers["set-cookie"].lower()


# --- over a real socket (uvicorn as `cairn serve` runs it) ---------------------------------


async def test_over_a_socket_loopback_forwarding_headers_are_not_believed(
    sqlite_settings: Settings,
) -> None:
    with live_server(create_app(sqlite_settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            statuses = [await fail_sign_in(client, n, spoofed(n)) for n in range(PER_ADDRESS + 2)]
    assert statuses == [401] * PER_ADDRESS + [429] * 2


async def test_over_a_socket_a_configured_proxy_names_the_client(
    sqlite_settings: Settings,
) -> None:
    # The test client plays the proxy: it connects from 127.0.0.1, configured as trusted.
    with live_server(create_app(behind(sqlite_settings, "127.0.0.1"))) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            distinct = [
                await fail_sign_in(client, n, {"X-Forwarded-For": f"198.51.100.{n}"})
                for n in range(PER_ADDRESS + 1)
            ]
            # Rotating the left, client-written part does not help one client.
            same = [
                await fail_sign_in(client, 50 + n, {"X-Forwarded-For": f"6.6.6.{n}, 203.0.113.7"})
                for n in range(PER_ADDRESS + 1)
            ]
    assert distinct == [401] * (PER_ADDRESS + 1)
    assert same == [401] * PER_ADDRESS + [429]
