"""Signing in to the web admin the way a browser does: the form's CSRF token, then the cookie."""

from __future__ import annotations

import re

import httpx

CSRF_FIELD = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')
CSRF_META = re.compile(r'<meta name="csrf-token" content="([0-9a-f]*)">')


def form_token(html: str) -> str:
    """The CSRF token of the page's first form."""
    found = CSRF_FIELD.search(html)
    assert found, html[:500]
    return found.group(1)


def meta_token(html: str) -> str:
    """The CSRF token the page's script sends."""
    found = CSRF_META.search(html)
    assert found, html[:500]
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    """Sign in through the form; the client keeps the session cookie."""
    page = await client.get("/signin")
    assert page.status_code == 200
    return await client.post(
        "/signin",
        data={"username": username, "password": password, "csrf_token": form_token(page.text)},
    )


async def csrf_of(client: httpx.AsyncClient) -> str:
    """The CSRF token of a signed-in client's session."""
    page = await client.get("/keys")
    assert page.status_code == 200, page.text[:300]
    return meta_token(page.text)
