"""Issue 23, the document page in a real Chromium against a real `cairn serve`, in English and
Chinese: edit title, tags and sensitivity (lowering it is confirmed), replace the file and see
it processed again (the old version erased with a receipt), download the original as a
permitted role and be refused as a role that may not see the document.

Skipped, with the reason shown, when Playwright or /usr/bin/chromium is missing (see
tests/web/test_browser.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

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
LOCALES = {"en": "en-GB", "zh-Hans": "zh-CN"}
# What the page says, per language (the catalogues' words for these states and levels).
WORDS = {
    "en": {"ready": "ready", "confidential": "confidential", "internal": "internal"},
    "zh-Hans": {"ready": "就绪", "confidential": "机密", "internal": "内部"},
}


@dataclass
class World:
    served: Served
    browser: Browser
    dialogs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.served.url

    def context(
        self, username: str, language: str, *, width: int = 1280, color_scheme: str = "light"
    ) -> tuple[BrowserContext, Page]:
        """A fresh browser profile in `language`, signed in through the form."""
        context = self.browser.new_context(
            base_url=self.url,
            viewport={"width": width, "height": 900},
            locale=LOCALES[language],
            color_scheme=color_scheme,  # type: ignore[arg-type]
            accept_downloads=True,
        )
        page = context.new_page()
        page.set_default_timeout(30_000)

        def on_dialog(dialog: Dialog) -> None:
            # confirm() is how the page asks; any alert() would be injected script.
            self.dialogs.append((dialog.type, dialog.message))
            if dialog.type == "confirm":
                dialog.accept()
            else:
                dialog.dismiss()

        page.on("dialog", on_dialog)
        page.goto("/signin")
        page.fill("#username", username)
        page.fill("#password", f"{username}-password")
        page.click("#signin-form button[type=submit]")
        page.wait_for_load_state()
        assert "/signin" not in page.url, page.content()[:2000]
        return context, page

    def api(self, username: str) -> httpx.Client:
        """An API client signed in as `username` (a bearer token)."""
        with httpx.Client(base_url=self.url, timeout=60) as client:
            token = client.post(
                "/api/v1/auth/token",
                data={"username": username, "password": f"{username}-password"},
            ).json()["access_token"]
        return httpx.Client(
            base_url=self.url, timeout=60, headers={"Authorization": f"Bearer {token}"}
        )


def shot(page: Page, language: str, name: str) -> None:
    folder = SCREENSHOTS / language
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with model_stand_in() as model_url:
        data_dir = tmp_path_factory.mktemp("web-document") / "data"
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
            json={"slug": "port", "name": "港务局 Port", "join": False},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        for name, role in (
            ("keeper", "admin"),
            ("ed", "editor"),
            ("vi", "viewer"),
            ("rv", "restricted_viewer"),
            ("gu", "guest"),
        ):
            response = client.post(
                "/api/v1/users",
                json={"username": name, "password": f"{name}-password"},
                headers=admin,
            )
            assert response.status_code == 201, response.text
            response = client.put(
                f"/api/v1/tenants/port/members/{name}", json={"role": role}, headers=admin
            )
            assert response.status_code == 200, response.text


def _wait_ready(client: httpx.Client, doc_id: str) -> dict[str, object]:
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        body = client.get(f"/api/v1/tenants/port/documents/{doc_id}").json()
        if body["status"] in ("ready", "failed"):
            return dict(body)
        assert time.monotonic() < deadline, body
        time.sleep(0.3)


@pytest.mark.parametrize("language", ["en", "zh-Hans"])
def test_document_page(world: World, language: str) -> None:
    words = WORDS[language]
    old_word, new_word = f"zqold{language[:2]}7731", f"zqnew{language[:2]}5519"
    old = f"Harbour rules: the {old_word} crane stops at dusk.\n".encode()
    new = f"Harbour rules: the {new_word} crane stops at midnight.\n".encode()
    with world.api("ed") as editor:
        uploaded = editor.post(
            "/api/v1/tenants/port/documents",
            files={"file": (f"harbour-{language}.txt", old)},
            data={"sensitivity": "confidential", "tags": "cranes"},
        )
        assert uploaded.status_code == 202, uploaded.text
        doc_id = str(uploaded.json()["id"])
        assert _wait_ready(editor, doc_id)["status"] == "ready"
    page_url = f"/t/port/documents/{doc_id}"
    file_url = f"/api/v1/tenants/port/documents/{doc_id}/file"

    # Refused: a restricted viewer cannot see a confidential document, its page or its file;
    # a guest may read no document at all.
    context, page = world.context("rv", language)
    assert page.goto(page_url).status == 404  # type: ignore[union-attr]
    assert page.request.get(file_url).status == 404
    context.close()
    context, page = world.context("gu", language)
    assert page.request.get(file_url).status == 403
    context.close()

    # Permitted: a viewer downloads the original bytes under its own name.
    context, page = world.context("vi", language)
    page.goto(page_url)
    expect(page.locator("#doc-edit")).to_have_count(0)
    expect(page.locator("#replace-form")).to_have_count(0)
    with page.expect_download() as download:
        page.click("#doc-download")
    assert download.value.suggested_filename == f"harbour-{language}.txt"
    assert Path(download.value.path()).read_bytes() == old
    context.close()

    # The editor edits title, tags and sensitivity: nothing is saved until Save, and lowering
    # the sensitivity asks first, naming both levels in the page's language.
    context, page = world.context("ed", language)
    page.goto(page_url)
    shot(page, language, "document-before")
    page.fill("#edit-title", f"Harbour rules {language}")
    page.fill("#edit-tags", "cranes, night shift")
    page.select_option("#edit-sensitivity", "internal")
    expect(page.locator("#doc-title")).to_have_text(f"harbour-{language}.txt")
    asked = len(world.dialogs)
    with page.expect_navigation():
        page.click("#edit-save")
    confirm = world.dialogs[asked]
    assert confirm[0] == "confirm"
    assert words["confidential"] in confirm[1], confirm
    assert words["internal"] in confirm[1], confirm
    expect(page.locator("#doc-title")).to_have_text(f"Harbour rules {language}")
    expect(page.locator("#edit-tags")).to_have_value("cranes, night shift")
    expect(page.locator("#edit-sensitivity")).to_have_value("internal")
    context.close()

    # Internal now: the restricted viewer sees the page and downloads the file.
    context, page = world.context("rv", language)
    page.goto(page_url)
    with page.expect_download() as download:
        page.click("#doc-download")
    assert Path(download.value.path()).read_bytes() == old
    context.close()

    # Replace the file: confirmed (the old version is erased), processed again, ready.
    context, page = world.context("ed", language)
    page.goto(page_url)
    page.set_input_files(
        "#replace-file",
        files=[{"name": f"harbour-{language}-v2.txt", "mimeType": "text/plain", "buffer": new}],
    )
    asked = len(world.dialogs)
    page.click("#replace-submit")
    expect(page.locator("#doc-status")).to_have_text(words["ready"], timeout=WAIT_MS)
    assert world.dialogs[asked][0] == "confirm"
    assert f"harbour-{language}-v2.txt" in world.dialogs[asked][1]
    notice = page.locator("#doc-notice")
    expect(notice).to_be_visible()
    notice_text = notice.inner_text()
    expect(page.locator("#chunks li").first).to_contain_text(new_word)
    # Same document: title, tags and sensitivity kept.
    expect(page.locator("#doc-title")).to_have_text(f"Harbour rules {language}")
    expect(page.locator("#edit-sensitivity")).to_have_value("internal")
    shot(page, language, "document-replaced")
    with page.expect_download() as download:
        page.click("#doc-download")
    assert Path(download.value.path()).read_bytes() == new
    context.close()

    # The receipt names the old version; search finds the new text and not the old.
    with world.api("keeper") as keeper:
        receipts = keeper.get("/api/v1/tenants/port/deletion-receipts").json()["items"]
        mine = [r for r in receipts if r["document_id"] == doc_id]
        assert [r["subject_type"] for r in mine] == ["document_version"], mine
        assert mine[0]["status"] == "done"
        assert mine[0]["id"] in notice_text, notice_text

        def hits(query: str) -> list[str]:
            response = keeper.post(
                "/api/v1/tenants/port/search", json={"query": query, "mode": "bm25"}
            )
            assert response.status_code == 200, response.text
            return [h["text"] for h in response.json()["hits"]]

        assert hits(old_word) == []
        assert any(new_word in text for text in hits(new_word))

    # Dark and 390 px wide: the page's new controls fit.
    context, page = world.context("ed", language, width=390, color_scheme="dark")
    page.goto(page_url)
    expect(page.locator("#replace-form")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, language, "document-390-dark")
    context.close()
    assert [d for d in world.dialogs if d[0] != "confirm"] == []
