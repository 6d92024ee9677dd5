"""Curation in a real Chromium against a real `cairn serve`: the knowledge-base settings page
(keyboard only), re-parse with live progress, the keyword-index language with the rebuild's
progress, editing a chunk and finding the new text by search at once (not the old), disabling
one and seeing it leave search and chat, in English and Chinese, with screenshots at 1280 and
390 px in light and dark.

Skipped, with the reason shown, when Playwright or /usr/bin/chromium is missing."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

# Through test_browser, which skips (with the reason) where chromium or Playwright is missing.
from tests.web.test_browser import (
    WAIT_MS,
    Page,
    World,
    _ready_document,
    _search,
    expect,
    served_world,
    shot,
)

HANDBOOK = (
    b"# Bird Institute handbook\n\n"
    b"## Feeding\n\nThe pelicans are fed sardines at the north pond every morning at eight. "
    b"Keepers log each feeding in the blue binder beside the gate. "
    b"Sick birds are fed separately in the quarantine shed, and their portions are weighed "
    b"on the brass scale before and after every meal.\n\n"
    b"## Banding\n\nEvery chick gets a numbered steel band on its left leg before fledging. "
    b"Band numbers are reported to the national ringing scheme within a week. "
    b"Lost bands are replaced at the autumn health check, when every bird is weighed, "
    b"photographed and its wing length measured by two keepers.\n\n"
    b"## Visitors\n\nVisitors may watch from the hide on the east bank only. "
    b"Flash photography scares the herons and is not allowed anywhere.\n"
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from served_world(tmp_path_factory, "curation")


@pytest.fixture(scope="module")
def handbook(world: World) -> str:
    return _ready_document(world, "Handbook", HANDBOOK)


def _chunk_count(world: World, doc: str) -> int:
    with httpx.Client(base_url=world.url, timeout=60) as client:
        token = client.post(
            "/api/v1/auth/token", data={"username": "keeper", "password": "keeper-password"}
        ).json()["access_token"]
        response = client.get(
            f"/api/v1/tenants/birds/documents/{doc}/chunks",
            headers={"Authorization": f"Bearer {token}"},
        )
        return int(response.json()["total"])


def _tab_to(page: Page, element_id: str, limit: int = 80) -> None:
    """Press Tab until the element has the focus, as a keyboard user would."""
    for _ in range(limit):
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"#{element_id} never got the focus by Tab")


def _chat(page: Page, question: str) -> str:
    """Ask in a new conversation; the transcript's text once the answer is complete."""
    page.goto("/t/birds/chat")
    page.fill("#question", question)
    page.click("#ask")
    expect(page.locator("#transcript .answer-text").last).to_be_visible(timeout=WAIT_MS)
    page.wait_for_load_state("networkidle")
    return page.locator("#transcript").inner_text()


def _language(page: Page, language: str) -> None:
    page.select_option("#language", language)
    with page.expect_navigation():
        page.click("form.lang button[type=submit]")


def test_settings_by_keyboard_and_reparse_with_live_progress(world: World, handbook: str) -> None:
    before = _chunk_count(world, handbook)
    context, page = world.context("keeper")
    page.goto("/t/birds/settings")
    expect(page.locator("h1")).to_have_text("Knowledge-base settings")
    page.keyboard.press("Tab")  # the skip link
    _tab_to(page, "kb-template")
    page.keyboard.press("ArrowDown")  # general → qa
    expect(page.locator("#kb-template")).to_have_value("qa")
    expect(page.locator("#kb-template-help")).to_contain_text("question")
    page.keyboard.press("ArrowUp")  # back to general
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "kb-size"
    page.keyboard.press("Control+A")
    page.keyboard.type("40")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "kb-overlap"
    page.keyboard.press("Control+A")
    page.keyboard.type("0")
    _tab_to(page, "kb-save")
    with page.expect_response(re.compile(r"/settings$")) as saved:
        page.keyboard.press("Enter")
    assert saved.value.status == 200, saved.value.text()
    expect(page.locator("#kb-note")).to_contain_text("re-parse")
    # The save moves the focus to the re-parse button; Shift+Tab reaches the checkbox.
    expect(page.locator("#reparse-start")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    expect(page.locator("#reparse-keep")).to_be_focused()
    page.keyboard.press("Space")
    expect(page.locator("#reparse-keep")).to_be_checked()
    page.keyboard.press("Tab")
    with page.expect_response(re.compile(r"/documents/reparse$")) as started:
        page.keyboard.press("Enter")
    assert started.value.status == 202, started.value.text()
    expect(page.locator("#reparse-progress")).to_be_visible()
    expect(page.locator("#reparse-text")).to_contain_text(
        "Re-parse finished: 1 of 1", timeout=WAIT_MS
    )
    assert ("confirm", "Re-parse every ready document with the current chunking?") in world.dialogs
    assert _chunk_count(world, handbook) > before

    # Chosen documents: the documents page's selection, followed on the settings page.
    page.goto("/t/birds/documents")
    row = page.locator("#docs tbody tr", has=page.locator("a", has_text="Handbook"))
    row.locator("input.pick").check()
    with page.expect_navigation(url=re.compile(r"/settings\?job=job_[0-9a-f]{32}")):
        page.click("#batch-reparse")
    expect(page.locator("#reparse-text")).to_contain_text(
        "Re-parse finished: 1 of 1", timeout=WAIT_MS
    )
    # Searches use the knowledge base's defaults where the form leaves them empty.
    page.goto("/t/birds/search")
    expect(page.locator("#mode option").first).to_have_text("Knowledge-base default (hybrid)")
    # Hits read as a level and a closeness to the best hit, the raw score only beside it.
    page.fill("#q", "banding chicks")
    with page.expect_response(re.compile(r"/search$")):
        page.click("#search-form button[type=submit]")
    first = page.locator("#hits li.hit").first
    expect(first.locator(".badge")).to_have_text("public")
    expect(first.locator(".score")).to_have_text("100 % of the best match")
    expect(first.locator("meter")).to_have_attribute("value", "100")
    expect(first.locator(".score-raw")).to_contain_text("raw score")
    for width, scheme in ((1280, "light"), (390, "light"), (1280, "dark"), (390, "dark")):
        page.set_viewport_size({"width": width, "height": 900})
        page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        page.goto("/t/birds/settings")
        shot(page, "en", f"settings-{width}-{scheme}")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
    context.close()


def test_keyword_index_language_by_keyboard_with_rebuild_progress(
    world: World, handbook: str
) -> None:
    context, page = world.context("keeper")
    patches: list[str] = []
    page.on("request", lambda r: patches.append(r.url) if r.method == "PATCH" else None)
    page.goto("/t/birds/settings")
    expect(page.locator("#kb-stemmer")).to_have_value("english")
    expect(page.locator("#kb-stemmer-help")).to_contain_text("always segmented with jieba")
    expect(page.locator("#bm25-progress")).to_be_hidden()
    page.keyboard.press("Tab")  # the skip link
    _tab_to(page, "kb-stemmer")
    # Arrow keys choose; they never save.
    page.keyboard.press("ArrowDown")  # English → no stemming
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowDown")
    expect(page.locator("#kb-stemmer")).to_have_value("none")
    assert patches == []
    _tab_to(page, "kb-save")
    with page.expect_response(re.compile(r"/settings$")) as saved:
        page.keyboard.press("Enter")
    assert saved.value.status == 200, saved.value.text()
    assert saved.value.json()["bm25"] == {"stemmer": "none"}
    assert saved.value.json()["rebuild_job_id"]
    expect(page.locator("#bm25-progress")).to_be_visible()
    expect(page.locator("#bm25-text")).to_contain_text(
        "Keyword index rebuilt: 1 of 1 shards", timeout=WAIT_MS
    )
    assert len(patches) == 1

    # In Chinese, the choice in force; back to English stemming (the searches of the other
    # tests expect it), with the rebuild's progress in Chinese.
    _language(page, "zh-Hans")
    page.goto("/t/birds/settings")
    expect(page.locator("#kb-stemmer")).to_have_value("none")
    expect(page.locator("#kb-stemmer option:checked")).to_have_text("不做词干化：按原样匹配单词")
    expect(page.locator("#kb-stemmer-help")).to_contain_text("jieba 分词")
    page.select_option("#kb-stemmer", "english")
    with page.expect_response(re.compile(r"/settings$")) as saved:
        page.click("#kb-save")
    assert saved.value.status == 200, saved.value.text()
    expect(page.locator("#bm25-text")).to_contain_text("关键词索引已重建", timeout=WAIT_MS)
    context.close()


def test_edit_and_disable_a_chunk_in_search_and_chat(world: World, handbook: str) -> None:
    context, page = world.context("keeper")
    page.goto(f"/t/birds/documents/{handbook}")
    page.click("#doc-chunks-link")
    expect(page.locator("h1")).to_contain_text("Chunks")
    feeding = page.locator("li.chunk", has_text="sardines").first
    expect(feeding).to_be_visible()
    chunk_id = feeding.get_attribute("id")
    assert chunk_id

    # Edit: the new text is found by the very next search, and the old one is not.
    feeding.locator("button.chunk-edit").click()
    editor = page.locator(f"li#{chunk_id} textarea.chunk-text")
    expect(editor).to_be_focused()
    editor.fill("The pelicans are fed mackerel at the south pond every evening at six.")
    with page.expect_response(re.compile(r"/chunks/chk_[0-9a-f]+$")) as edited:
        page.locator(f"li#{chunk_id} button.chunk-save").click()
    assert edited.value.status == 200
    expect(page.locator(f"li#{chunk_id} .badge")).to_have_text("edited")
    expect(page.locator(f"li#{chunk_id} .text")).to_contain_text("mackerel")
    page.goto("/t/birds/search")
    assert "Handbook" in _search(page, "mackerel south pond")
    # A fresh page: `_search` waits for the info line to fill, which a previous search's
    # line would satisfy before this one's hits are drawn.
    page.goto("/t/birds/search")
    assert "Handbook" not in _search(page, "sardines")

    # The chunk is what chat cites for the question (the stand-in model cites passage 1).
    assert "mackerel" in _chat(page, "What are the pelicans fed at the south pond?")

    # Disable, in Chinese: gone from search and from chat's passages; enable brings it back.
    _language(page, "zh-Hans")
    page.goto(f"/t/birds/documents/{handbook}/chunks")
    item = page.locator(f"li#{chunk_id}")
    with page.expect_response(re.compile(r"/chunks/chk_[0-9a-f]+$")):
        item.locator("button.chunk-toggle").click()
    expect(page.locator(f"li#{chunk_id}")).to_have_attribute("data-enabled", "no")
    expect(page.locator(f"li#{chunk_id} .badge-off")).to_have_text("已停用")
    expect(page.locator(f"li#{chunk_id} button.chunk-toggle")).to_have_text("启用")
    expect(page.locator(f"li#{chunk_id} button.chunk-toggle")).to_be_focused()
    for width, scheme in ((1280, "light"), (390, "light"), (1280, "dark"), (390, "dark")):
        page.set_viewport_size({"width": width, "height": 900})
        page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        page.goto(f"/t/birds/documents/{handbook}/chunks")
        expect(page.locator(f"li#{chunk_id}")).to_be_visible()
        shot(page, "zh-Hans", f"chunks-{width}-{scheme}")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.set_viewport_size({"width": 1280, "height": 900})
    # A refusal by the server reads in the page's language, with the server's detail.
    page.goto("/t/birds/settings")
    page.fill("#kb-overlap", "999")
    with page.expect_response(re.compile(r"/settings$")) as refused:
        page.click("#kb-save")
    assert refused.value.status == 422
    expect(page.locator("#toast")).to_contain_text("输入无效")
    page.goto("/t/birds/search")
    assert "Handbook" not in _search(page, "mackerel south pond")
    assert "mackerel" not in _chat(page, "What are the pelicans fed at the south pond?")
    page.goto(f"/t/birds/documents/{handbook}/chunks")
    with page.expect_response(re.compile(r"/chunks/chk_[0-9a-f]+$")):
        page.locator(f"li#{chunk_id} button.chunk-toggle").click()
    expect(page.locator(f"li#{chunk_id}")).to_have_attribute("data-enabled", "yes")
    page.goto("/t/birds/search")
    assert "Handbook" in _search(page, "mackerel south pond")

    # A viewer reads the chunks but is offered no control.
    viewer_context, viewer = world.context("vi")
    viewer.goto(f"/t/birds/documents/{handbook}/chunks")
    expect(viewer.locator(f"li#{chunk_id}")).to_be_visible()
    expect(viewer.locator("button.chunk-edit")).to_have_count(0)
    expect(viewer.locator("#chunk-add")).to_have_count(0)
    viewer.goto("/t/birds/settings")
    expect(viewer.locator("h1")).not_to_have_text("Knowledge-base settings")
    viewer_context.close()
    context.close()
