"""The web admin in a real Chromium (Debian's /usr/bin/chromium, driven by Playwright) against a
real `cairn serve` process on a temporary data dir: issue 13's "Must show" walk-through, the
role checks, hostile content, CSRF and cookie flags, and a screenshot of every page in English
and Chinese under test-artifacts/screenshots/.

Skipped, with the reason shown, when Playwright or /usr/bin/chromium is missing (`.ci/run`
installs Debian's chromium; never `playwright install`)."""

from __future__ import annotations

import base64
import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ingest.pdf_fixtures import build_pdf
from tests.web.served import ADMIN_PASSWORD, Served, cairn_serve, model_stand_in

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "browser tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="browser tests need playwright (pip install -e '.[dev]')"
)
from playwright.sync_api import Browser, BrowserContext, Dialog, Page, expect  # noqa: E402

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WAIT_MS = 180_000
XSS_TITLE = "<img src=x onerror=alert(1)>"


def _docx(title: str, text: str) -> bytes:
    import docx

    document = docx.Document()
    document.add_heading(title, level=1)
    document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


FILES = {
    "pelican-guide.docx": (
        _docx(
            "Pelican field guide",
            "The pelican migration starts in early spring along the river delta.",
        ),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    "pelican-counts.pdf": (
        build_pdf(
            [
                [
                    "Pelican counts",
                    "",
                    "Volunteers counted four hundred pelicans at the river delta in March.",
                ]
            ]
        ),
        "application/pdf",
    ),
    "pelican-feeding.md": (
        b"# Pelican feeding\n\nPelicans feed on fish in the shallow water of the river delta.\n",
        "text/markdown",
    ),
    "broken.pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\nthis is not really a PDF\n", "application/pdf"),
}
GOOD = ("pelican-guide.docx", "pelican-counts.pdf", "pelican-feeding.md")


@dataclass
class World:
    served: Served
    browser: Browser
    dialogs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.served.url

    def context(
        self, username: str, password: str | None = None, *, color_scheme: str = "light"
    ) -> tuple[BrowserContext, Page]:
        """A fresh browser profile, signed in through the form."""
        context = self.browser.new_context(
            base_url=self.url,
            viewport={"width": 1280, "height": 900},
            locale="en-GB",
            color_scheme=color_scheme,  # type: ignore[arg-type]
        )
        page = context.new_page()
        page.set_default_timeout(30_000)

        def on_dialog(dialog: Dialog) -> None:
            # confirm() is how batch delete and revoke ask; any alert() would be injected script.
            self.dialogs.append((dialog.type, dialog.message))
            if dialog.type == "confirm":
                dialog.accept()
            else:
                dialog.dismiss()

        page.on("dialog", on_dialog)
        page.goto("/signin")
        page.fill("#username", username)
        page.fill("#password", password or f"{username}-password")
        page.click("#signin-form button[type=submit]")
        page.wait_for_load_state()
        assert "/signin" not in page.url, page.content()[:2000]
        return context, page

    def alerts(self) -> list[tuple[str, str]]:
        return [d for d in self.dialogs if d[0] != "confirm"]


def shot(page: Page, language: str, name: str) -> None:
    """Save a full-page screenshot as test-artifacts/screenshots/<language>/<name>.png."""
    folder = SCREENSHOTS / language
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from served_world(tmp_path_factory, "web")


def served_world(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[World]:
    """A `cairn serve` with the birds tenant and its people, and a browser (a module's world)."""
    with model_stand_in() as model_url:
        data_dir = tmp_path_factory.mktemp(name) / "data"
        with cairn_serve(data_dir, model_url) as served:
            _people(served.url)
            with sync_api.sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=LAUNCH_ARGS
                )
                try:
                    yield World(served, browser)
                finally:
                    browser.close()


def _people(url: str) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        token = client.post(
            "/api/v1/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD}
        ).json()["access_token"]
        admin = {"Authorization": f"Bearer {token}"}
        created = client.post(
            "/api/v1/tenants",
            # The platform admin stays out of it: its pages are "not found" for it below.
            json={"slug": "birds", "name": "鸟类研究所 Bird Institute", "join": False},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        for name, role in (
            ("keeper", "admin"),
            ("vi", "viewer"),
            ("gu", "guest"),
            ("au", "auditor"),
        ):
            response = client.post(
                "/api/v1/users",
                json={"username": name, "password": f"{name}-password"},
                headers=admin,
            )
            assert response.status_code == 201, response.text
            response = client.put(
                f"/api/v1/tenants/birds/members/{name}", json={"role": role}, headers=admin
            )
            assert response.status_code == 200, response.text


def _drop(page: Page, names: tuple[str, ...]) -> None:
    """Drag files onto the drop zone (a DataTransfer made in the page, as a drag would)."""
    files = [
        {"name": n, "type": FILES[n][1], "b64": base64.b64encode(FILES[n][0]).decode()}
        for n in names
    ]
    page.evaluate(
        """(files) => {
          const dt = new DataTransfer();
          for (const f of files) {
            const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
            dt.items.add(new File([bytes], f.name, { type: f.type }));
          }
          const zone = document.querySelector("#dropzone");
          for (const type of ["dragenter", "dragover", "drop"]) {
            const init = { dataTransfer: dt, bubbles: true, cancelable: true };
            zone.dispatchEvent(new DragEvent(type, init));
          }
        }""",
        files,
    )


def _row(page: Page, title: str) -> Any:
    return page.locator("#docs tbody tr", has=page.locator("a", has_text=title))


def _search(page: Page, query: str, *, view_as: str = "") -> list[str]:
    page.fill("#q", query)
    page.select_option("#mode", "bm25")
    if view_as or page.locator("#view-as").count():
        page.select_option("#view-as", view_as)
    with page.expect_response(re.compile(r"/search(/preview)?$")):
        page.click("#search-form button[type=submit]")
    # An expectation, not wait_for_function: a string predicate that has to poll is run
    # through eval, which the page's CSP (rightly) refuses.
    expect(page.locator("#search-info")).not_to_have_text("", timeout=WAIT_MS)
    return [t.strip() for t in page.locator("#hits li.hit > div:first-child a").all_inner_texts()]


def test_walk_through(world: World, tmp_path: Path) -> None:
    """Sign in; upload three documents and a broken PDF by drag-and-drop and a folder; watch
    them reach ready / failed with the reason; retry; search; chat and open a citation; batch
    soft-delete and restore; an API key; the audit log with a green chain; 中文 and back."""
    context, page = world.context("keeper")
    expect(page).to_have_url(re.compile(r"/t/birds/documents$"))

    _drop(page, (*GOOD, "broken.pdf"))
    # Every file gets its own row with a transfer bar and an outcome.
    uploads = page.locator("#uploads li")
    expect(uploads).to_have_count(4)
    expect(page.locator('#uploads li[data-state="accepted"]')).to_have_count(4, timeout=WAIT_MS)

    # A whole folder, through the folder picker.
    folder = tmp_path / "handbook"
    folder.mkdir()
    (folder / "nesting.txt").write_text("Pelicans nest on islands in the delta lagoon.")
    (folder / "卷尾.txt").write_text("黑卷尾在三角洲的树上筑巢。", encoding="utf-8")
    page.set_input_files("#folder-input", str(folder))
    expect(page.locator('#uploads li[data-state="accepted"]')).to_have_count(6, timeout=WAIT_MS)

    for name in (*GOOD, "nesting.txt", "卷尾.txt"):
        expect(_row(page, name)).to_have_attribute("data-status", "ready", timeout=WAIT_MS)
    broken = _row(page, "broken.pdf")
    expect(broken).to_have_attribute("data-status", "failed", timeout=WAIT_MS)
    reason = broken.locator(".reason")
    expect(reason).to_be_visible()
    assert re.search(r"\([a-z_]+\)$", reason.inner_text()), reason.inner_text()
    expect(broken.locator(".status")).to_have_text("failed")

    # No retry for a file that cannot be read (another attempt would fail the same way): its
    # page offers to replace the file instead (tests/web/test_browser_document.py replaces one).
    expect(broken.locator("button.retry")).to_have_count(0)
    broken.locator("a").click()
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    expect(page.locator("#doc-error")).to_be_visible()
    expect(page.locator("#doc-retry")).to_have_count(0)
    expect(page.locator("#replace-form")).to_be_visible()
    page.go_back()

    # Filters: status.
    page.select_option("#f-status", "failed")
    page.click("#filters button[type=submit]")
    expect(page.locator("#docs tbody tr")).to_have_count(1)
    page.select_option("#f-status", "")
    page.click("#filters button[type=submit]")
    expect(page.locator("#docs tbody tr")).to_have_count(6)

    # Document page: metadata and chunks in order.
    _row(page, "pelican-guide.docx").locator("a").click()
    expect(page.locator("#doc-title")).to_have_text("pelican-guide.docx")
    expect(page.locator("#chunks li").first).to_contain_text("pelican migration")

    # Retrieval test page.
    page.click("nav.menu >> text=Retrieval test")
    titles = _search(page, "pelican delta")
    assert set(GOOD) <= set(titles), titles
    # As a guest would see it: every document here is internal, so nothing.
    assert _search(page, "pelican delta", view_as="guest") == []
    expect(page.locator("#search-info")).to_contain_text("as guest would see it")

    # Chat: streamed, with a citation that opens the passage highlighted.
    page.click("nav.menu >> text=Chat")
    page.fill("#question", "When does the pelican migration start?")
    page.click("#ask")
    cite = page.locator("#transcript .answer-text a.cite").first
    expect(cite).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#transcript .answer-text")).to_contain_text("early spring")
    expect(page.locator("#session-list li")).to_have_count(1)
    # Nothing visible answers this: labelled "not found", without asking the model.
    page.click("#new-chat")
    page.fill("#question", "xylophone quantum zebra?")
    page.click("#ask")
    expect(page.locator("#transcript .state-not_found")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#session-list li")).to_have_count(2)
    page.locator("#session-list button", has_text="When does the pelican").click()
    cite = page.locator("#transcript .citations a.cite").first
    expect(cite).to_be_visible()
    cite.click()
    highlighted = page.locator(".chunk.hl")
    expect(highlighted).to_be_visible()
    expect(highlighted).to_be_in_viewport()

    # Batch soft-delete: gone from search; restore: back.
    page.click("nav.menu >> text=Documents")
    for name in GOOD:
        _row(page, name).locator("input.pick").check()
    expect(page.locator("#selected-count")).to_have_text("3 selected")
    page.click("#batch-delete")
    for name in GOOD:
        expect(_row(page, name)).to_have_attribute("data-status", "deleted")
    page.click("nav.menu >> text=Retrieval test")
    remaining = _search(page, "pelican delta")
    assert not set(GOOD) & set(remaining), remaining
    page.click("nav.menu >> text=Documents")
    page.select_option("#f-status", "deleted")
    page.click("#filters button[type=submit]")
    expect(page.locator("#docs tbody tr")).to_have_count(3)
    page.check("#select-all")
    page.click("#batch-restore")
    expect(page.locator("#docs tbody tr")).to_have_count(0)
    page.click("nav.menu >> text=Retrieval test")
    assert set(GOOD) <= set(_search(page, "pelican delta"))

    # Batch sensitivity: no level preselected, and a confirmation naming it.
    page.click("nav.menu >> text=Documents")
    first = _row(page, GOOD[0])
    first.locator("input.pick").check()
    expect(page.locator("#batch-sensitivity")).to_have_value("")
    page.click("#batch-sensitivity-apply")
    expect(page.locator("#toast")).to_contain_text("Select documents and a sensitivity first")
    asked = len(world.dialogs)
    page.select_option("#batch-sensitivity", "confidential")
    page.click("#batch-sensitivity-apply")
    expect(first).to_contain_text("confidential")
    assert world.dialogs[asked:] == [
        ("confirm", "Set 1 documents to “confidential”? This changes who can find them.")
    ]
    first.locator("input.pick").check()
    page.select_option("#batch-sensitivity", "internal")
    page.click("#batch-sensitivity-apply")
    expect(first).to_contain_text("internal")

    # API key: shown once with a copy button, listed, revoked.
    page.click("nav.menu >> text=API keys")
    page.fill("#k-name", "nextchat")
    page.click("#key-form button[type=submit]")
    expect(page.locator("#new-key")).to_be_visible()
    key = page.locator("#new-key-value").inner_text()
    assert key.startswith("cairn_") or len(key) > 20, key
    expect(page.locator("#copy-key")).to_be_visible()
    with httpx.Client(base_url=world.url) as client:
        auth = {"Authorization": f"Bearer {key}"}
        assert client.get("/api/v1/tenants", headers=auth).status_code == 200
        row = page.locator('#keys tr[data-name="nextchat"]')
        row.locator("button.revoke").click()
        expect(row.locator("td.revoked")).to_be_visible()
        assert client.get("/api/v1/tenants", headers=auth).status_code == 401
    assert key not in page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")

    # Audit: everything above, and the chain verified.
    # /keys is the person's, not the tenant's: back through the switcher.
    page.select_option("#tenant-switch", "birds")
    with page.expect_navigation():
        page.click("form.switcher button[type=submit]")
    page.click("nav.menu >> text=Audit log")
    badge = page.locator("#chain-badge")
    expect(badge).to_have_attribute("data-ok", "true")
    expect(badge).to_have_class(re.compile(r"\bok\b"))
    actions = set(
        page.locator("#audit tbody tr").evaluate_all("rs => rs.map(r => r.dataset.action)")
    )
    # (No retry here: the one broken file cannot be read, so none is offered.)
    for action in (
        "document.upload",
        "document.delete",
        "document.restore",
        "search.query",
        "chat.ask",
        "member.set",
    ):
        assert action in actions, (action, actions)
    page.fill("#a-action", "document.delete")
    page.click("#audit-filters button[type=submit]")
    expect(page.locator("#audit tbody tr")).to_have_count(3)

    # 中文, and back. Moving through the choices with the keyboard changes nothing by itself
    # (WCAG 3.2.2): only the button does.
    url = page.url
    page.focus("#language")
    page.keyboard.press("ArrowDown")
    page.wait_for_timeout(500)
    assert page.url == url
    expect(page.locator("nav.menu")).to_contain_text("Documents")
    page.select_option("#language", "zh-Hans")
    with page.expect_navigation():
        page.click("form.lang button[type=submit]")
    expect(page.locator("h1")).to_contain_text("审计日志")
    # Actions in words, in the page's language (the stored name stays in the title).
    deleted = page.locator('#audit tbody tr[data-action="document.delete"] td').nth(3)
    expect(deleted).to_have_text("删除文档")
    expect(deleted).to_have_attribute("title", "document.delete")
    expect(page.locator("nav.menu")).to_contain_text("文档")
    page.click("nav.menu >> text=文档")
    expect(_row(page, "卷尾.txt").locator(".status")).to_have_text("就绪")
    expect(_row(page, "broken.pdf").locator(".status")).to_have_text("失败")
    page.select_option("#language", "en")
    with page.expect_navigation():
        page.click("form.lang button[type=submit]")
    expect(page.locator("nav.menu")).to_contain_text("Documents")

    # Purge the broken PDF: typed confirmation, then the verified deletion receipt.
    page.click("nav.menu >> text=Documents")
    _row(page, "broken.pdf").locator("a").click()
    page.fill("#purge-confirm", "broken")
    page.click("#purge-submit")
    expect(page.locator("#toast")).to_contain_text("does not match")
    expect(page.locator("#receipt")).to_be_hidden()
    expect(page.locator("#replace-form")).to_be_visible()
    page.fill("#purge-confirm", "broken.pdf")
    page.click("#purge-submit")
    # The receipt, once verified, is a page of its own (tests/web/test_browser_governance.py).
    expect(page.locator("#receipt-link")).to_have_attribute("data-status", "done", timeout=WAIT_MS)
    expect(page.locator("#receipt-link")).to_have_attribute("href", re.compile(r"/receipts/rcp_"))
    # Purged: no Replace, Download, Delete or Restore is offered for a document that is gone.
    expect(page.locator("#replace-form")).to_be_hidden()
    expect(page.locator("#doc-download")).to_be_hidden()
    expect(page.locator("#doc-delete")).to_be_hidden()
    page.click("nav.menu >> text=Documents")
    expect(page.locator("#docs tbody tr")).to_have_count(5)

    # Sign out: the session is gone.
    page.click("#signout")
    expect(page).to_have_url(re.compile(r"/signin$"))
    page.goto("/t/birds/documents")
    expect(page).to_have_url(re.compile(r"/signin\?next="))
    assert world.alerts() == []
    context.close()


def _ready_document(world: World, title: str, body: bytes, sensitivity: str = "public") -> str:
    with httpx.Client(base_url=world.url, timeout=60) as client:
        token = client.post(
            "/api/v1/auth/token", data={"username": "keeper", "password": "keeper-password"}
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        response = client.post(
            "/api/v1/tenants/birds/documents",
            files={"file": ("x.md", body)},
            data={"title": title, "sensitivity": sensitivity},
            headers=auth,
        )
        assert response.status_code == 202, response.text
        doc = str(response.json()["id"])
        for _ in range(600):
            status = client.get(f"/api/v1/tenants/birds/documents/{doc}", headers=auth).json()
            if status["status"] in ("ready", "failed"):
                assert status["status"] == "ready", status
                return doc
            time.sleep(0.2)
    raise AssertionError("document not ready")


def test_roles(world: World) -> None:
    """A viewer has no upload or delete; a guest sees search only; an auditor the audit log and
    no document text."""
    doc = _ready_document(world, "Heron notes", b"# Herons\n\nHerons wade in the marsh at dawn.\n")

    context, page = world.context("vi")
    page.goto("/t/birds/documents")
    expect(page.locator("#docs tbody tr").first).to_be_visible()
    assert page.locator("#dropzone").count() == 0
    assert page.locator("#batch-delete").count() == 0
    assert page.locator("input.pick").count() == 0
    page.goto(f"/t/birds/documents/{doc}")
    assert page.locator("#doc-delete").count() == 0
    assert page.locator("#purge-form").count() == 0
    context.close()

    context, page = world.context("gu")
    expect(page).to_have_url(re.compile(r"/t/birds/search$"))
    menu = page.locator("nav.menu a").all_inner_texts()
    assert menu == ["Retrieval test", "API keys"], menu
    assert page.locator("#view-as").count() == 0
    assert "Heron notes" in _search(page, "herons marsh")
    expect(page.locator("#hits")).to_contain_text("Herons wade")
    response = page.goto("/t/birds/documents")
    assert response is not None
    assert response.status == 403
    context.close()

    context, page = world.context("au")
    expect(page).to_have_url(re.compile(r"/t/birds/audit$"))
    expect(page.locator("#chain-badge")).to_have_attribute("data-ok", "true")
    expect(page.locator("#audit tbody tr").first).to_be_visible()
    menu = page.locator("nav.menu a").all_inner_texts()
    assert menu == ["Audit log", "API keys"], menu
    assert "Herons wade" not in page.content()
    for path in (f"/t/birds/documents/{doc}", "/t/birds/search", "/t/birds/chat"):
        response = page.goto(path)
        assert response is not None
        assert response.status == 403, path
        assert "Herons wade" not in page.content()
    context.close()
    assert world.alerts() == []


def test_hostile_content_renders_as_text(world: World) -> None:
    doc = _ready_document(
        world,
        XSS_TITLE,
        b"# Notes\n\n<script>alert('chunk')</script> <img src=y onerror=alert(2)> kestrel facts.\n",
    )
    context, page = world.context("keeper")
    page.goto("/t/birds/documents")
    link = page.locator("#docs a", has_text=XSS_TITLE)
    expect(link).to_be_visible()
    page.goto(f"/t/birds/documents/{doc}")
    expect(page.locator("#doc-title")).to_have_text(XSS_TITLE)
    expect(page.locator("#chunks")).to_contain_text("<script>alert('chunk')</script>")
    page.goto("/t/birds/search")
    _search(page, "kestrel facts")
    expect(page.locator("#hits")).to_contain_text("<script>alert('chunk')</script>")
    page.goto("/t/birds/chat")
    page.fill("#question", "kestrel facts <img src=z onerror=alert(3)>")
    page.click("#ask")
    expect(page.locator("#transcript .msg.user")).to_have_text(
        "kestrel facts <img src=z onerror=alert(3)>"
    )
    expect(page.locator("#transcript .answer-text")).to_be_visible(timeout=WAIT_MS)
    assert page.locator("img").count() == 0
    page.wait_for_timeout(300)
    assert world.alerts() == [], world.alerts()
    context.close()


def test_csrf_cookie_and_headers(world: World) -> None:
    context, page = world.context("keeper")
    cookie = next(c for c in context.cookies() if c["name"] == "cairn_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert page.evaluate("document.cookie").find("cairn_session") == -1
    response = page.goto("/t/birds/documents")
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["referrer-policy"] == "no-referrer"

    # The page's own origin, without the token (what a forged request could at best be):
    refused = page.evaluate(
        """async () => {
          const r = await fetch("/api/v1/api-keys", {method: "POST",
            headers: {"Content-Type": "application/json"}, body: JSON.stringify({name: "forged"})});
          return [r.status, (await r.json()).error.code];
        }"""
    )
    assert refused == [403, "csrf_failed"]
    # A form on another site posting to Cairn (JSON smuggled in text/plain): refused, no key.
    attacker = context.new_page()
    attacker.set_content(
        f"""<form method="post" action="{world.url}/api/v1/api-keys" enctype="text/plain">
            <input name='{{"name":"forged","x":"' value='"}}'></form>"""
    )
    with attacker.expect_response(re.compile(r"/api/v1/api-keys$")) as forged:
        attacker.evaluate("document.forms[0].submit()")
    assert forged.value.status in (401, 403), forged.value.status
    keys = page.evaluate("""async () => (await (await fetch("/api/v1/api-keys")).json())""")
    assert all(k["name"] != "forged" for k in keys)
    context.close()


PAGES = (
    ("documents", "/t/birds/documents"),
    ("search", "/t/birds/search"),
    ("chat", "/t/birds/chat"),
    ("members", "/t/birds/members"),
    ("audit", "/t/birds/audit"),
    ("keys", "/keys"),
)


def test_screenshots_of_every_page(world: World) -> None:
    """Every page in English and in Chinese, at 1280 px and the documents page at phone width."""
    doc = _ready_document(world, "鹈鹕观察笔记", "# 鹈鹕\n\n鹈鹕在春天沿河口迁徙。\n".encode())
    for language in ("en", "zh-Hans"):
        context, page = world.context("keeper")
        admin_context, admin = world.context("admin", ADMIN_PASSWORD)
        for p in (page, admin):
            p.goto("/keys")
            if language != "en":
                p.select_option("#language", language)
                with p.expect_navigation():
                    p.click("form.lang button[type=submit]")
        anonymous = world.browser.new_context(base_url=world.url, locale=language)
        signin = anonymous.new_page()
        signin.goto("/signin")
        shot(signin, language, "signin")
        anonymous.close()
        for name, path in PAGES:
            page.goto(path)
            page.wait_for_load_state("networkidle")
            shot(page, language, name)
        page.goto("/t/birds/search")
        _search(page, "鹈鹕" if language == "zh-Hans" else "pelican delta")
        shot(page, language, "search-results")
        page.goto("/t/birds/chat")
        page.fill("#question", "鹈鹕什么时候迁徙？" if language == "zh-Hans" else "When?")
        page.click("#ask")
        expect(page.locator("#transcript .answer-text").last).to_be_visible(timeout=WAIT_MS)
        shot(page, language, "chat-answer")
        page.goto(f"/t/birds/documents/{doc}")
        shot(page, language, "document")
        if language == "zh-Hans":
            expect(page.locator("#doc-title")).to_have_text("鹈鹕观察笔记")
            expect(page.locator("#doc-status")).to_have_text("就绪")
        for name, path in (("tenants", "/admin/tenants"), ("users", "/admin/users")):
            admin.goto(path)
            admin.wait_for_load_state("networkidle")
            shot(admin, language, name)
        # The slug's pattern is a valid expression under the `v` flag browsers compile it with
        # (an invalid one is ignored, with a console error, and nothing is checked).
        admin.goto("/admin/tenants")
        admin.fill("#t-slug", "Bad slug")
        assert admin.evaluate("document.querySelector('#t-slug').validity.patternMismatch")
        admin.fill("#t-slug", "good-slug-2")
        assert not admin.evaluate("document.querySelector('#t-slug').validity.patternMismatch")
        # The platform admin holds no role in the tenant: its pages are "not found".
        admin.goto("/t/birds/documents")
        shot(admin, language, "error-404")
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto("/t/birds/documents")
        page.wait_for_load_state("networkidle")
        shot(page, language, "documents-phone")
        context.close()
        admin_context.close()
    for language in ("en", "zh-Hans"):
        taken = {p.stem for p in (SCREENSHOTS / language).glob("*.png")}
        assert {name for name, _ in PAGES} | {"signin", "document", "tenants", "users"} <= taken
    assert world.alerts() == []


def _background(page: Page) -> str:
    return str(page.evaluate("getComputedStyle(document.body).backgroundColor"))


def test_dark_mode_follows_the_system_and_the_toggle_remembers(world: World) -> None:
    """Dark when the system asks for it; the header's toggle overrides it and is remembered;
    screenshots of the documents page in dark at 1280 and 390 px."""
    light, dark = "rgb(245, 246, 248)", "rgb(18, 21, 28)"
    context, page = world.context("keeper", color_scheme="dark")
    page.goto("/t/birds/documents")
    page.wait_for_load_state("networkidle")
    assert _background(page) == dark
    toggle = page.locator("#theme-toggle")
    expect(toggle).to_have_text("Light mode")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    shot(page, "en", "documents-dark")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "en", "documents-phone-dark")
    # The documents table scrolls inside its box at phone width; the page itself does not.
    wide = page.evaluate(
        "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 391"
        " && !e.closest('.scroll')).map(e => e.tagName + '#' + e.id + '.' + e.className + ' '"
        " + Math.round(e.getBoundingClientRect().right))"
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, wide
    toggle.click()
    assert _background(page) == light
    expect(toggle).to_have_text("Dark mode")
    page.reload()
    assert _background(page) == light  # remembered over the system's dark
    page.locator("#theme-toggle").click()
    assert _background(page) == dark
    context.close()
    # A light system gets the light theme until someone chooses otherwise.
    context, page = world.context("keeper")
    page.goto("/t/birds/documents")
    assert _background(page) == light
    context.close()


def test_a_tampered_audit_log_shows_a_red_badge(world: World) -> None:
    """Last in the module: it breaks the tenant's chain. Someone edits an entry in the database;
    the audit page says the chain is broken and names the first bad entry."""
    import sqlite3

    with sqlite3.connect(world.served.data_dir / "cairn.db") as db:
        row = db.execute(
            "SELECT id, seq FROM audit_entries WHERE action = 'document.delete' "
            "AND tenant_id IS NOT NULL ORDER BY seq LIMIT 1"
        ).fetchone()
        assert row is not None
        db.execute("UPDATE audit_entries SET action = 'document.view' WHERE id = ?", (row[0],))
    context, page = world.context("au")
    badge = page.locator("#chain-badge")
    expect(badge).to_have_attribute("data-ok", "false")
    expect(badge).to_have_class(re.compile(r"\bbad\b"))
    expect(page.locator("#chain-detail")).to_contain_text(f"#{row[1]}")
    shot(page, "en", "audit-broken")
    context.close()
