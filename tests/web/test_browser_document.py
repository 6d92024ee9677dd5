"""Issue 23, the document page in a real Chromium against a real `cairn serve`, in English and
Chinese: edit title, tags and sensitivity (lowering it is confirmed), replace the file and see
it processed again (the old version erased with a receipt), download the original as a
permitted role and be refused as a role that may not see the document.

Skipped, with the reason shown, when Playwright or /usr/bin/chromium is missing (see
tests/web/test_browser.py)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.web.served import ADMIN_PASSWORD

# Skips this module as it skips its own when Playwright or Chromium is missing.
from tests.web.test_browser import (  # noqa: F401 - `world`: the served app and browser
    WAIT_MS,
    BrowserContext,
    Page,
    World,
    expect,
    shot,
    world,
)

TENANT = "birds"
# What the page says, per language (the catalogues' words for these states and levels).
WORDS = {
    "en": {"ready": "ready", "confidential": "confidential", "internal": "internal"},
    "zh-Hans": {"ready": "就绪", "confidential": "机密", "internal": "内部"},
}


@pytest.fixture(scope="module")
def people(world: World) -> World:  # noqa: F811 - test_browser's fixture
    """test_browser's world (a tenant admin, a viewer, a guest) with an editor and a restricted
    viewer added."""
    with httpx.Client(base_url=world.url, timeout=60) as client:
        token = client.post(
            "/api/v1/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD}
        ).json()["access_token"]
        admin = {"Authorization": f"Bearer {token}"}
        for name, role in (("ed", "editor"), ("rv", "restricted_viewer")):
            created = client.post(
                "/api/v1/users",
                json={"username": name, "password": f"{name}-password"},
                headers=admin,
            )
            assert created.status_code == 201, created.text
            member = client.put(
                f"/api/v1/tenants/{TENANT}/members/{name}", json={"role": role}, headers=admin
            )
            assert member.status_code == 200, member.text
    return world


def _api(served: World, username: str) -> httpx.Client:
    """An API client signed in as `username` (a bearer token)."""
    with httpx.Client(base_url=served.url, timeout=60) as client:
        token = client.post(
            "/api/v1/auth/token",
            data={"username": username, "password": f"{username}-password"},
        ).json()["access_token"]
    return httpx.Client(
        base_url=served.url, timeout=60, headers={"Authorization": f"Bearer {token}"}
    )


def _browse(
    served: World, username: str, language: str, *, width: int = 1280, dark: bool = False
) -> tuple[BrowserContext, Page]:
    """A fresh profile signed in as `username`, the pages in `language`."""
    context, page = served.context(username, color_scheme="dark" if dark else "light")
    page.set_viewport_size({"width": width, "height": 900})
    if language != "en":
        page.select_option("#language", language)
        with page.expect_navigation():
            page.click("form.lang button[type=submit]")
    return context, page


def _wait_ready(client: httpx.Client, doc_id: str) -> dict[str, object]:
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        body = client.get(f"/api/v1/tenants/{TENANT}/documents/{doc_id}").json()
        if body["status"] in ("ready", "failed"):
            return dict(body)
        assert time.monotonic() < deadline, body
        time.sleep(0.3)


@pytest.mark.parametrize("language", ["en", "zh-Hans"])
def test_document_page(people: World, language: str) -> None:
    served = people
    words = WORDS[language]
    old_word, new_word = f"zqold{language[:2]}7731", f"zqnew{language[:2]}5519"
    old = f"Harbour rules: the {old_word} crane stops at dusk.\n".encode()
    new = f"Harbour rules: the {new_word} crane stops at midnight.\n".encode()
    with _api(served, "ed") as editor:
        uploaded = editor.post(
            f"/api/v1/tenants/{TENANT}/documents",
            files={"file": (f"harbour-{language}.txt", old)},
            data={"sensitivity": "confidential", "tags": "cranes"},
        )
        assert uploaded.status_code == 202, uploaded.text
        doc_id = str(uploaded.json()["id"])
        assert _wait_ready(editor, doc_id)["status"] == "ready"
    page_url = f"/t/{TENANT}/documents/{doc_id}"
    file_url = f"/api/v1/tenants/{TENANT}/documents/{doc_id}/file"

    # Refused: a restricted viewer cannot see a confidential document, its page or its file;
    # a guest may read no document at all.
    context, page = _browse(served, "rv", language)
    assert page.goto(page_url).status == 404  # type: ignore[union-attr]
    assert page.request.get(file_url).status == 404
    context.close()
    context, page = _browse(served, "gu", language)
    assert page.request.get(file_url).status == 403
    context.close()

    # Permitted: a viewer downloads the original bytes under its own name.
    context, page = _browse(served, "vi", language)
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
    context, page = _browse(served, "ed", language)
    page.goto(page_url)
    shot(page, language, "document-before")
    page.fill("#edit-title", f"Harbour rules {language}")
    page.fill("#edit-tags", "cranes, night shift")
    page.select_option("#edit-sensitivity", "internal")
    expect(page.locator("#doc-title")).to_have_text(f"harbour-{language}.txt")
    asked = len(served.dialogs)
    with page.expect_navigation():
        page.click("#edit-save")
    confirm = served.dialogs[asked]
    assert confirm[0] == "confirm"
    assert words["confidential"] in confirm[1], confirm
    assert words["internal"] in confirm[1], confirm
    expect(page.locator("#doc-title")).to_have_text(f"Harbour rules {language}")
    expect(page.locator("#edit-tags")).to_have_value("cranes, night shift")
    expect(page.locator("#edit-sensitivity")).to_have_value("internal")
    context.close()

    # Internal now: the restricted viewer sees the page and downloads the file.
    context, page = _browse(served, "rv", language)
    page.goto(page_url)
    with page.expect_download() as download:
        page.click("#doc-download")
    assert Path(download.value.path()).read_bytes() == old
    context.close()

    # Replace the file: confirmed (the old version is erased), processed again, ready.
    context, page = _browse(served, "ed", language)
    page.goto(page_url)
    page.set_input_files(
        "#replace-file",
        files=[{"name": f"harbour-{language}-v2.txt", "mimeType": "text/plain", "buffer": new}],
    )
    asked = len(served.dialogs)
    page.click("#replace-submit")
    expect(page.locator("#doc-status")).to_have_text(words["ready"], timeout=WAIT_MS)
    assert served.dialogs[asked][0] == "confirm"
    assert f"harbour-{language}-v2.txt" in served.dialogs[asked][1]
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
    with _api(served, "keeper") as keeper:
        receipts = keeper.get(f"/api/v1/tenants/{TENANT}/deletion-receipts").json()["items"]
        mine = [r for r in receipts if r["document_id"] == doc_id]
        assert [r["subject_type"] for r in mine] == ["document_version"], mine
        assert mine[0]["status"] == "done"
        assert mine[0]["id"] in notice_text, notice_text

        def hits(query: str) -> list[str]:
            response = keeper.post(
                f"/api/v1/tenants/{TENANT}/search", json={"query": query, "mode": "bm25"}
            )
            assert response.status_code == 200, response.text
            return [h["text"] for h in response.json()["hits"]]

        assert hits(old_word) == []
        assert any(new_word in text for text in hits(new_word))

    # Dark and 390 px wide: the page's new controls fit.
    context, page = _browse(served, "ed", language, width=390, dark=True)
    page.goto(page_url)
    expect(page.locator("#replace-form")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, language, "document-390-dark")
    context.close()
    assert [d for d in served.dialogs if d[0] != "confirm"] == []
