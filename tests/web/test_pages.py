"""The web admin without a browser (httpx over ASGI): sign-in and its cookie, CSRF on every
state-changing request, role-gated pages (anonymous → sign-in, wrong role → 403, other tenant →
404), escaping, headers, languages, and the API additions the pages use (retry, filters, view as
role)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.documents.status import document_status
from app.models import AuditEntry, Document
from app.web.i18n import LOCALES_DIR
from tests.conftest import ADMIN_PASSWORD, Api
from tests.documents.helpers import wait_for
from tests.helpers import key_of
from tests.web.helpers import csrf_of, form_token, sign_in

Browser = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def browser(app: FastAPI) -> AsyncIterator[Browser]:
    """A fresh cookie jar per call (one per person), signed in when given credentials."""
    async with AsyncExitStack() as stack:

        async def open_one(
            username: str | None = None,
            password: str | None = None,
            base_url: str = "http://cairn.test",
        ) -> httpx.AsyncClient:
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)
            )
            if username is not None:
                response = await sign_in(client, username, password or f"{username}-password")
                assert response.status_code == 303, response.text[:500]
            return client

        yield open_one


@pytest.fixture
async def world(api: Api) -> Api:
    await api.tenant("hr")
    await api.tenant("eng")
    for name, role in (
        ("ed", "editor"),
        ("vi", "viewer"),
        ("gu", "guest"),
        ("au", "auditor"),
        ("ad", "admin"),
    ):
        await api.user(name, hr=role)
    await api.user("en", eng="admin")
    return api


async def _upload(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    name: str,
    content: bytes,
    *,
    title: str | None = None,
    sensitivity: str = "internal",
) -> str:
    data = {"sensitivity": sensitivity}
    if title is not None:
        data["title"] = title
    response = await client.post(
        "/api/v1/tenants/hr/documents", files={"file": (name, content)}, data=data, headers=headers
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


class TestSignIn:
    async def test_anonymous_pages_redirect_to_sign_in(self, browser: Browser) -> None:
        client = await browser()
        for path in ("/t/hr/documents", "/t/hr/search", "/keys", "/admin/users"):
            response = await client.get(path)
            assert response.status_code == 303
            assert response.headers["location"].startswith("/signin?next=%2F")
        assert (await client.get("/")).headers["location"] == "/signin"

    async def test_session_cookie_flags(self, world: Api, browser: Browser) -> None:
        client = await browser()
        response = await sign_in(client, "vi", "vi-password")
        assert response.status_code == 303
        cookie = next(
            v for v in response.headers.get_list("set-cookie") if v.startswith("cairn_session=")
        )
        flags = [part.strip().lower() for part in cookie.split(";")]
        assert "httponly" in flags
        assert "samesite=lax" in flags
        assert "secure" not in flags  # served over plain HTTP here
        secure = await browser(base_url="https://cairn.test")
        response = await sign_in(secure, "vi", "vi-password")
        cookie = next(
            v for v in response.headers.get_list("set-cookie") if v.startswith("cairn_session=")
        )
        assert "secure" in [part.strip().lower() for part in cookie.split(";")]

    async def test_failed_sign_in_is_audited_and_throttled(
        self, world: Api, browser: Browser, app: FastAPI
    ) -> None:
        client = await browser()
        statuses = []
        for n in range(12):
            response = await sign_in(client, "vi", f"wrong-{n}")
            statuses.append(response.status_code)
        assert statuses[:10] == [401] * 10
        assert statuses[10:] == [429, 429]
        assert "cairn_session" not in client.cookies
        async with app.state.database.read_sessionmaker() as session:
            failures = (
                await session.scalars(
                    select(AuditEntry).where(
                        AuditEntry.action == "auth.login", AuditEntry.outcome == "failure"
                    )
                )
            ).all()
        assert len(failures) == 11  # ten bad passwords and the first refusal

    async def test_sign_in_without_csrf_token_is_refused(
        self, world: Api, browser: Browser
    ) -> None:
        client = await browser()
        await client.get("/signin")
        response = await client.post("/signin", data={"username": "vi", "password": "vi-password"})
        assert response.status_code == 403
        assert "cairn_session" not in client.cookies

    async def test_next_is_never_another_site(self, world: Api, browser: Browser) -> None:
        client = await browser()
        page = await client.get("/signin")
        response = await client.post(
            "/signin",
            data={
                "username": "vi",
                "password": "vi-password",
                "csrf_token": form_token(page.text),
                "next": "//evil.example/x",
            },
        )
        assert response.headers["location"] == "/"

    async def test_sign_out(self, world: Api, browser: Browser) -> None:
        client = await browser("vi")
        page = await client.get("/t/hr/documents")
        assert page.status_code == 200
        # Without the token: refused, still signed in.
        assert (await client.post("/signout")).status_code == 403
        response = await client.post("/signout", data={"csrf_token": form_token(page.text)})
        assert response.status_code == 303
        assert "cairn_session" not in client.cookies
        assert (await client.get("/t/hr/documents")).status_code == 303


class TestCsrf:
    async def test_cookie_requests_need_the_token(self, world: Api, browser: Browser) -> None:
        client = await browser("vi")
        assert (await client.get("/api/v1/users/me")).json()["username"] == "vi"
        # A cross-site form post (cookie, no token) and a wrong token: refused before the API.
        for headers in ({}, {"X-CSRF-Token": "0" * 64}):
            response = await client.post(
                "/api/v1/api-keys", json={"name": "forged"}, headers=headers
            )
            assert response.status_code == 403
            assert response.json()["error"]["code"] == "csrf_failed"
        form = await client.post("/api/v1/api-keys", data={"name": "forged"})
        assert form.status_code == 403
        listed = await client.get("/api/v1/api-keys")
        assert listed.json() == []
        token = await csrf_of(client)
        created = await client.post(
            "/api/v1/api-keys", json={"name": "real"}, headers={"X-CSRF-Token": token}
        )
        assert created.status_code == 201

    async def test_other_sites_cannot_use_the_session(self, world: Api, browser: Browser) -> None:
        client = await browser("vi")
        for site in ("cross-site", "same-site"):
            response = await client.get("/api/v1/users/me", headers={"Sec-Fetch-Site": site})
            assert response.status_code == 401
        same = await client.get("/api/v1/users/me", headers={"Sec-Fetch-Site": "same-origin"})
        assert same.status_code == 200

    async def test_token_of_another_session_is_refused(self, world: Api, browser: Browser) -> None:
        vi = await browser("vi")
        ed = await browser("ed")
        response = await ed.post(
            "/api/v1/api-keys", json={"name": "x"}, headers={"X-CSRF-Token": await csrf_of(vi)}
        )
        assert response.status_code == 403

    async def test_bearer_tokens_work_unchanged(self, world: Api, browser: Browser) -> None:
        headers = await world.headers("vi")
        client = await browser()
        created = await client.post("/api/v1/api-keys", json={"name": "k"}, headers=headers)
        assert created.status_code == 201
        as_key = {"Authorization": f"Bearer {created.json()['key']}"}
        assert (await client.get("/api/v1/tenants", headers=as_key)).status_code == 200

    async def test_a_bad_session_cookie_is_not_a_bearer(self, world: Api, browser: Browser) -> None:
        client = await browser()
        client.cookies.set("cairn_session", "garbage", domain="cairn.test")
        assert (await client.get("/api/v1/users/me")).status_code == 401
        assert (await client.get("/t/hr/documents")).status_code == 303


class TestRoles:
    async def test_viewer_has_no_upload_or_delete(self, world: Api, browser: Browser) -> None:
        client = await browser("vi")
        page = await client.get("/t/hr/documents")
        assert page.status_code == 200
        assert 'id="dropzone"' not in page.text
        assert 'id="batch-delete"' not in page.text
        editor = await (await browser("ed")).get("/t/hr/documents")
        assert 'id="dropzone"' in editor.text
        assert 'id="batch-delete"' in editor.text

    async def test_wrong_role_is_403_and_other_tenant_404(
        self, world: Api, browser: Browser
    ) -> None:
        expected = {
            "vi": {"documents": 200, "search": 200, "chat": 200, "audit": 403, "members": 403},
            "gu": {"documents": 403, "search": 200, "chat": 403, "audit": 403, "members": 403},
            "au": {"documents": 403, "search": 403, "chat": 403, "audit": 200, "members": 403},
            "ad": {"documents": 200, "search": 200, "chat": 200, "audit": 200, "members": 200},
        }
        for user, pages in expected.items():
            client = await browser(user)
            for section, status in pages.items():
                response = await client.get(f"/t/hr/{section}")
                assert response.status_code == status, (user, section)
                other = await client.get(f"/t/eng/{section}")
                assert other.status_code == 404, (user, section)
                # Nothing of the other tenant shows, not even its name.
                assert "ENG" not in other.text
                assert (await client.get(f"/t/nope/{section}")).status_code == 404
            for platform in ("/admin/tenants", "/admin/users"):
                assert (await client.get(platform)).status_code == 403

    async def test_menus_follow_the_role(self, world: Api, browser: Browser) -> None:
        guest = await (await browser("gu")).get("/t/hr/search")
        assert 'href="/t/hr/search"' in guest.text
        for hidden in ("documents", "chat", "audit", "members"):
            assert f'href="/t/hr/{hidden}"' not in guest.text
        auditor = await (await browser("au")).get("/t/hr/audit")
        assert 'href="/t/hr/audit"' in auditor.text
        for hidden in ("documents", "search", "chat"):
            assert f'href="/t/hr/{hidden}"' not in auditor.text

    async def test_home_goes_to_the_role_s_page(self, world: Api, browser: Browser) -> None:
        assert (await (await browser("au")).get("/")).headers["location"] == "/t/hr/audit"
        assert (await (await browser("gu")).get("/")).headers["location"] == "/t/hr/search"
        admin = await browser("admin", ADMIN_PASSWORD)
        assert (await admin.get("/")).headers["location"] == "/admin/tenants"
        assert (await admin.get("/admin/users")).status_code == 200

    async def test_auditor_sees_no_document_text(self, world: Api, browser: Browser) -> None:
        ed = await world.headers("ed")
        client = await browser("au")
        doc = await _upload(client, ed, "secret.txt", b"The launch code is swordfish.")
        await wait_for(client, ed, "hr", doc)  # type: ignore[arg-type]
        assert (await client.get(f"/t/hr/documents/{doc}")).status_code == 403
        audit = await client.get("/api/v1/tenants/hr/audit")
        assert audit.status_code == 200
        assert "swordfish" not in audit.text


class TestSafety:
    async def test_titles_and_chunks_are_escaped(self, world: Api, browser: Browser) -> None:
        ed = await world.headers("ed")
        client = await browser("ed")
        title = "<img src=x onerror=alert(1)>"
        doc = await _upload(
            client,
            ed,
            "x.md",
            b"# Notes\n\n<script>alert('chunk')</script> harmless text.\n",
            title=title,
        )
        ready = await wait_for(client, ed, "hr", doc)  # type: ignore[arg-type]
        assert ready["status"] == "ready", ready
        page = await client.get(f"/t/hr/documents/{doc}")
        assert page.status_code == 200
        assert "<img src=x" not in page.text
        assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
        assert "<script>alert" not in page.text
        assert "&lt;script&gt;alert(&#39;chunk&#39;)&lt;/script&gt;" in page.text

    async def test_security_headers_on_pages(self, browser: Browser) -> None:
        response = await (await browser()).get("/signin")
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"
        assert "<script>" not in response.text  # no inline script at all
        static = await (await browser()).get("/static/app.js")
        assert static.status_code == 200
        for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in static.text

    async def test_language_from_header_and_switch(self, browser: Browser) -> None:
        client = await browser()
        chinese = await client.get("/signin", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
        assert "登录" in chinese.text
        assert '<html lang="zh-Hans">' in chinese.text
        english = await client.get("/signin", headers={"Accept-Language": "fr, en;q=0.5"})
        assert "Sign in" in english.text
        switched = await client.post(
            "/language",
            data={"language": "zh-Hans", "csrf_token": form_token(english.text), "next": "/signin"},
        )
        assert switched.status_code == 303
        assert "登录" in (await client.get("/signin")).text
        refused = await client.post("/language", data={"language": "en"})
        assert refused.status_code == 403

    def test_catalogues_have_the_same_keys(self) -> None:
        en = json.loads((LOCALES_DIR / "en.json").read_text("utf-8"))
        zh = json.loads((LOCALES_DIR / "zh-Hans.json").read_text("utf-8"))
        assert en.keys() == zh.keys()
        assert zh["status.queued"] == "排队中"
        assert zh["status.processing"] == "处理中"
        assert zh["status.ready"] == "就绪"
        assert zh["status.failed"] == "失败"


class TestDocumentActions:
    async def test_retry_filters_and_document_page(
        self, world: Api, browser: Browser, app: FastAPI
    ) -> None:
        ed = await world.headers("ed")
        vi = await world.headers("vi")
        client = await browser("ed")
        broken = await _upload(client, ed, "broken.pdf", b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n")
        good = await _upload(
            client, ed, "a_b%.txt", b"Quarterly report text.", title="Q3 report 100%_done"
        )
        failed = await wait_for(client, ed, "hr", broken)  # type: ignore[arg-type]
        assert failed["status"] == "failed"
        assert failed["error"]
        assert failed["error_code"]
        await wait_for(client, ed, "hr", good)  # type: ignore[arg-type]

        # The document page shows the reason, the code and the failed job; a file that cannot
        # be read is offered a replacement, not a retry.
        page = await client.get(f"/t/hr/documents/{broken}")
        assert failed["error_code"] in page.text
        assert 'id="doc-retry"' not in page.text
        assert 'id="replace-form"' in page.text
        assert page.text.count("<tr><td>ingest</td>") == 1

        # Retry: a viewer may not; a ready document cannot be, nor a file that cannot be read;
        # a failure another attempt can cure is queued again.
        base = "/api/v1/tenants/hr/documents"
        assert (await client.post(f"{base}/{broken}/retry", headers=vi)).status_code == 403
        assert (await client.post(f"{base}/{good}/retry", headers=ed)).status_code == 409
        refused = await client.post(f"{base}/{broken}/retry", headers=ed)
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "not_retryable"
        async with app.state.database.sessionmaker() as session, session.begin():
            document = await session.get(Document, key_of(broken))
            assert document is not None
            document_status.mark_failed(document, code="processing_error", message="worker died")
        assert 'id="doc-retry"' in (await client.get(f"/t/hr/documents/{broken}")).text
        retried = await client.post(f"{base}/{broken}/retry", headers=ed)
        assert retried.status_code == 202
        again = await wait_for(client, ed, "hr", broken)  # type: ignore[arg-type]
        assert again["status"] == "failed"
        page = await client.get(f"/t/hr/documents/{broken}")
        assert page.text.count("<tr><td>ingest</td>") == 2

        # Filters: title substring (LIKE wildcards match themselves), sensitivity.
        def titles(response: httpx.Response) -> list[str]:
            return [d["title"] for d in response.json()["items"]]

        assert titles(await client.get(f"{base}?title=100%25_", headers=ed)) == [
            "Q3 report 100%_done"
        ]
        assert titles(await client.get(f"{base}?title=q3%20REPORT", headers=ed)) == [
            "Q3 report 100%_done"
        ]
        assert titles(await client.get(f"{base}?title=_x", headers=ed)) == []
        assert titles(await client.get(f"{base}?sensitivity=public", headers=ed)) == []
        assert len(titles(await client.get(f"{base}?sensitivity=internal", headers=ed))) == 2

    async def test_view_as_role(self, world: Api, browser: Browser) -> None:
        ed = await world.headers("ed")
        client = await browser("ad")
        public = await _upload(
            client, ed, "p.txt", b"Holiday calendar public notice.", sensitivity="public"
        )
        secret = await _upload(
            client, ed, "c.txt", b"Holiday calendar confidential plan.", sensitivity="confidential"
        )
        for doc in (public, secret):
            await wait_for(client, ed, "hr", doc)  # type: ignore[arg-type]
        token = await csrf_of(client)

        async def preview(role: str) -> set[str]:
            response = await client.post(
                "/t/hr/search/preview",
                json={"query": "holiday calendar", "mode": "bm25", "role": role},
                headers={"X-CSRF-Token": token},
            )
            assert response.status_code == 200, response.text
            return {hit["document_id"] for hit in response.json()["hits"]}

        assert await preview("viewer") == {public, secret}
        assert await preview("guest") == {public}
        # Without the token, or by someone who is not a tenant admin: refused.
        no_token = await client.post(
            "/t/hr/search/preview", json={"query": "holiday", "role": "guest"}
        )
        assert no_token.status_code == 403
        viewer = await browser("vi")
        refused = await viewer.post(
            "/t/hr/search/preview",
            json={"query": "holiday", "role": "viewer"},
            headers={"X-CSRF-Token": await csrf_of(viewer)},
        )
        assert refused.status_code == 403
        other = await browser("en")
        hidden = await other.post(
            "/t/hr/search/preview",
            json={"query": "holiday", "role": "viewer"},
            headers={"X-CSRF-Token": await csrf_of(other)},
        )
        assert hidden.status_code == 404


async def test_new_routes_answer_401_403_404(world: Api, browser: Browser) -> None:
    """The retry route and the admin's "view as" search: anonymous → 401, wrong role → 403,
    another tenant's → 404."""
    ed = await world.headers("ed")
    client = await browser()
    doc = await _upload(client, ed, "broken.pdf", b"%PDF-1.4\nnot a pdf\n")
    await wait_for(client, ed, "hr", doc)  # type: ignore[arg-type]
    retry = f"/api/v1/tenants/hr/documents/{doc}/retry"
    assert (await client.post(retry)).status_code == 401
    assert (await client.post(retry, headers=await world.headers("gu"))).status_code == 403
    assert (await client.post(retry, headers=await world.headers("en"))).status_code == 404
    other = f"/api/v1/tenants/eng/documents/{doc}/retry"
    assert (await client.post(other, headers=await world.headers("en"))).status_code == 404
    preview = {"query": "x", "role": "guest"}
    assert (await client.post("/t/hr/search/preview", json=preview)).status_code == 401


async def test_platform_admin_disables_and_enables_a_user(world: Api, browser: Browser) -> None:
    vi = await browser("vi")
    vi_key = await vi.post(
        "/api/v1/api-keys", json={"name": "k"}, headers={"X-CSRF-Token": await csrf_of(vi)}
    )
    key = {"Authorization": f"Bearer {vi_key.json()['key']}"}
    admin = await browser("admin", ADMIN_PASSWORD)
    token = {"X-CSRF-Token": await csrf_of(admin)}
    # Not by a tenant admin, not without the token, not oneself.
    tenant_admin = await browser("ad")
    refused = await tenant_admin.patch(
        "/api/v1/users/vi",
        json={"is_active": False},
        headers={"X-CSRF-Token": await csrf_of(tenant_admin)},
    )
    assert refused.status_code == 403
    assert (await admin.patch("/api/v1/users/vi", json={"is_active": False})).status_code == 403
    own = await admin.patch("/api/v1/users/admin", json={"is_active": False}, headers=token)
    assert own.status_code == 409
    assert (
        await admin.patch("/api/v1/users/nobody", json={"is_active": False}, headers=token)
    ).status_code == 404

    disabled = await admin.patch("/api/v1/users/vi", json={"is_active": False}, headers=token)
    assert disabled.status_code == 200
    assert disabled.json()["is_active"] is False
    # The session and the API key stop working at once; signing in is refused.
    assert (await vi.get("/t/hr/documents")).status_code == 303
    assert (await vi.get("/api/v1/tenants", headers=key)).status_code == 401
    assert (await sign_in(await browser(), "vi", "vi-password")).status_code == 401
    enabled = await admin.patch("/api/v1/users/vi", json={"is_active": True}, headers=token)
    assert enabled.json()["is_active"] is True
    # Disabling ended the session on the server: enabling again does not revive it.
    assert (await vi.get("/t/hr/documents")).status_code == 303
    assert (await (await browser("vi")).get("/t/hr/documents")).status_code == 200


async def test_unknown_document_is_404_page(world: Api, browser: Browser) -> None:
    client = await browser("ed")
    for doc in ("doc_nope", "1", "ten_" + "a" * 22):
        response = await client.get(f"/t/hr/documents/{doc}")
        assert response.status_code == 404


class TestTenantsPage:
    """The platform admin's tenants page: every tenant's metadata with a link to its members
    page, no content; the role forms offer usernames from a list to a platform admin only."""

    async def test_every_tenant_with_counts_and_a_members_link(
        self, world: Api, browser: Browser
    ) -> None:
        ed = await world.headers("ed")
        client = await browser("admin", ADMIN_PASSWORD)
        await _upload(client, ed, "kept.txt", b"Pay bands are secret.", title="Zanzibar bands")
        page = await client.get("/admin/tenants")
        assert page.status_code == 200
        for slug, name, members in (("hr", "HR", 5), ("eng", "ENG", 1)):
            assert f'<tr data-slug="{slug}">' in page.text
            assert f'href="/t/{slug}/members"' in page.text
            row = page.text.split(f'<tr data-slug="{slug}">')[1].split("</tr>")[0]
            assert f"<td>{name}</td>" in row
            assert f'<td class="members-count">{members}</td>' in row
        hr_row = page.text.split('<tr data-slug="hr">')[1].split("</tr>")[0]
        assert '<td class="documents-count">1</td>' in hr_row
        # Metadata only: no title, no text of any document.
        assert "Zanzibar" not in page.text
        assert "secret" not in page.text
        # The role form picks from the users there are.
        users = page.text.split('<datalist id="user-choices">')[1].split("</datalist>")[0]
        for name in ("ad", "au", "ed", "en", "gu", "vi"):
            assert f'<option value="{name}">' in users
        # The link works for a platform admin without a role in the tenant.
        members_page = await client.get("/t/eng/members")
        assert members_page.status_code == 200
        assert 'list="user-choices"' in members_page.text

    async def test_in_chinese_and_english(self, world: Api, browser: Browser) -> None:
        client = await browser("admin", ADMIN_PASSWORD)
        zh = await client.get("/admin/tenants", headers={"Accept-Language": "zh-CN"})
        assert "成员数" in zh.text
        assert "文档数" in zh.text
        en = await client.get("/admin/tenants", headers={"Accept-Language": "en"})
        assert "Documents" in en.text
        assert "Make me its admin" in en.text

    async def test_a_tenant_admin_types_the_username(self, world: Api, browser: Browser) -> None:
        page = await (await browser("ad")).get("/t/hr/members")
        assert page.status_code == 200
        assert 'id="m-username"' in page.text
        # Who else has an account is not for a tenant admin to browse.
        assert "user-choices" not in page.text
        assert "en" not in page.text.split('id="member-form"')[1].split("</form>")[0].split()
        assert (await (await browser("ad")).get("/admin/tenants")).status_code == 403

    async def test_pages_of_tenants(
        self, api: Api, browser: Browser, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from app.web import routes

        monkeypatch.setattr(routes, "TENANTS_PER_PAGE", 2)
        for slug in ("aa", "bb", "cc"):
            await api.tenant(slug)
        client = await browser("admin", ADMIN_PASSWORD)
        first = await client.get("/admin/tenants")
        assert 'data-slug="aa"' in first.text
        assert 'data-slug="cc"' not in first.text
        assert 'href="/admin/tenants?offset=2"' in first.text
        second = await client.get("/admin/tenants?offset=2")
        assert 'data-slug="cc"' in second.text
        assert 'data-slug="aa"' not in second.text
        assert 'href="/admin/tenants?offset=0"' in second.text
