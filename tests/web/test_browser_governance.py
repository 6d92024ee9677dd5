"""Issue 23, readable governance, in a real Chromium against `cairn serve`: the audit page in
words (English and Chinese), its contains-filter and its CSV / JSON Lines export; the deletion
receipt page (what was removed, each check in words, JSON download, print) in both languages;
both pages no wider than the screen at 1280 and 390 px, light and dark."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.web.served import ADMIN_PASSWORD, cairn_serve, model_stand_in

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "browser tests need Debian's chromium at /usr/bin/chromium", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright")
from playwright.sync_api import Browser, Page, expect  # noqa: E402

from tests.web.test_browser import shot  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WORDS = {
    "en": {
        "title": "Audit log",
        "purged": "Document purged",
        "outside": "someone outside this knowledge base",
        "hash": "Receipt hash",
        "receipt": "Deletion receipt",
        "done": "verified and done",
        "passed": "✓ passed",
        "removed": "Passages (chunks)",
        "bm25": "A keyword search for the document's own rarest words",
    },
    "zh-Hans": {
        "title": "审计日志",
        "purged": "彻底删除文档",
        "outside": "本知识库以外的人员",
        "hash": "回执哈希",
        "receipt": "删除回执",
        "done": "已验证并完成",
        "passed": "✓ 通过",
        "removed": "段落（分块）",
        "bm25": "用该文档自身最罕见的词做关键词检索",
    },
}


@dataclass
class Wharf:
    url: str
    browser: Browser
    receipt: dict[str, object]


def _api(client: httpx.Client, username: str) -> dict[str, str]:
    password = ADMIN_PASSWORD if username == "admin" else f"{username}-password"
    token = client.post("/api/v1/auth/token", data={"username": username, "password": password})
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def _setup(url: str) -> dict[str, object]:
    """Tenant wharf: keeper (admin), au (auditor); drifter searched there, then left; keeper
    uploaded a document and purged it."""
    with httpx.Client(base_url=url, timeout=60) as client:
        admin = _api(client, "admin")
        made = client.post(
            "/api/v1/tenants", json={"slug": "wharf", "name": "Wharf", "join": False}, headers=admin
        )
        assert made.status_code == 201, made.text
        for name, role in (("keeper", "admin"), ("au", "auditor"), ("drifter", "viewer")):
            client.post(
                "/api/v1/users",
                json={"username": name, "password": f"{name}-password"},
                headers=admin,
            ).raise_for_status()
            client.put(
                f"/api/v1/tenants/wharf/members/{name}", json={"role": role}, headers=admin
            ).raise_for_status()
        drifter = _api(client, "drifter")
        client.post(
            "/api/v1/tenants/wharf/search", json={"query": "gulls"}, headers=drifter
        ).raise_for_status()
        client.delete("/api/v1/tenants/wharf/members/drifter", headers=admin).raise_for_status()
        keeper = _api(client, "keeper")
        uploaded = client.post(
            "/api/v1/tenants/wharf/documents",
            files={"file": ("gulls.md", b"# Gulls\n\nHerring gulls nest on the wharf roofs.\n")},
            headers=keeper,
        )
        assert uploaded.status_code == 202, uploaded.text
        doc = uploaded.json()["id"]
        receipt: dict[str, object] = {}
        for _ in range(600):
            status = client.get(f"/api/v1/tenants/wharf/documents/{doc}", headers=keeper).json()
            if status["status"] in ("ready", "failed"):
                break
            time.sleep(0.2)
        purged = client.delete(f"/api/v1/tenants/wharf/documents/{doc}?purge=true", headers=keeper)
        assert purged.status_code == 202, purged.text
        path = f"/api/v1/tenants/wharf/deletion-receipts/{purged.json()['receipt_id']}"
        for _ in range(600):
            receipt = client.get(path, headers=keeper).json()
            if receipt["status"] == "done":
                return receipt
            time.sleep(0.2)
    raise AssertionError(f"receipt not done: {receipt}")


@pytest.fixture(scope="module")
def wharf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wharf]:
    with model_stand_in() as model_url:
        data_dir = tmp_path_factory.mktemp("governance") / "data"
        with cairn_serve(data_dir, model_url) as served:
            receipt = _setup(served.url)
            with sync_api.sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
                try:
                    yield Wharf(served.url, browser, receipt)
                finally:
                    browser.close()


def _signed_in(wharf: Wharf, username: str, language: str, width: int = 1280) -> Page:
    context = wharf.browser.new_context(
        base_url=wharf.url, viewport={"width": width, "height": 900}, accept_downloads=True
    )
    context.add_cookies([{"name": "cairn_lang", "value": language, "url": wharf.url}])
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto("/signin")
    page.fill("#username", username)
    page.fill("#password", f"{username}-password")
    page.click("#signin-form button[type=submit]")
    page.wait_for_load_state()
    assert "/signin" not in page.url
    return page


@pytest.mark.parametrize("language", ["en", "zh-Hans"])
def test_audit_page_in_words_and_its_export(wharf: Wharf, language: str, tmp_path: Path) -> None:
    words = WORDS[language]
    page = _signed_in(wharf, "au", language)
    page.goto("/t/wharf/audit")
    expect(page.locator("h1")).to_contain_text(words["title"])
    expect(page.locator("#chain-badge")).to_have_attribute("data-ok", "true")
    purged = page.locator('#audit tbody tr[data-action="document.purge"]')
    expect(purged.locator("td").nth(2)).to_have_text("keeper")
    expect(purged.locator("td").nth(3)).to_have_text(words["purged"])
    expect(purged.locator("td").nth(6)).to_contain_text(words["hash"])
    search = page.locator('#audit tbody tr[data-action="search.query"]')
    expect(search.locator("td").nth(2)).to_have_text(words["outside"])
    table = page.locator("#audit tbody").inner_text()
    assert "drifter" not in page.content()
    # No raw JSON anywhere in the rows.
    assert "{" not in table
    assert '":' not in table

    # The contains-filter, in any case.
    page.fill("#a-action", "PURGE")
    with page.expect_navigation():
        page.click("#audit-filters button[type=submit]")
    actions = page.locator("#audit tbody tr").evaluate_all("rs => rs.map(r => r.dataset.action)")
    assert sorted(actions) == ["document.purge", "document.purge_request"]

    # Export what the filter matches, both formats, through the session.
    with page.expect_download() as csv_download:
        page.click("#export-csv")
    assert csv_download.value.suggested_filename.endswith(".csv")
    saved = tmp_path / "audit.csv"
    csv_download.value.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text("utf-8"))))
    assert sorted(r["action"] for r in rows) == ["document.purge", "document.purge_request"]
    assert {r["actor"] for r in rows} == {"keeper"}
    with page.expect_download() as jsonl_download:
        page.click("#export-jsonl")
    saved = tmp_path / "audit.jsonl"
    jsonl_download.value.save_as(saved)
    lines = [json.loads(line) for line in saved.read_text("utf-8").splitlines()]
    assert [e["action"] for e in lines] == ["document.purge_request", "document.purge"]
    assert all(len(e["entry_hash"]) == 64 for e in lines)
    # The exports themselves are in the log now.
    page.goto("/t/wharf/audit?action=audit.export")
    page.wait_for_load_state()
    assert page.locator('#audit tbody tr[data-action="audit.export"]').count() >= 2
    page.context.close()


@pytest.mark.parametrize("language", ["en", "zh-Hans"])
def test_receipt_page(wharf: Wharf, language: str, tmp_path: Path) -> None:
    words = WORDS[language]
    page = _signed_in(wharf, "au", language)
    page.goto("/t/wharf/audit?action=document.purge")
    # From the audit entry of the purge to its receipt.
    with page.expect_navigation():
        page.locator('#audit tbody tr[data-action="document.purge"] td.target a').click()
    expect(page.locator("h1")).to_contain_text(words["receipt"])
    expect(page.locator("#receipt-status")).to_have_text(words["done"])
    expect(page.locator("#receipt-hash")).to_have_text(str(wharf.receipt["receipt_hash"]))
    expect(page.locator("#receipt-requester")).to_have_text("keeper")
    expect(page.locator("#removed")).to_contain_text(words["removed"])
    checks = page.locator("#checks li")
    assert checks.count() >= 5
    expect(page.locator('#checks li[data-passed="false"]')).to_have_count(0)
    expect(checks.first).to_contain_text(words["passed"])
    expect(page.locator("#checks")).to_contain_text(words["bm25"])
    assert page.locator("pre").count() == 0
    with page.expect_download() as download:
        page.click("#receipt-json")
    saved = tmp_path / "receipt.json"
    download.value.save_as(saved)
    body = json.loads(saved.read_text("utf-8"))
    assert body["receipt_hash"] == wharf.receipt["receipt_hash"]
    assert body["status"] == "done"
    expect(page.locator("#receipt-print")).to_be_visible()
    page.emulate_media(media="print")
    expect(page.locator("header.top")).to_be_hidden()
    expect(page.locator("#receipt-print")).to_be_hidden()
    expect(page.locator("#checks")).to_be_visible()
    page.context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("path", ["audit", "receipt"])
def test_governance_pages_fit_a_phone(wharf: Wharf, path: str, scheme: str) -> None:
    """Both pages at 1280 and 390 px, light and dark, nothing wider than the screen; saved as
    screenshots under test-artifacts/screenshots/zh-Hans/."""
    page = _signed_in(wharf, "au", "zh-Hans", width=390)
    page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
    url = f"/t/wharf/receipts/{wharf.receipt['id']}" if path == "receipt" else "/t/wharf/audit"
    for size in (1280, 390):
        page.set_viewport_size({"width": size, "height": 900})
        page.goto(url)
        page.wait_for_load_state("networkidle")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= size, width
        shot(page, "zh-Hans", f"{path}-{size}-{scheme}")
    page.context.close()
