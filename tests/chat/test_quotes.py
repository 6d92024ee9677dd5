"""Quotes (issue 22, item 4): whole sentences of one passage that never run into the next
heading or list item, a heading never quoted alone, a table row always quoted under its
header row, and the answer's words in the quote to highlight, in Chinese and English."""

from __future__ import annotations

from app.chat.citations import citations_for
from app.chat.faithfulness import QUOTED_PREFIX, closest_sentence, review
from app.chat.language import Language
from app.chat.prompt import Passage
from app.chat.quotes import highlights, quote, sentences, structure, supporting_quote
from app.kit.settings import ChatSettings, ChunkingConfig, ParseLimits
from ingest.chunking import chunk_document
from ingest.parsers import parse

REGULATIONS = (
    "一、年假\n员工每年享有五天年假。\n\n"
    "二、病假\n病假期间工资照常发放。\n"
    "三、育儿假\n（一）申请条件\n员工在子女三周岁前每年享有十天。"
)
ARTICLES = (
    "第十条 年假\n员工每年享有五天年假，须提前一周申请。\n"
    "第十一条 病假期间工资照常发放。\n第十二条 育儿假\n员工每年享有十天育儿假。"
)
HANDBOOK = (
    "# Leave\n"
    "1. Scope\n"
    "This policy covers all staff. It applies from May.\n"
    "2. Parental leave\n"
    "Parents get ten days off. Managers approve them.\n"
    "To apply:\n"
    "- Submit the form. Attach a birth certificate.\n"
    "- Wait for approval"
)
BANDS = [("B1", "10k-20k"), ("B2", "20k-30k"), ("B3", "30k-40k"), ("B4", "40k-50k")]
PAY_MD = (
    "# Pay\n\nSalary bands for 2026.\n\n| Band | Salary range |\n|:---|---:|\n"
    + "".join(f"| {band} | {salary} |\n" for band, salary in BANDS)
    + "\nBands are reviewed in March.\n"
).encode()
B3_QUOTE = "Band: B3; Salary range: 30k-40k"
QUESTION_B3 = "Salary range for band B3?"


def _passage(text: str, title: str = "policy.txt", headings: tuple[str, ...] = ()) -> Passage:
    return Passage(1, 7, 70, title, text, headings)


def _closest(question: str, text: str, count: int = 3) -> str:
    found = closest_sentence(question, [_passage(text)], count=count)
    assert found is not None
    return found[1]


async def _quoted(answer: str, question: str, passage: Passage, language: Language) -> str:
    """The text `review` gives for an unsupported answer: the quote that replaces it."""
    checked = await review(
        answer,
        question=question,
        language=language,
        passages=[passage],
        settings=ChatSettings(unsupported_answer="quote", quote_sentences=3),
    )
    assert checked.outcome == "quoted", checked
    return checked.text


# --- boundaries ----------------------------------------------------------------------------


def test_chinese_headings_are_boundaries_and_never_quoted_alone() -> None:
    kinds = [(s.text, s.kind) for s in structure(REGULATIONS)]
    assert kinds == [
        ("一、年假", "heading"),
        ("员工每年享有五天年假。", "text"),
        ("二、病假", "heading"),
        ("病假期间工资照常发放。", "text"),
        ("三、育儿假", "heading"),
        ("（一）申请条件", "heading"),
        ("员工在子女三周岁前每年享有十天。", "text"),
    ]
    # Three sentences asked for; the section ends after one: nothing of "三、育儿假" follows.
    assert _closest("病假期间工资怎么发？", REGULATIONS) == "病假期间工资照常发放。"
    # Only the headings name parental leave: the sentence under them is quoted, not them.
    assert _closest("育儿假有几天？", REGULATIONS) == "员工在子女三周岁前每年享有十天。"
    assert supporting_quote("十天", REGULATIONS, question="育儿假有几天？") == (
        "员工在子女三周岁前每年享有十天。"
    )


async def test_a_quoted_answer_stops_at_the_next_section() -> None:
    text = await _quoted(
        "病假期间工资减半[1]。", "病假期间工资怎么发？", _passage(REGULATIONS), "zh"
    )
    assert text == f"{QUOTED_PREFIX['zh']}病假期间工资照常发放。 [1]"


def test_articles_are_boundaries() -> None:
    assert [s.kind for s in structure(ARTICLES)] == ["heading", "text", "text", "heading", "text"]
    # An article with its text on its line is quoted whole, marker and all, and alone.
    assert _closest("病假期间工资怎么发？", ARTICLES) == "第十一条 病假期间工资照常发放。"
    assert _closest("育儿假有几天？", ARTICLES) == "员工每年享有十天育儿假。"
    assert _closest("年假要提前多久申请？", ARTICLES) == "员工每年享有五天年假，须提前一周申请。"


def test_english_headings_and_list_items_are_boundaries() -> None:
    parts = structure(HANDBOOK)
    assert [(s.text, s.kind) for s in parts if s.kind != "text"] == [
        ("# Leave", "heading"),
        ("1. Scope", "heading"),
        ("2. Parental leave", "heading"),
    ]
    # A list item's number or bullet stays with its first sentence.
    assert "- Submit the form." in sentences(HANDBOOK)
    assert sentences("1. Submit the form.\n2. Wait for approval.") == [
        "1. Submit the form.",
        "2. Wait for approval.",
    ]
    # Numbered lines beside each other are a list, not headings: both can be quoted.
    assert [s.kind for s in structure("1. Submit the form\n2. Wait for approval")] == [
        "text",
        "text",
    ]
    # The window goes on within the paragraph, and stops at the next list item or heading.
    assert _closest("How many days off do parents get?", HANDBOOK) == (
        "Parents get ten days off. Managers approve them. To apply:"
    )
    assert _closest("Which form do I submit?", HANDBOOK) == (
        "- Submit the form. Attach a birth certificate."
    )
    assert _closest("Who does the policy cover?", HANDBOOK) == (
        "This policy covers all staff. It applies from May."
    )
    # A heading's words count for the text under it: "scope" finds the scope's sentence.
    assert _closest("What is the scope?", HANDBOOK, count=1) == "This policy covers all staff."


def test_markdown_headings_and_a_heading_alone() -> None:
    text = "## Holidays\nThe office closes on public holidays.\n## Parental leave"
    assert quote(text, 0) == ""
    # A heading at the end with nothing under it is no quote.
    assert supporting_quote("parental leave", text, question="Parental leave?") == ""
    assert supporting_quote("closed on holidays", text) == "The office closes on public holidays."


# --- tables --------------------------------------------------------------------------------


def _pay_passage() -> Passage:
    [chunk] = chunk_document(parse(PAY_MD, "pay.md", ParseLimits()), ChunkingConfig())
    return _passage(chunk.text, "pay.md", chunk.heading_path)


def test_a_table_row_is_quoted_with_its_header() -> None:
    passage = _pay_passage()
    # As ingested: the parser's rows under their header row, B1 first.
    assert "Band | Salary range\nB1 | 10k-20k" in passage.text
    found = closest_sentence(QUESTION_B3, [passage], count=3)
    assert found is not None
    assert found[1] == B3_QUOTE
    assert "B1" not in found[1]
    assert "B2" not in found[1]
    assert supporting_quote("30k-40k", passage.text, question=QUESTION_B3) == B3_QUOTE
    # The same table as written in a text file: the rule line is no part of any quote.
    written = "| Band | Salary range |\n|---|---|\n| B1 | 10k-20k |\n| B3 | 30k-40k |"
    assert [s.kind for s in structure(written)] == ["header", "rule", "row", "row"]
    assert supporting_quote("30k-40k", written, question=QUESTION_B3) == B3_QUOTE
    # Chinese cells read with Chinese punctuation; a row without a header stays as written.
    zh = "等级 | 薪资范围\nB3 | 3万至4万"
    assert supporting_quote("3万至4万", zh, question="B3的薪资范围是多少？") == (
        "等级：B3；薪资范围：3万至4万"
    )
    assert supporting_quote("30k", "Intro.\nB3 | 30k", question="B3?") == "B3 | 30k"


async def test_a_supported_and_a_quoted_table_answer_carry_the_header() -> None:
    passage = _pay_passage()
    checked = await review(
        "30k-40k [1]",
        question=QUESTION_B3,
        language="en",
        passages=[passage],
        settings=ChatSettings(),
    )
    assert (checked.outcome, checked.grounded) == ("supported", True)
    assert checked.citations[0].quote == B3_QUOTE
    assert checked.text == f'30k-40k [1]\n\nSource: "{B3_QUOTE}" [1]'
    # A made-up range is replaced by the row, read under its header, and nothing else.
    text = await _quoted("Band B3 earns 90k-99k [1].", QUESTION_B3, passage, "en")
    assert text == f"{QUOTED_PREFIX['en']}{B3_QUOTE} [1]"


# --- highlights ----------------------------------------------------------------------------


def test_highlights_are_the_answers_words_as_the_quote_writes_them() -> None:
    quoted = "Every employee receives 25 days of paid vacation per year."
    # Stems find "employees" as "employee"; scaffolding and stop words are never marked.
    assert highlights("According to the documents: employees get 25 vacation days.", quoted) == [
        "employee",
        "25",
        "days",
        "vacation",
    ]
    assert highlights("The answer is: it is in the", quoted) == []
    assert highlights("anything", "") == []
    # Chinese words as written, never single characters nor the scaffold's "根据文档".
    found = highlights("根据文档，每位员工每年享有25天年假[1]。", "每位员工每年享有25天带薪年假。")
    assert {"员工", "每年", "享有", "25"} <= set(found)
    assert not {"根据", "文档"} & set(found)
    assert all(len(term) > 1 or term.isdigit() for term in found)
    # In the quote's order, each once.
    assert highlights("B3 is 30k-40k, band B3", B3_QUOTE) == ["Band", "B3", "30k", "40k"]


def test_citations_carry_their_highlights() -> None:
    passages = [_passage("Every employee receives 25 days of paid vacation per year.")]
    [cited] = citations_for("Employees get 25 days [1].", passages, snippet_chars=300)
    assert cited.highlight == ("employee", "25", "days")
