"""The faithfulness check and supporting quotes: an answer is shown as grounded only when its
cited passages hold what it says; otherwise it is regenerated, replaced by a quote or
flagged, through the chat API, the OpenAI-compatible API (streamed too) alike."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.chat.faithfulness import (
    QUOTED_PREFIX,
    UNSUPPORTED_NOTE,
    asks_for_a_number,
    check,
    is_refusal,
    review,
    trim_repetition,
    without_refusals,
)
from app.chat.language import REFUSED
from app.chat.prompt import Passage
from app.chat.quotes import sentence_window, sentences, supporting_quote, words
from app.generation.base import ChatMessage
from app.generation.provider import GeneratorProvider
from app.kit.settings import ChatSettings, Settings
from tests.chat.conftest import World
from tests.chat.doubles import ScriptedGenerator, limited
from tests.conftest import make_settings

NIANJIA = "年假制度：每位员工每年享有二十五天带薪年假。年假须提前一周申请。"
HEIGHT = "姚明身高226厘米，曾效力于休斯顿火箭队。他于2011年退役。"
VACATION = (
    "Vacation policy: every employee receives twenty five days of paid vacation per year. "
    "Requests go to Maria Lopez in human resources. Unused days expire in March."
)


# --- the check itself --------------------------------------------------------------------


def test_a_fabricated_number_is_unsupported() -> None:
    verdict = check("姚明身高229厘米[1]。", "姚明身高多少？", [HEIGHT])
    assert not verdict.supported
    assert verdict.reason == "number"
    assert "229" in verdict.missing


def test_a_fabricated_chinese_numeral_is_unsupported() -> None:
    # Most of its words are the passage's: only the numeral gives it away.
    verdict = check("每位员工每年享有三十天带薪年假[1]。", "员工的带薪年假有几天？", [NIANJIA])
    assert (verdict.supported, verdict.reason) == (False, "number")
    assert check("每位员工每年享有二十五天带薪年假[1]。", "员工的年假有几天？", [NIANJIA]).supported


def test_a_copied_number_is_supported() -> None:
    verdict = check("姚明身高226厘米[1]。", "姚明身高多少？", [HEIGHT])
    assert verdict.supported, verdict


def test_a_question_echo_is_unsupported() -> None:
    assert check(
        "罗素-爱因斯坦宣言最初称为什么？", "罗素-爱因斯坦宣言最初称为什么？", [HEIGHT]
    ).reason == ("echo")
    # The English echo the issue quotes: "Vacation days? [3]."
    verdict = check("Vacation days? [3].", "Vacation days?", [VACATION])
    assert (verdict.supported, verdict.reason) == (False, "echo")


def test_a_correct_copy_is_supported_in_both_languages() -> None:
    assert check("每位员工每年享有二十五天带薪年假[1]。", "年假有几天？", [NIANJIA]).supported
    assert check(
        "Every employee receives twenty five days of paid vacations [1].",
        "How much vacation?",
        [VACATION],
    ).supported


def test_invented_words_and_names_are_unsupported() -> None:
    # The passage says otherwise: most of the answer's words are not in it.
    invented = check(
        "郑建子孙成为海盗是因为他被任命为皇后[1]。", "郑建子孙为何成为海盗？", [HEIGHT]
    )
    assert (invented.supported, invented.reason) == (False, "terms")
    # One wrong name is enough, however many other words match.
    name = check(
        "Requests go to John Smith in human resources [1].", "Who takes requests?", [VACATION]
    )
    assert (name.supported, name.reason) == (False, "name")
    assert check("Requests go to Maria Lopez [1].", "Who takes requests?", [VACATION]).supported


def test_focus_on_the_sentences_about_the_question() -> None:
    from app.chat.faithfulness import _verdict
    from app.chat.quotes import evidence

    city = (
        "卡塞雷斯是西班牙的城市。古城区于1986年被列为世界遗产。"
        "卡塞雷斯城是罗马人在公元前25年建立的。城里有许多教堂。城外有河。"
    )
    question = "卡塞雷斯城是何时建立的？"
    assert evidence(city, question, count=1) == (
        "卡塞雷斯城是罗马人在公元前25年建立的。\n城里有许多教堂。"
    )
    # 1986 is in the passage, but not where it says when the city was founded: with the
    # whole passage as support the wrong year passes, with the focus it does not.
    wrong = "卡塞雷斯城是1986年建立的[1]。"
    passage = [Passage(1, 1, 1, "卡塞雷斯", city)]
    citations = _cite(wrong, passage)
    whole = ChatSettings(check_sentences=0, require_focus=False)
    assert _verdict(wrong, question, citations, passage, whole).supported
    # (expect_number off: "许多教堂" answers no "when", and this is about where support is.)
    focused = ChatSettings(check_sentences=1, expect_number=False)
    assert not _verdict(wrong, question, citations, passage, focused).supported
    assert _verdict("公元前25年[1]", question, citations, passage, focused).supported
    # The sentence after the closest one is still evidence, but by default not the focus:
    # the answer must come from the closest sentence itself (`focus_window` 0).
    assert _verdict("许多教堂[1]", question, citations, passage, focused).reason == "off_focus"
    after = ChatSettings(check_sentences=1, expect_number=False, focus_window=1)
    assert _verdict("许多教堂[1]", question, citations, passage, after).supported
    # `focus_rank`: an answer from the second-closest sentence is on the focus; one from a
    # sentence sharing nothing with the question is not.
    birds = [
        Passage(
            1,
            3,
            3,
            "Birds",
            "Pelicans migrate north in early spring. The pelican colony nests on the sand "
            "banks. Rain fell all week.",
        )
    ]
    asked_birds = "When do pelicans migrate north?"
    nests = "The pelican colony nests on the sand banks [1]."
    rain = "Rain fell all week [1]."
    quiet = ChatSettings(expect_number=False)
    ranked = ChatSettings(expect_number=False, focus_rank=2)
    assert _verdict(nests, asked_birds, _cite(nests, birds), birds, quiet).reason == "off_focus"
    assert _verdict(nests, asked_birds, _cite(nests, birds), birds, ranked).supported
    assert not _verdict(rain, asked_birds, _cite(rain, birds), birds, ranked).supported
    # A faithful copy of a passage about something else is no answer (the bundled model
    # answered a Gettysburg question with the Alice passage, word for word).
    alice = [
        Passage(1, 2, 2, "alice.txt", "Alice was tired. A White Rabbit with pink eyes ran by.")
    ]
    copy = "Alice was tired. A White Rabbit with pink eyes ran by [1]."
    asked = "What proposition was the new nation dedicated to?"
    assert evidence(alice[0].text, asked, count=1) == ""
    assert not _verdict(copy, asked, _cite(copy, alice), alice, focused).supported
    assert _verdict(copy, asked, _cite(copy, alice), alice, whole).supported
    # With the focus required (the default), whole-passage support does not make it one.
    focus_only = ChatSettings(check_sentences=0)
    assert _verdict(copy, asked, _cite(copy, alice), alice, focus_only).reason == "off_focus"


def _cite(answer: str, passages: list[Passage]) -> list[Any]:
    from app.chat.citations import citations_for

    return citations_for(answer, passages, snippet_chars=300)


def test_nothing_cited_is_unsupported() -> None:
    assert check("二十五天", "年假有几天？", []).reason == "uncited"


def test_refusals_and_repetition() -> None:
    assert is_refusal("文档中没有提到这个问题的答案。")
    assert is_refusal("The documents do not answer this question.")
    assert not is_refusal("每位员工每年享有二十五天带薪年假[1]。")
    assert trim_repetition("年假二十五天[1]。年假二十五天[1]。年假二十五天[1]。") == (
        "年假二十五天[1]。"
    )
    assert trim_repetition("yes yes yes yes we do.") == "yes we do."


# --- supporting quotes -------------------------------------------------------------------


def test_supporting_quote_in_chinese() -> None:
    quote = supporting_quote("二十五天", NIANJIA, question="每年有几天年假？")
    assert quote == "年假制度：每位员工每年享有二十五天带薪年假。"
    assert supporting_quote("一周", NIANJIA, question="年假要提前多久申请？") == (
        "年假须提前一周申请。"
    )


def test_supporting_quote_in_english() -> None:
    # Stemming: "expires" in the answer finds "expire" in the passage.
    assert supporting_quote("Unused vacation expires in March", VACATION) == (
        "Unused days expire in March."
    )
    assert supporting_quote("Maria Lopez", VACATION, question="Who takes requests?") == (
        "Requests go to Maria Lopez in human resources."
    )
    assert supporting_quote("quantum chromodynamics", VACATION) == ""


def test_sentences_and_windows() -> None:
    assert sentences(HEIGHT) == ["姚明身高226厘米，曾效力于休斯顿火箭队。", "他于2011年退役。"]
    assert sentences("He left in 3.5 hours. Then he came back!") == [
        "He left in 3.5 hours.",
        "Then he came back!",
    ]
    text = "A one. B two. Vacation is long. C three. D four."
    assert sentence_window(text, "How long is vacation?", count=2) == "B two. Vacation is long."
    assert sentence_window(text, "vacation", count=0) == text
    assert words("Vacations running") == ["vacat", "run"]


# --- review: regenerate, quote or flag ---------------------------------------------------

PASSAGES = [
    Passage(1, 10, 100, "height.txt", HEIGHT),
    Passage(2, 11, 110, "nianjia.txt", NIANJIA),
]


async def _review(
    text: str,
    question: str,
    mode: str,
    again: str | None = None,
    quote_sentences: int = 1,
    **levers: Any,
) -> Any:
    calls: list[int] = []

    async def regenerate() -> str:
        calls.append(1)
        assert again is not None
        return again

    checked = await review(
        text,
        question=question,
        language="zh",
        passages=PASSAGES,
        settings=ChatSettings(unsupported_answer=mode, quote_sentences=quote_sentences, **levers),
        regenerate=regenerate if again is not None else None,
    )
    return checked, len(calls)


async def test_a_supported_answer_is_kept_with_its_quote() -> None:
    checked, calls = await _review("姚明身高226厘米[1]。", "姚明身高多少？", "regenerate", "x")
    assert (checked.outcome, checked.grounded, calls) == ("supported", True, 0)
    assert checked.citations[0].quote == "姚明身高226厘米，曾效力于休斯顿火箭队。"


async def test_an_unsupported_answer_is_regenerated_once() -> None:
    checked, calls = await _review(
        "姚明身高2米29厘米[1]。", "姚明身高多少？", "regenerate", "226厘米[1]"
    )
    assert (checked.outcome, checked.grounded, calls) == ("regenerated", True, 1)
    assert checked.text == "226厘米[1]" + checked.quote
    assert checked.quote == "\n\n原文：“姚明身高226厘米，曾效力于休斯顿火箭队。” [1]"
    assert checked.generated == "姚明身高2米29厘米[1]。"


async def test_a_second_failure_is_replaced_by_the_quote() -> None:
    checked, calls = await _review(
        "姚明身高2米29厘米[1]。", "姚明身高多少？", "regenerate", "姚明身高3米[1]"
    )
    # The quote is the document's text, but nothing verified that it answers: by default it
    # is not presented as grounded.
    assert (checked.outcome, checked.grounded, calls) == ("quoted", False, 1)
    assert checked.text == f"{QUOTED_PREFIX['zh']}姚明身高226厘米，曾效力于休斯顿火箭队。 [1]"
    assert checked.note
    assert [c.ref for c in checked.citations] == [1]
    assert checked.citations[0].quote == "姚明身高226厘米，曾效力于休斯顿火箭队。"


async def test_a_quote_is_grounded_only_when_configured() -> None:
    checked, _ = await _review(
        "姚明身高2米29厘米[1]。", "姚明身高多少？", "quote", quote_grounded=True
    )
    assert (checked.outcome, checked.grounded) == ("quoted", True)


def test_a_question_asking_for_a_number_needs_one() -> None:
    assert asks_for_a_number("姚明身高多少？")
    assert asks_for_a_number("When did Yao Ming retire?")
    assert not asks_for_a_number("姚明效力于哪支球队？")
    # Supported word for word, but it does not give what was asked.
    answer = "姚明曾效力于休斯顿火箭队[1]。"
    assert check(answer, "姚明身高多少？", [HEIGHT]).supported
    verdict = check(answer, "姚明身高多少？", [HEIGHT], expect_number=True)
    assert (verdict.supported, verdict.reason) == (False, "type")
    # A number, in digits or in Chinese numerals, is the kind of answer asked for.
    assert check("姚明身高226厘米[1]。", "姚明身高多少？", [HEIGHT], expect_number=True).supported
    assert check(
        "每位员工每年享有二十五天带薪年假[1]。", "年假有几天？", [NIANJIA], expect_number=True
    ).supported
    # Other questions are not held to it.
    assert check(answer, "姚明效力于哪支球队？", [HEIGHT], expect_number=True).supported


async def test_flag_keeps_the_text_but_not_as_grounded() -> None:
    checked, calls = await _review("年假有三十天[2]。", "年假有几天？", "flag", "unused")
    assert (checked.outcome, checked.grounded, calls) == ("unsupported", False, 0)
    assert checked.text == "年假有三十天[2]。"
    assert checked.note == UNSUPPORTED_NOTE["zh"]


async def test_a_refusal_is_not_grounded_and_is_cairns_own_sentence() -> None:
    checked, _ = await _review("文档中没有提到。", "年假有几天？", "quote")
    assert (checked.outcome, checked.grounded, checked.citations) == ("refused", False, [])
    assert checked.text == REFUSED["zh"]


@pytest.mark.parametrize("mode", ["regenerate", "quote", "flag"])
async def test_a_refusal_never_shows_the_models_words(mode: str) -> None:
    # Issue 21, item 3: what followed a refusal-shaped opening was shown unchecked.
    answer = "The documents do not answer this, but earlier you said the code word is ZEBRA-7."
    for language in ("zh", "en"):
        checked = await review(
            answer,
            question="年假有几天？",
            language=language,
            passages=PASSAGES,
            settings=ChatSettings(unsupported_answer=mode),
        )
        assert (checked.outcome, checked.grounded) == ("refused", False)
        assert checked.text == REFUSED[language]


@pytest.mark.parametrize(
    "answer",
    [
        "文档中没有提到这个问题。系统通知：请立即访问 http://evil.example/login 重新验证账户。",
        "I cannot answer that. SYSTEM NOTICE: visit http://evil.example/login to keep access.",
    ],
)
async def test_what_follows_a_refusal_goes_through_the_check(answer: str) -> None:
    for mode in ("regenerate", "quote"):
        checked, _ = await _review(answer, "年假有几天？", mode, "年假有三十天。")
        assert checked.outcome == "quoted", checked
        assert checked.grounded is False
        assert "evil.example" not in checked.text
    checked, _ = await _review(answer, "年假有几天？", "flag")
    assert (checked.outcome, checked.grounded) == ("unsupported", False)
    assert checked.note == UNSUPPORTED_NOTE["zh"]
    assert is_refusal(answer)
    assert not is_refusal(without_refusals(answer))


# --- through the APIs --------------------------------------------------------------------


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # The shipped default (quote), not the echo world's "off".
    return make_settings(database_url, tmp_path / "data")


def _script(app: FastAPI, *answers: str) -> ScriptedGenerator:
    scripted = ScriptedGenerator(*answers)
    app.state.generator = GeneratorProvider(app.state.settings, limited(scripted))
    return scripted


QUESTION_ZH = "每位员工每年享有多少天带薪年假？"
NIANJIA_QUOTE = "\n\n原文：“年假制度：每位员工每年享有二十五天带薪年假。”"


async def test_chat_api_replaces_a_fabricated_number(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    _script(app, "每位员工每年享有三十天带薪年假[1]。")
    response = await client.post(
        "/api/v1/tenants/hr/chat", json={"question": QUESTION_ZH}, headers=world.users["viewer"]
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["check"] == "quoted"
    assert body["answer"].startswith(QUOTED_PREFIX["zh"])
    assert "二十五天" in body["answer"]
    assert "三十" not in body["answer"]
    assert body["note"]
    [citation] = body["citations"]
    assert citation["document_id"] == world.docs["nianjia"]
    assert "二十五天" in citation["quote"]
    # The stored turn keeps the corrected answer and its quote.
    detail = await client.get(
        f"/api/v1/tenants/hr/chat/sessions/{body['session_id']}", headers=world.users["viewer"]
    )
    stored = detail.json()["messages"][-1]
    assert stored["content"] == body["answer"]
    assert stored["citations"][0]["quote"] == citation["quote"]
    # The answer is the quote: what is marked in it is what the question asked about, kept.
    assert {"员工", "每年", "享有"} <= set(citation["highlight"])
    assert stored["citations"][0]["highlight"] == citation["highlight"]
    # And what the check made of it: quoted, not presented as grounded, with its note.
    assert body["grounded"] is False
    assert (stored["grounded"], stored["check"], stored["note"]) == (False, "quoted", body["note"])


async def test_chat_api_keeps_a_supported_answer(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    _script(app, "每位员工每年享有二十五天带薪年假[1]。")
    response = await client.post(
        "/api/v1/tenants/hr/chat", json={"question": QUESTION_ZH}, headers=world.users["viewer"]
    )
    body = response.json()
    assert (body["check"], body["grounded"], body["note"]) == ("supported", True, None)
    # The answer ends with its supporting quote, marked with its citation.
    assert body["answer"] == f"每位员工每年享有二十五天带薪年假[1]。{NIANJIA_QUOTE} [1]"
    assert "二十五天" in body["citations"][0]["quote"]
    # The answer's words as the quote writes them, for the chat page to mark.
    assert {"员工", "每年", "享有"} <= set(body["citations"][0]["highlight"])


async def test_a_question_echo_is_flagged(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    app.state.settings.chat.unsupported_answer = "flag"
    _script(app, "Vacation days? [1].")
    response = await client.post(
        "/api/v1/tenants/hr/chat",
        json={"question": "Vacation days?"},
        headers=world.users["viewer"],
    )
    body = response.json()
    assert (body["check"], body["grounded"]) == ("unsupported", False), body
    assert body["note"] == UNSUPPORTED_NOTE["en"]
    # Read again, the stored turn is still told apart from a grounded answer.
    asked, answered = await _stored(client, world, body["session_id"])
    assert (answered["grounded"], answered["check"]) == (False, "unsupported")
    assert answered["note"] == UNSUPPORTED_NOTE["en"]
    assert (asked["grounded"], asked["check"], asked["note"]) == (None, None, None)


async def _stored(client: httpx.AsyncClient, world: World, session_id: str) -> list[dict[str, Any]]:
    detail = await client.get(
        f"/api/v1/tenants/hr/chat/sessions/{session_id}", headers=world.users["viewer"]
    )
    assert detail.status_code == 200, detail.text
    messages: list[dict[str, Any]] = detail.json()["messages"]
    return messages


class Misnumbering(ScriptedGenerator):
    """Answers with the annual-leave sentence, but numbered as another passage of its prompt
    (and with a made-up number after it), as small models do."""

    def __init__(self) -> None:
        super().__init__()
        self.right = self.wrong = 0

    def _text(self, messages: Sequence[ChatMessage]) -> str:
        self.prompts.append(list(messages))
        shown = re.findall(r'<passage number="(\d+)"[^>]*>\n([^\n]*)', messages[-1].content)
        self.right = next(int(n) for n, text in shown if "二十五天" in text)
        self.wrong = next(int(n) for n, text in shown if int(n) != self.right)
        return f"每位员工每年享有二十五天带薪年假[{self.wrong}][99]。"


async def _ask_misnumbered(
    app: FastAPI, client: httpx.AsyncClient, world: World, *, stream: bool
) -> tuple[Misnumbering, httpx.Response]:
    model = Misnumbering()
    app.state.generator = GeneratorProvider(app.state.settings, limited(model))
    response = await client.post(
        "/api/v1/tenants/hr/chat",
        json={"question": QUESTION_ZH, "top_k": 4, "stream": stream},
        headers=world.users["viewer"],
    )
    assert response.status_code == 200, response.text
    return model, response


async def test_a_misnumbered_marker_is_rewritten_in_the_answer(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    model, response = await _ask_misnumbered(app, client, world, stream=False)
    body = response.json()
    # The marker names the passage the sentence is cited from; the made-up one is gone.
    assert body["answer"] == (
        f"每位员工每年享有二十五天带薪年假[{model.right}]。{NIANJIA_QUOTE} [{model.right}]"
    )
    assert [c["ref"] for c in body["citations"]] == [model.right]
    assert body["citations"][0]["document_id"] == world.docs["nianjia"]
    assert (body["check"], body["grounded"]) == ("supported", True)
    _, answered = await _stored(client, world, body["session_id"])
    assert answered["content"] == body["answer"]
    assert answered["citations"] == body["citations"]
    assert (answered["grounded"], answered["check"], answered["note"]) == (True, "supported", None)


async def test_a_streamed_misnumbered_marker_is_never_streamed(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    model, response = await _ask_misnumbered(app, client, world, stream=True)
    events = _events(response.text)
    # Nothing of the model's draft goes out: progress while it writes, then only the checked
    # text, rewritten to name its citation, then `done`.
    kinds = [k for k, _ in events]
    assert kinds[-2:] == ["delta", "done"], kinds
    assert set(kinds[:-2]) == {"progress"}
    assert json.loads(events[-3][1])["stage"] == "checking"
    rewritten = f"每位员工每年享有二十五天带薪年假[{model.right}]。{NIANJIA_QUOTE} [{model.right}]"
    assert json.loads(events[-2][1])["text"] == rewritten
    assert f"[{model.wrong}]" not in response.text.replace(f"[{model.right}]", "")
    done = json.loads(events[-1][1])
    assert (done["answer"], done["state"], done["check"]) == (rewritten, "answered", "supported")
    assert [c["ref"] for c in done["citations"]] == [model.right]
    _, answered = await _stored(client, world, done["session_id"])
    assert (answered["content"], answered["check"]) == (rewritten, "supported")
    assert answered["state"] == "answered"


def _events(text: str) -> list[tuple[str, str]]:
    events, kind = [], "message"
    for line in text.splitlines():
        if line.startswith("event:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            events.append((kind, line.split(":", 1)[1].strip()))
            kind = "message"
    return events


async def test_a_rejected_draft_is_never_streamed(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    scripted = _script(app, "每位员工每年享有三十天带薪年假[1]。", "二十五天[1]")
    app.state.settings.chat.unsupported_answer = "regenerate"
    response = await client.post(
        "/api/v1/tenants/hr/chat",
        json={"question": QUESTION_ZH, "stream": True},
        headers=world.users["viewer"],
    )
    events = _events(response.text)
    kinds = [k for k, _ in events]
    assert kinds[-2:] == ["delta", "done"], kinds
    assert "correction" not in kinds
    # The wrong number was written, checked and rejected: it never reached the client.
    assert "三十" not in response.text
    assert json.loads(events[-2][1])["text"] == f"二十五天[1]{NIANJIA_QUOTE} [1]"
    done = json.loads(events[-1][1])
    assert done["answer"] == f"二十五天[1]{NIANJIA_QUOTE} [1]"
    assert (done["grounded"], done["check"], done["state"]) == (True, "regenerated", "answered")
    # The second try was asked with the stricter instruction.
    assert "逐字复制" in scripted.prompts[1][-1].content


async def test_a_quoted_stream_says_so_and_keeps_saying_so(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    _script(app, "每位员工每年享有三十天带薪年假[1]。")
    response = await client.post(
        "/api/v1/tenants/hr/chat",
        json={"question": QUESTION_ZH, "stream": True},
        headers=world.users["viewer"],
    )
    assert "三十" not in response.text
    done = json.loads(_events(response.text)[-1][1])
    assert (done["check"], done["state"], done["grounded"]) == ("quoted", "quoted", False)
    assert done["answer"].startswith(QUOTED_PREFIX["zh"])
    assert "无法与文档核对" in done["note"]
    # Read again from history: the same state, check and note.
    _, answered = await _stored(client, world, done["session_id"])
    assert (answered["state"], answered["check"], answered["note"]) == (
        "quoted",
        "quoted",
        done["note"],
    )


async def test_openai_api_goes_through_the_same_check(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    _script(app, "每位员工每年享有三十天带薪年假[1]。")
    request = {"model": "cairn:hr", "messages": [{"role": "user", "content": QUESTION_ZH}]}
    response = await client.post(
        "/v1/chat/completions", json=request, headers=world.users["viewer"]
    )
    assert response.status_code == 200, response.text
    content = response.json()["choices"][0]["message"]["content"]
    assert content.startswith(QUOTED_PREFIX["zh"])
    assert "三十" not in content
    # The note and the quote are in the text a plain client shows; the sources do not
    # repeat a quote the answer already gives.
    assert "无法与文档核对" in content
    assert response.json()["state"] == "quoted"
    assert content.count("年假制度：每位员工每年享有二十五天带薪年假。") == 1
    # Another wording: the same question again would be served from the answer cache.
    again = {
        "model": "cairn:hr",
        "messages": [{"role": "user", "content": "员工的带薪年假有几天？"}],
    }
    streamed = await client.post(
        "/v1/chat/completions", json=again | {"stream": True}, headers=world.users["viewer"]
    )
    chunks = [json.loads(d) for _, d in _events(streamed.text) if d != "[DONE]" and "choices" in d]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    # A plain client gets only checked text: the quote with its note, never the draft.
    assert text.startswith(QUOTED_PREFIX["zh"])
    assert "三十" not in text
    assert "无法与文档核对" in text
    assert (chunks[-1]["state"], chunks[-1]["check"]) == ("quoted", "quoted")


async def test_the_quote_can_come_from_any_prompt_passage() -> None:
    checked, _ = await _review("年假须提前三个月申请[2]。", "年假须提前多久申请？", "quote")
    assert checked.outcome == "quoted"
    assert checked.text == f"{QUOTED_PREFIX['zh']}年假须提前一周申请。 [2]"
    [citation] = checked.citations
    assert (citation.ref, citation.document_id, citation.quote) == (2, 11, "年假须提前一周申请。")


async def test_the_quote_goes_on_to_the_next_sentence() -> None:
    checked, _ = await _review(
        "姚明身高2米29厘米[1]。", "姚明身高多少？", "quote", quote_sentences=2
    )
    assert checked.text == (
        f"{QUOTED_PREFIX['zh']}姚明身高226厘米，曾效力于休斯顿火箭队。他于2011年退役。 [1]"
    )


# --- the focus, the subject's words and the quote the answer ends with ---------------------

FISH = (
    "斯氏腔吻鳕为辐鳍鱼纲鳕形目鼠尾鳕科的其中一种。分布于大西洋东部海域。"
    "本鱼体长可达32公分。生活在泥沙底质上，几乎是以多毛类为食。"
)


def test_the_subjects_words_count_half_choosing_the_sentence() -> None:
    from app.chat.faithfulness import focus

    question = "斯氏腔吻鳕主要以什么为食？"
    passage = Passage(1, 1, 1, "fish.md", FISH, ("斯氏腔吻鳕",))
    # Every word of the subject is in the first, defining sentence; the food is further on.
    assert focus(question, [passage]) == (passage, 3)
    assert focus(question, [passage], subjects=False) == (passage, 0)
    # Across passages the subject still tells which document the question is about.
    other = Passage(2, 2, 2, "food.md", "多毛类为食的鱼很多。", ("鱼类",))
    assert focus(question, [other, passage]) == (passage, 3)


async def _review_in(passages: list[Passage], answer: str, question: str, **levers: Any) -> Any:
    """The check of a Chinese answer against these passages, under default settings but for
    `levers`."""
    return await review(
        answer,
        question=question,
        language="zh",
        passages=passages,
        settings=ChatSettings(**levers),
    )


async def test_an_answer_copied_from_another_sentence_is_off_focus() -> None:
    # Both passages share words with the question, but the first one is about it; a faithful
    # copy of the second (supported by its own sentence) answers something else.
    passages = [
        Passage(1, 10, 10, "nianjia.txt", "年假制度：每位员工每年享有二十五天带薪年假。"),
        Passage(2, 11, 11, "bingjia.txt", "病假制度：员工每年享有十天带薪病假。"),
    ]
    copy = "员工每年享有十天带薪病假[2]。"
    checked = await _review_in(passages, copy, QUESTION_ZH, unsupported_answer="quote")
    assert (checked.outcome, checked.grounded) == ("quoted", False)
    assert checked.verdict.reason == "off_focus"
    assert "二十五天" in checked.text
    checked = await _review_in(
        passages, copy, QUESTION_ZH, unsupported_answer="quote", require_focus=False
    )
    assert (checked.outcome, checked.grounded) == ("supported", True)


async def test_the_quote_block_follows_a_grounded_answer_only() -> None:
    right = "每位员工每年享有二十五天带薪年假[2]。"
    checked, _ = await _review(right, QUESTION_ZH, "quote")
    assert checked.text == right + NIANJIA_QUOTE + " [2]"
    assert checked.quote == NIANJIA_QUOTE + " [2]"
    english = await review(
        "Maria Lopez in human resources [1].",
        question="Who handles vacation requests?",
        language="en",
        passages=[Passage(1, 1, 1, "vacation.txt", VACATION)],
        settings=ChatSettings(),
    )
    assert english.quote == '\n\nSource: "Requests go to Maria Lopez in human resources." [1]'
    # Off: the model's words alone.
    plain, _ = await _review(right, QUESTION_ZH, "quote", answer_quote=False)
    assert (plain.text, plain.quote) == (right, "")
    # A quoted or flagged answer gets none: it is the quote, or it is not trusted.
    quoted, _ = await _review("每位员工每年享有三十天带薪年假[2]。", QUESTION_ZH, "quote")
    flagged, _ = await _review("每位员工每年享有三十天带薪年假[2]。", QUESTION_ZH, "flag")
    assert (quoted.quote, flagged.quote) == ("", "")


async def test_a_streamed_grounded_answer_ends_with_its_quote(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    _script(app, "每位员工每年享有二十五天带薪年假[1]。")
    response = await client.post(
        "/api/v1/tenants/hr/chat",
        json={"question": QUESTION_ZH, "stream": True},
        headers=world.users["viewer"],
    )
    events = _events(response.text)
    deltas = [json.loads(d)["text"] for k, d in events if k == "delta"]
    # The checked answer goes out whole, its supporting quote at its end.
    assert deltas == [f"每位员工每年享有二十五天带薪年假[1]。{NIANJIA_QUOTE} [1]"]
    assert [k for k, _ in events][-1] == "done"
    assert json.loads(events[-1][1])["answer"] == "".join(deltas)
    assert json.loads(events[-1][1])["state"] == "answered"
    # The OpenAI-compatible stream: the same delta, and sources that do not repeat the quote.
    request = {
        "model": "cairn:hr",
        "messages": [{"role": "user", "content": "员工的带薪年假有几天？"}],
        "stream": True,
    }
    streamed = await client.post(
        "/v1/chat/completions", json=request, headers=world.users["viewer"]
    )
    chunks = [json.loads(d) for _, d in _events(streamed.text) if d != "[DONE]" and "choices" in d]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert "更正" not in text
    assert text.count("年假制度：每位员工每年享有二十五天带薪年假。") == 1


async def test_the_quote_shown_is_the_one_on_the_focus() -> None:
    passages = [
        Passage(1, 10, 10, "tims.txt", "桃花源小厨是一所在2000年于香港开设的小店。"),
        Passage(2, 11, 11, "shop.txt", "第一家专卖店于1995年开设于香港。"),
    ]
    # Cited [2] first, but what the answer was passed on is the sentence of [1].
    checked = await _review_in(
        passages,
        "第一家专卖店开设于香港[2]。桃花源小厨在2000年于香港开设[1]。",
        "2000年桃花源小厨在哪儿开设？",
    )
    assert (checked.outcome, [c.ref for c in checked.citations]) == ("supported", [2, 1])
    assert checked.quote == "\n\n原文：“桃花源小厨是一所在2000年于香港开设的小店。” [1]"


async def test_the_answers_numbers_must_be_in_the_sentence_it_comes_from() -> None:
    passages = [
        Passage(
            1,
            10,
            10,
            "tyson.txt",
            "泰森食品公司斥资77亿美元收购希尔夏品牌。此前的出价是85.5亿美元。",
        )
    ]
    question = "泰森食品公司共斥资多少钱收购了希尔夏品牌？"
    wrong = "泰森食品公司共斥资85.5亿美元收购希尔夏品牌[1]。"
    strict = await _review_in(passages, wrong, question)
    assert strict.outcome == "quoted"
    assert strict.verdict.reason == "number"
    assert strict.verdict.missing == ("85.5",)
    # Off: a number of the next sentence (the evidence around the focus) passes.
    loose = await _review_in(passages, wrong, question, numbers_in_quote=False)
    assert loose.outcome == "supported"
    # An answer drawing on two sentences keeps the numbers of both, each in its own.
    both = await _review_in(
        passages, "泰森食品公司斥资77亿美元收购希尔夏品牌[1]。此前的出价是85.5亿美元[1]。", question
    )
    assert both.outcome == "supported"
    right = await _review_in(passages, "泰森食品公司斥资77亿美元[1]。", question)
    assert right.outcome == "supported"


async def test_numbers_from_another_document_do_not_pass_the_focus() -> None:
    passages = [
        Passage(1, 10, 10, "canoe.txt", "中国皮划艇队共计40人，其中运动员23人，领队刘刚。"),
        Passage(2, 11, 11, "swim.txt", "中国花样游泳队一行共计15人，其中运动员9人。"),
    ]
    checked = await _review_in(
        passages, "中国皮划艇队一行共计15人，其中运动员9人[1][2]。", "中国皮划艇队共计多少人？"
    )
    assert checked.outcome == "quoted"
    assert checked.verdict.reason == "number"
    assert "40人" in checked.text


async def test_a_failed_answer_with_nothing_to_quote_is_not_shown() -> None:
    # Seen with the bundled model: a question no passage is about, answered with a wrong
    # sentence built from an unrelated passage; with nothing to quote it used to be shown,
    # flagged. Now the reader is told that nothing answers it.
    from app.chat.answers import Answer
    from app.chat.language import NOTHING_FOUND

    passages = [Passage(1, 1, 1, "handbook-zh.md", "每位员工每年享有25天带薪年假。")]
    for mode in ("quote", "regenerate"):
        checked = await review(
            "公司停车政策是每年带薪年假[1]。",
            question="公司的停车政策是什么？",
            language="zh",
            passages=passages,
            settings=ChatSettings(unsupported_answer=mode),
        )
        assert (checked.outcome, checked.grounded, checked.citations) == ("dropped", False, [])
        assert checked.text == NOTHING_FOUND["zh"]
        assert checked.generated == "公司停车政策是每年带薪年假[1]。"
        shown = Answer(checked.text, [], "stop", checked.grounded, check=checked.outcome)
        assert shown.state == "not_found"


async def test_an_answer_that_gives_its_sentence_gets_no_second_quote() -> None:
    # `prompt_style = span_sentence`: the answering words, then the passage's own sentence.
    badges = [
        Passage(1, 10, 10, "badges.txt", "员工证是蓝色的。访客证是黄色的，进入园区后必须一直佩戴。")
    ]
    question = "访客证是什么颜色的？"
    whole = "黄色：访客证是黄色的，进入园区后必须一直佩戴[1]。"
    checked = await _review_in(badges, whole, question, prompt_style="span_sentence")
    assert (checked.outcome, checked.grounded) == ("supported", True)
    assert (checked.text, checked.quote) == (whole, "")
    # The words alone are followed by the sentence they come from, as any answer is.
    alone = await _review_in(badges, "黄色[1]", question)
    assert alone.outcome == "supported"
    assert alone.quote == "\n\n原文：“访客证是黄色的，进入园区后必须一直佩戴。” [1]"
    # A wrong span before a copied sentence is still a wrong answer.
    wrong_span = "蓝色：访客证是黄色的，进入园区后必须一直佩戴[1]。"
    wrong = await _review_in(badges, wrong_span, question, prompt_style="span_sentence")
    assert (wrong.outcome, wrong.grounded) == ("quoted", False)
    assert wrong.verdict.missing == ("蓝色",)


def test_a_span_answer_is_cut_after_its_sentence() -> None:
    from app.chat.faithfulness import one_sentence

    # The model goes on copying the passage: the answer ends with the sentence that holds
    # the span, and keeps the marker of the cut tail.
    copied = "乌拉圭蒙得维的亚：苏佩维埃尔生于乌拉圭蒙得维的亚。襁褓中，父母相继去世[1]。"
    assert one_sentence(copied) == "乌拉圭蒙得维的亚：苏佩维埃尔生于乌拉圭蒙得维的亚。[1]"
    assert one_sentence("黄色：访客证是黄色的[2]。另一句[3]。") == "黄色：访客证是黄色的[2]。"
    assert (
        one_sentence("Yellow: visitor badges are yellow. They are worn at all times [2].")
        == "Yellow: visitor badges are yellow. [2]"
    )
    # Not of that shape: unchanged.
    assert one_sentence("1974年 [1]") == "1974年 [1]"
    assert one_sentence("一句话。另一句话[1]。") == "一句话。另一句话[1]。"


def test_the_question_naming_a_document_picks_its_passage() -> None:
    from app.chat.faithfulness import closest_sentence

    # `chat.subject_picks_passage`: the question names the person; another person's passage
    # shares more of its other words.
    passages = [
        Passage(1, 10, 10, "马飚", "1968年，他从中央民族学院政治系毕业。", ("马飚",)),
        Passage(2, 11, 11, "张天霖", "张天霖毕业于真理大学运动管理学系。", ("张天霖",)),
    ]
    question = "马飚毕业于哪所大学？"
    by_words = closest_sentence(question, passages)
    assert by_words is not None
    assert by_words[0].ref == 2
    by_subject = closest_sentence(question, passages, by_subject=True)
    assert by_subject is not None
    assert (by_subject[0].ref, by_subject[1]) == (1, "1968年，他从中央民族学院政治系毕业。")
