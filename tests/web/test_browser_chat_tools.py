"""Chat tools in a real Chromium against a real `cairn serve`, in English and Chinese: Enter
sends and Shift+Enter breaks the line; the asked words marked in its citation's quote
(after a reload too); copy an answer; thumbs up with a comment that is still there after a
reload; Back from a citation returns to the same transcript; rename (Escape cancels, Enter
saves), search and delete conversations; Stop a streaming answer (marked stopped, not
stored); the tenant admin's Feedback page in words. Screenshots at 1280 and 390 px, light and
dark.

Skipped, with the reason shown, when Playwright or /usr/bin/chromium is missing."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect  # noqa: E402  (after the skips in test_browser)

from app.web.i18n import catalogue
from tests.web.test_browser import WAIT_MS, World, _ready_document, shot
from tests.web.test_browser_curation import _language
from tests.web.test_browser_curation import world as served_world

NOTES = (
    b"# Pelican notes\n\nThe pelican migration starts in early spring along the river delta. "
    b"Pelicans rest on the sand banks of the delta before they fly north.\n"
)
QUESTION = "When does the pelican migration start"


# The curation tests' world (a served Cairn, the model stand-in, Chromium); being
# module-scoped, this module gets one of its own.
world = served_world


def words(language: str) -> dict[str, str]:
    # The served catalogue: the locale file plus chat's own state labels.
    return dict(catalogue(language))


@pytest.fixture(scope="module")
def notes(world: World) -> str:
    return _ready_document(world, "Pelican notes", NOTES)


def _session(page: Page, title: str) -> object:
    return page.locator("#session-list li", has=page.locator("button.link", has_text=title))


@pytest.mark.parametrize(("language", "user"), [("en", "vi"), ("zh-Hans", "keeper")])
def test_chat_tools(world: World, notes: str, language: str, user: str) -> None:
    m = words(language)
    tag = "en" if language == "en" else "zh"
    context, page = world.context(user)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=world.url)
    page.goto("/t/birds/chat")
    _language(page, language)
    expect(page.locator("#session-search")).to_have_attribute("placeholder", m["chat.search"])

    # Shift+Enter breaks the line; Enter sends.
    question = page.locator("#question")
    question.click()
    page.keyboard.type(f"{QUESTION} ({tag})?")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("Along the delta?")
    assert "\n" in question.input_value()
    expect(page.locator("#transcript .msg")).to_have_count(0)
    page.keyboard.press("Enter")
    answer = page.locator("#transcript .msg.assistant").last
    expect(answer.locator(".answer-text")).to_contain_text("early spring", timeout=WAIT_MS)
    expect(question).to_have_value("")
    expect(page.locator("#transcript .msg.user").last).to_contain_text("Along the delta?")
    # The open conversation is in the address.
    expect(page).to_have_url(re.compile(r"[?&]session=ses_[0-9a-f]+"))
    session_url = page.url
    # The citation's quote with the words to look for marked: the answer has no time in it
    # for a "when", so it is replaced by the quote, and the question's words are marked.
    quote = answer.locator(".citations .quote")
    expect(quote).to_contain_text("early spring along the river delta")
    expect(quote.locator("mark").first).to_be_visible()
    assert {"migration", "delta"} <= set(quote.locator("mark").all_inner_texts())

    # Copy: the clipboard holds the answer; the button says so.
    copy = answer.locator(".copy-answer")
    expect(copy).to_have_text(m["js.chat.copy"])
    copy.click()
    expect(copy).to_have_text(m["js.chat.copied"])
    expect(copy).to_have_attribute("data-state", "copied")
    assert "early spring" in page.evaluate("navigator.clipboard.readText()")

    # Thumbs up with a comment; the stored state comes back after a reload.
    answer.locator(".rate-up").click()
    state = answer.locator(".feedback-state")
    expect(state).to_have_text(m["js.feedback.rated_up"])
    expect(answer.locator(".rate-up")).to_have_attribute("aria-pressed", "true")
    answer.locator(".feedback-text").fill(f"Right on time ({tag})")
    answer.locator(".feedback-comment button[type=submit]").click()
    expect(state).to_contain_text(f"Right on time ({tag})")
    page.reload()
    answer = page.locator("#transcript .msg.assistant").last
    expect(answer.locator(".feedback-state")).to_contain_text(m["js.feedback.rated_up"])
    expect(answer.locator(".feedback-state")).to_contain_text(f"Right on time ({tag})")
    expect(answer.locator(".rate-up")).to_have_attribute("aria-pressed", "true")
    expect(answer.locator(".rate-down")).to_have_attribute("aria-pressed", "false")
    # The marks were stored with the turn.
    assert "delta" in answer.locator(".citations .quote mark").all_inner_texts()

    # Back from a citation returns to the same conversation, transcript and all.
    answer.locator(".citations a.cite").first.click()
    expect(page).to_have_url(re.compile(r"/documents/doc_"))
    page.go_back()
    expect(page).to_have_url(session_url)
    expect(page.locator("#transcript .msg.user").first).to_contain_text(f"({tag})")
    expect(page.locator("#transcript .answer-text").last).to_contain_text("early spring")

    # Rename inline: Escape cancels, Enter saves.
    item = page.locator("#session-list li").first
    item.locator("button.rename").click()
    field = item.locator(".rename-input")
    expect(field).to_be_focused()
    field.fill("nothing")
    field.press("Escape")
    expect(page.locator("#session-list li button.link").first).to_contain_text(QUESTION)
    page.locator("#session-list li").first.locator("button.rename").click()
    field = page.locator("#session-list .rename-input")
    title = f"Migration {tag} 迁徙"
    field.fill(title)
    field.press("Enter")
    expect(page.locator("#session-list li button.link").first).to_have_text(title)

    # A second conversation, stopped while it streams: marked stopped, never stored.
    page.click("#new-chat")
    expect(page).not_to_have_url(re.compile("session="))
    page.fill("#question", f"Slowly: {QUESTION} ({tag})?")
    page.click("#ask")
    stop = page.locator("#stop")
    expect(stop).to_have_text(m["js.chat.stop"])
    expect(page.locator("#transcript .msg.streaming")).not_to_have_text("", timeout=WAIT_MS)
    if language == "en":
        shot(page, language, "chat-streaming")
    stop.click()
    stopped = page.locator("#transcript .msg.stopped")
    expect(stopped).to_contain_text(m["js.chat.stopped"])
    expect(stop).to_have_count(0)
    expect(stopped.locator(".copy-answer")).to_have_count(0)
    page.wait_for_timeout(1500)
    expect(_session(page, "Slowly")).to_have_count(0)

    # Search: by the new title, by a question's words, and nothing for a miss.
    search = page.locator("#session-search")
    search.fill(f"migration {tag}")
    expect(page.locator("#session-list li")).to_have_count(1)
    search.fill("along the delta")
    expect(page.locator("#session-list li button.link")).to_have_text([title])
    search.fill("xylophone")
    expect(page.locator("#session-list li")).to_have_count(0)
    search.fill("")
    expect(_session(page, title)).to_have_count(1)
    page.goto(session_url)
    expect(page.locator("#transcript .answer-text").last).to_contain_text("early spring")
    for width, scheme in ((1280, "light"), (390, "dark")):
        page.set_viewport_size({"width": width, "height": 900})
        page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        shot(page, language, f"chat-tools-{width}-{scheme}")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.emulate_media(color_scheme="light")

    # The tenant admin's Feedback page, in words.
    admin_context, admin = world.context("keeper")
    admin.goto("/t/birds/feedback")
    _language(admin, language)
    expect(admin.locator("nav.menu a", has_text=m["feedback.title"])).to_be_visible()
    rated = admin.locator("article.rated", has_text=f"Right on time ({tag})")
    expect(rated).to_have_count(1)
    expect(rated).to_have_attribute("data-rating", "up")
    expect(rated.locator(".rating")).to_have_text(m["feedback.rating.up"])
    expect(rated.locator(".question")).to_contain_text(f"({tag})")
    expect(rated.locator(".answer")).to_contain_text("early spring")
    expect(rated.locator(".passages")).to_contain_text("Pelican notes")
    expect(rated.locator(".check")).not_to_be_empty()
    expect(rated.locator(".state")).to_have_attribute("data-state", re.compile("answered|quoted"))
    admin.select_option("#f-rating", "down")
    with admin.expect_navigation():
        admin.click("#feedback-filter button[type=submit]")
    expect(admin.locator("article.rated", has_text=f"Right on time ({tag})")).to_have_count(0)
    admin.goto("/t/birds/feedback")
    for width, scheme in ((1280, "light"), (390, "dark")):
        admin.set_viewport_size({"width": width, "height": 900})
        admin.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        shot(admin, language, f"feedback-{width}-{scheme}")
        overflow = admin.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"{overflow}px wider than the {width}px window"

    # Delete (confirmed): gone from the list and, with it, from the Feedback page.
    dialogs = len(world.dialogs)
    _session(page, title).locator("button.delete").click()
    expect(_session(page, title)).to_have_count(0)
    assert world.dialogs[dialogs][0] == "confirm"
    expect(page.locator("#transcript .msg")).to_have_count(0)
    expect(page).not_to_have_url(re.compile("session="))
    admin.reload()
    expect(admin.locator("article.rated", has_text=f"Right on time ({tag})")).to_have_count(0)
    assert world.alerts() == []

    # A viewer has no Feedback page.
    if user == "vi":
        expect(page.locator("nav.menu a", has_text=m["feedback.title"])).to_have_count(0)
        response = page.goto("/t/birds/feedback")
        assert response is not None
        assert response.status == 403
    admin_context.close()
    context.close()


LEAVE = (
    "# Leave policy\n\n"
    "Paternity leave: male employees get 15 days of paid paternity leave.\n\n"
    "陪产假：男性员工享有15天带薪陪产假。\n"
).encode()
SALARIES = {
    "en": (
        "Salary bands",
        b"# Salary bands\n\nSalary bands for 2026.\n\n| Band | Salary range |\n|---|---|\n"
        b"| B1 | 20k-25k |\n| B2 | 25k-30k |\n| B3 | 30k-40k |\n| B4 | 40k-55k |\n",
        "Salary range for band B3?",
        "Salary range",
    ),
    "zh-Hans": (
        "薪资等级",
        "# 薪资等级\n\n2026年薪资等级。\n\n| 职级 | 月薪范围 |\n|---|---|\n"
        "| C1 | 8千-1万 |\n| C2 | 1万-1.5万 |\n| C3 | 1.5万-2万 |\n| C4 | 2万-3万 |\n".encode(),
        "C3职级的月薪范围是多少？",
        "月薪范围",
    ),
}
# Records every text the transcript ever shows, however briefly, from before the question is
# asked until the answer is in.
WATCH = """() => {
  window.__seen = [];
  const transcript = document.querySelector("#transcript");
  new MutationObserver(() => window.__seen.push(transcript.innerText)).observe(
    transcript, { childList: true, subtree: true, characterData: true });
}"""


@pytest.fixture(scope="module")
def leave(world: World) -> str:
    return _ready_document(world, "Leave policy", LEAVE)


@pytest.mark.parametrize(("language", "user"), [("en", "vi"), ("zh-Hans", "keeper")])
def test_answer_states(world: World, notes: str, leave: str, language: str, user: str) -> None:
    """The stand-in model streams a fabricated number slowly: the page shows how far it has
    got, never the number, then the documents' own sentence labelled as a quote; the label
    stays after a reload and from the conversation list. A checked answer is labelled so."""
    m = words(language)
    context, page = world.context(user)
    page.goto("/t/birds/chat")
    _language(page, language)

    # ("When …" asks for a date, which the stand-in's answer does not give: quoted.)
    where = "Where does the pelican migration start?"
    page.fill("#question", where)
    page.click("#ask")
    answered = page.locator("#transcript .msg.assistant").last
    expect(answered.locator(".state-answered")).to_have_text(
        m["js.state.answered"], timeout=WAIT_MS
    )
    expect(answered.locator(".answer-text")).to_contain_text("early spring")

    page.click("#new-chat")
    page.evaluate(WATCH)
    question = (
        "男性员工的陪产假有几天？"
        if language == "zh-Hans"
        else "How many days of paternity leave do male employees get?"
    )
    page.fill("#question", question)
    page.click("#ask")
    progress = page.locator("#transcript .msg.streaming .progress-text")
    expect(progress).to_be_visible(timeout=WAIT_MS)
    quoted = page.locator("#transcript .msg.assistant .state-quoted")
    expect(quoted).to_have_text(m["js.state.quoted"], timeout=WAIT_MS)
    answer = page.locator("#transcript .msg.assistant .answer-text").last
    expect(answer).to_contain_text("15")
    seen = page.evaluate("window.__seen")
    assert seen, "the transcript never changed"
    fabricated = "25天" if language == "zh-Hans" else "25 days"
    assert not [text for text in seen if fabricated in text], "a fabricated draft was shown"
    assert any(m["js.chat.writing"].split("{")[0] in text for text in seen), seen
    if language == "en":
        shot(page, language, "chat-quoted")

    # The label is the turn's, not the moment's: after a reload and from the list.
    page.reload()
    expect(page.locator("#transcript .state-quoted")).to_have_text(m["js.state.quoted"])
    expect(page.locator("#transcript .state-answered")).to_have_count(0)
    page.click("#new-chat")
    page.locator("#session-list button", has_text=question[:20]).click()
    expect(page.locator("#transcript .state-quoted")).to_be_visible()
    page.locator("#session-list button", has_text=where).first.click()
    expect(page.locator("#transcript .state-answered")).to_be_visible()

    # A table row is never shown without its header row: "band B3" is told from B1 and B2.
    title, table, asked, header = SALARIES[language]
    _ready_document(world, title, table)
    page.click("#new-chat")
    page.fill("#question", asked)
    page.click("#ask")
    shown = page.locator("#transcript .msg.assistant .answer-text").last
    expect(shown).to_contain_text(header, timeout=WAIT_MS)
    row = "30k-40k" if language == "en" else "1.5万-2万"
    expect(shown).to_contain_text(row)
    for other in ("20k-25k", "25k-30k", "8千-1万", "1万-1.5万"):
        expect(shown).not_to_contain_text(other)
    assert world.alerts() == []
    context.close()
