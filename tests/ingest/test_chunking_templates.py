"""Chunking templates (general, table, qa, articles, whole), row-aware tables and separators,
over hand-built blocks; parsers' table headers are tested in test_table_headers.py."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.kit.settings import ChunkingConfig
from ingest.chunking import TEMPLATES, Chunk, chunk_document, count_tokens, max_chars
from ingest.parsers import Block, ParsedDocument

HEADER = "Band | Salary range"


def _doc(*blocks: Block) -> ParsedDocument:
    return ParsedDocument(media_type="text/markdown", blocks=list(blocks))


def _table(rows: list[str], path: tuple[str, ...] = (), header: str | None = HEADER) -> list[Block]:
    head = [Block(header, path, "table", table_header=True)] if header is not None else []
    return head + [Block(row, path, "table") for row in rows]


def _bands(count: int) -> list[str]:
    # Descending, so B3 sits far from the header row at the top of the table.
    return [f"B{i} | {i * 10}k-{i * 10 + 10}k" for i in range(count, 0, -1)]


def _config(**values: object) -> ChunkingConfig:
    base: dict[str, object] = {"max_tokens": 40, "overlap_tokens": 8, "min_tokens": 4}
    base.update(values)
    return ChunkingConfig.model_validate(base)


def _paragraph_chunks(text: str, config: ChunkingConfig) -> list[str]:
    return [c.text for c in chunk_document(_doc(Block(text, (), "paragraph")), config)]


def _assert_bounded(chunks: list[Chunk], config: ChunkingConfig) -> None:
    assert [c.position for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.token_count == count_tokens(chunk.text) <= config.max_tokens
        assert len(chunk.text) <= max_chars(config)


def _assert_rows_under_header(chunks: list[Chunk], rows: list[str], header: str) -> None:
    """Every chunk holding a row holds the header line right above its first row."""
    row_set = set(rows)
    for chunk in chunks:
        lines = chunk.text.split("\n")
        held = [i for i, line in enumerate(lines) if line in row_set]
        if held:
            assert lines[held[0] - 1] == header, chunk.text
    for row in rows:
        assert any(row in c.text.split("\n") for c in chunks), row


class TestConfig:
    def test_defaults(self) -> None:
        config = ChunkingConfig()
        assert (config.template, config.separators) == ("general", ())
        assert set(TEMPLATES) == {"general", "qa", "table", "articles", "whole"}

    @pytest.mark.parametrize(
        "values",
        [
            {"template": "rows"},
            {"separators": ["x"] * 9},
            {"separators": [""]},
            {"separators": ["x" * 17]},
            {"separators": ["##", "##"]},
        ],
    )
    def test_rejected(self, values: dict[str, object]) -> None:
        with pytest.raises(ValidationError):
            ChunkingConfig.model_validate(values)

    def test_the_library_checks_what_it_is_given(self) -> None:
        @dataclass
        class Loose:
            template: str = "general"
            separators: tuple[str, ...] = ()
            max_tokens: int = 40
            overlap_tokens: int = 0
            min_tokens: int = 0

        doc = _doc(Block("text.", (), "paragraph"))
        with pytest.raises(ValueError, match="template"):
            chunk_document(doc, Loose(template="rows"))
        with pytest.raises(ValueError, match="separators"):
            chunk_document(doc, Loose(separators=("x",) * 9))
        with pytest.raises(ValueError, match="separator"):
            chunk_document(doc, Loose(separators=("",)))


class TestRowAwareGeneral:
    def test_small_table_reads_as_before(self) -> None:
        doc = _doc(Block("Bands:", (), "paragraph"), *_table(["B1 | 10k", "B2 | 20k"]))
        assert [c.text for c in chunk_document(doc, _config())] == [
            f"Bands:\n\n{HEADER}\nB1 | 10k\nB2 | 20k"
        ]

    def test_every_chunk_with_rows_starts_with_the_header(self) -> None:
        rows = _bands(40)
        config = _config()
        chunks = chunk_document(_doc(*_table(rows, ("Pay",))), config)
        assert len(chunks) > 5
        _assert_bounded(chunks, config)
        _assert_rows_under_header(chunks, rows, HEADER)
        assert all(c.text.startswith(HEADER + "\n") for c in chunks)
        b3 = [c for c in chunks if "B3 | 30k-40k" in c.text.split("\n")]
        assert b3
        assert all(c.heading_path == ("Pay",) for c in b3)
        # Overlap carries whole rows of the same table, never a header-less cut row.
        assert chunks[1].text.split("\n")[1] == chunks[0].text.split("\n")[-1]

    def test_table_after_prose_and_prose_after_table(self) -> None:
        rows = _bands(12)
        doc = _doc(
            Block("Salary bands are set every year. They are listed below.", (), "paragraph"),
            *_table(rows),
            Block("Bands are reviewed in March. Ask HR for details.", (), "paragraph"),
        )
        config = _config()
        chunks = chunk_document(doc, config)
        _assert_bounded(chunks, config)
        _assert_rows_under_header(chunks, rows, HEADER)
        # The header is never the last line of a chunk (it travels with a row).
        assert not any(c.text.endswith(HEADER) for c in chunks)
        # The prose after the table takes no rows as overlap: they would lose their header.
        last = chunks[-1].text
        assert last.startswith("Bands are reviewed") or HEADER in last

    def test_two_tables_keep_their_own_headers(self) -> None:
        first = [f"A{i} | {i}" for i in range(10)]
        second = [f"C{i} | {i}" for i in range(10)]
        doc = _doc(*_table(first, header="Alpha | Value"), *_table(second, header="Code | Cost"))
        chunks = chunk_document(doc, _config(max_tokens=24))
        _assert_rows_under_header(chunks, first, "Alpha | Value")
        _assert_rows_under_header(chunks, second, "Code | Cost")

    def test_a_table_without_header_keeps_whole_rows(self) -> None:
        rows = [f"r{i} | v{i} | w{i}" for i in range(30)]
        chunks = chunk_document(_doc(*_table(rows, header=None)), _config())
        assert len(chunks) > 1
        for chunk in chunks:
            assert all(line in rows for line in chunk.text.split("\n"))

    def test_ragged_rows_stay_whole(self) -> None:
        rows = ["B1", "B2 | 20k | note | extra | more", "B3 | 30k", "| | B4"]
        chunks = chunk_document(_doc(*_table(rows)), _config(max_tokens=16, overlap_tokens=0))
        _assert_rows_under_header(chunks, rows, HEADER)

    def test_header_alone_is_kept(self) -> None:
        doc = _doc(Block(HEADER, (), "table", table_header=True), Block("after.", (), "paragraph"))
        assert [c.text for c in chunk_document(doc, _config())] == [f"{HEADER}\n\nafter."]


class TestTableTemplate:
    def test_one_chunk_per_row_with_header_and_path(self) -> None:
        rows = _bands(5)
        doc = _doc(
            Block("Pay", ("Pay",), "heading"),
            Block("Intro text.", ("Pay",), "paragraph"),
            *_table(rows, ("Pay",)),
            Block("Outro text.", ("Pay",), "paragraph"),
        )
        chunks = chunk_document(doc, _config(template="table"))
        assert [c.text for c in chunks] == [
            "Intro text.",
            *(f"{HEADER}\n{row}" for row in rows),
            "Outro text.",
        ]
        assert {c.heading_path for c in chunks} == {("Pay",)}

    def test_rows_without_header_are_one_chunk_each(self) -> None:
        doc = _doc(*_table(["x | 1", "y | 2"], header=None))
        assert [c.text for c in chunk_document(doc, _config(template="table"))] == [
            "x | 1",
            "y | 2",
        ]

    def test_an_oversized_row_is_cut_under_its_header(self) -> None:
        row = "B9 | " + " ".join(f"word{i}" for i in range(200))
        config = _config(template="table")
        chunks = chunk_document(_doc(*_table([row, "B1 | 10k"])), config)
        _assert_bounded(chunks, config)
        assert len(chunks) > 2
        assert all(c.text.startswith(HEADER + "\n") for c in chunks)
        assert chunks[-1].text == f"{HEADER}\nB1 | 10k"


class TestQa:
    config = _config(max_tokens=64, template="qa")

    def test_questions_and_answers(self) -> None:
        text = (
            "Frequently asked.\n"
            "Q: How do I reset my password?\n"
            "A: Open settings and press reset.\n"
            "What is the VPN address?\n"
            "vpn.example.com is the address.\n"
            "问：年假有多少天？\n"
            "答：二十五天。"
        )
        assert _paragraph_chunks(text, self.config) == [
            "Frequently asked.",
            "Q: How do I reset my password?\nA: Open settings and press reset.",
            "What is the VPN address?\nvpn.example.com is the address.",
            "问：年假有多少天？\n答：二十五天。",
        ]

    def test_answers_across_paragraphs_and_a_long_answer_repeats_the_question(self) -> None:
        answer = " ".join(f"Step {i} of the procedure is short." for i in range(20))
        doc = _doc(
            Block("How do I file an expense?", (), "paragraph"),
            Block(answer, (), "paragraph"),
            Block("Who approves it?", (), "paragraph"),
            Block("Your manager.", (), "paragraph"),
        )
        chunks = chunk_document(doc, self.config)
        _assert_bounded(chunks, self.config)
        expense = [c for c in chunks if "procedure" in c.text]
        assert len(expense) > 1
        assert all(c.text.startswith("How do I file an expense?\n") for c in expense)
        # The question and its answer are joined by a line break, whatever separated them.
        assert chunks[-1].text == "Who approves it?\nYour manager."

    def test_question_headings_lead_and_consecutive_questions_join(self) -> None:
        doc = _doc(
            Block("Can I work remotely?", ("Can I work remotely?",), "heading"),
            Block("Yes, two days a week.", ("Can I work remotely?",), "paragraph"),
            Block("Is it paid? Is it tracked?\nBoth are true.", ("Other",), "paragraph"),
            Block("A question without an answer?", ("Last",), "paragraph"),
        )
        chunks = chunk_document(doc, self.config)
        assert [(c.heading_path, c.text) for c in chunks] == [
            (("Can I work remotely?",), "Can I work remotely?\nYes, two days a week."),
            (("Other",), "Is it paid? Is it tracked?\nBoth are true."),
            (("Last",), "A question without an answer?"),
        ]

    def test_code_holds_no_questions(self) -> None:
        doc = _doc(
            Block("How do I match digits?", (), "paragraph"),
            Block("re.compile(r'\\d+?')\nprint('done?')", (), "code"),
        )
        assert [c.text for c in chunk_document(doc, self.config)] == [
            "How do I match digits?\nre.compile(r'\\d+?')\nprint('done?')"
        ]

    def test_a_table_in_an_answer_repeats_question_and_header(self) -> None:
        rows = _bands(30)
        doc = _doc(Block("What are the bands?", (), "paragraph"), *_table(rows))
        config = _config(max_tokens=48, template="qa")
        chunks = chunk_document(doc, config)
        _assert_bounded(chunks, config)
        _assert_rows_under_header(chunks, rows, HEADER)
        assert all(c.text.startswith(f"What are the bands?\n{HEADER}\n") for c in chunks)

    def test_a_huge_question_is_kept_and_repeated_clipped(self) -> None:
        question = " ".join(f"word{i}" for i in range(300)) + "?"
        doc = _doc(Block(f"Q: {question}\nShort answer.", (), "paragraph"))
        chunks = chunk_document(doc, self.config)
        _assert_bounded(chunks, self.config)
        assert "word299?" in " ".join(c.text for c in chunks)
        assert "…\nShort answer." in chunks[-1].text


class TestArticles:
    config = _config(max_tokens=48, template="articles")

    def test_each_article_is_its_own_chunk(self) -> None:
        text = (
            "某某管理办法\n"
            "第一章 总则\n"
            "第一条 为了规范管理，制定本办法。\n"
            "第二条　本办法适用于全体员工。依照第一条执行。\n"
            "第二款内容。\n"
            "第二章 附则\n"
            "第三条\n"
            "本办法自发布之日起施行。"
        )
        assert _paragraph_chunks(text, self.config) == [
            "某某管理办法",
            "第一章 总则\n第一条 为了规范管理，制定本办法。",
            "第二条　本办法适用于全体员工。依照第一条执行。\n第二款内容。",
            "第二章 附则\n第三条\n本办法自发布之日起施行。",
        ]

    def test_english_markers_and_mentions(self) -> None:
        doc = _doc(
            Block("Article 1. Tenants own their data. Article 2 says more.", (), "paragraph"),
            Block("Article 2 Retention is thirty days.", (), "paragraph"),
            Block("It may be extended.", (), "paragraph"),
            Block("Section 3 Audit.", (), "paragraph"),
            Block("§ 4 Erasure.", (), "paragraph"),
        )
        chunks = chunk_document(doc, self.config)
        assert [c.text for c in chunks] == [
            "Article 1. Tenants own their data. Article 2 says more.",
            "Article 2 Retention is thirty days.\n\nIt may be extended.",
            "Section 3 Audit.",
            "§ 4 Erasure.",
        ]

    def test_a_long_article_repeats_its_marker(self) -> None:
        body = "".join(f"第{i}项规定知识库的管理办法。" for i in range(30))
        doc = _doc(
            Block(f"第十条 {body}", (), "paragraph"), Block("第十一条 短。", (), "paragraph")
        )
        chunks = chunk_document(doc, self.config)
        _assert_bounded(chunks, self.config)
        assert len(chunks) > 3
        assert all(c.text.startswith("第十条 ") for c in chunks[:-1])
        assert chunks[-1].text == "第十一条 短。"


class TestWhole:
    def test_one_chunk_per_document_with_headings_as_text(self) -> None:
        doc = _doc(
            Block("Guide", ("Guide",), "heading"),
            Block("First.", ("Guide",), "paragraph"),
            Block("Part", ("Guide", "Part"), "heading"),
            Block("Second.", ("Guide", "Part"), "paragraph"),
            *_table(["B1 | 10k"], ("Guide", "Part")),
        )
        chunks = chunk_document(doc, _config(template="whole"))
        assert chunks == [
            Chunk(f"Guide\n\nFirst.\n\nPart\n\nSecond.\n\n{HEADER}\nB1 | 10k", 0, (), 13)
        ]

    def test_an_oversized_document_is_cut_at_the_budget(self) -> None:
        text = " ".join(f"Sentence {i} explains hybrid retrieval." for i in range(100))
        config = _config(template="whole")
        chunks = chunk_document(_doc(Block(text, ("A",), "paragraph")), config)
        _assert_bounded(chunks, config)
        assert len(chunks) > 10
        assert all(c.heading_path == () for c in chunks)


class TestSeparators:
    def test_a_separator_starts_the_next_chunk(self) -> None:
        doc = _doc(Block("intro ### first part ###### second part", (), "paragraph"))
        chunks = chunk_document(doc, _config(separators=("###",)))
        assert [c.text for c in chunks] == ["intro", "### first part", "###### second part"]

    def test_punctuation_ends_the_chunk_before_the_cut(self) -> None:
        doc = _doc(Block("甲。乙。。丙", (), "paragraph"))
        chunks = chunk_document(doc, _config(separators=("。",)))
        assert [c.text for c in chunks] == ["甲。", "乙。。", "丙"]

    def test_whitespace_separators_cut_between_blocks(self) -> None:
        doc = _doc(
            Block("One.", (), "paragraph"),
            Block("Two.", (), "paragraph"),
            Block("- a\n- b", (), "list"),
        )
        assert [c.text for c in chunk_document(doc, _config(separators=("\n\n",)))] == [
            "One.",
            "Two.",
            "- a\n- b",
        ]
        assert [c.text for c in chunk_document(doc, _config(separators=("\n",)))] == [
            "One.",
            "Two.",
            "- a",
            "- b",
        ]

    def test_rows_are_never_cut_at_a_separator_and_keep_their_header(self) -> None:
        doc = _doc(*_table(["B1 | 10k ### x", "B2 | 20k"]))
        assert [c.text for c in chunk_document(doc, _config(separators=("###",)))] == [
            f"{HEADER}\nB1 | 10k ### x\nB2 | 20k"
        ]
        assert [c.text for c in chunk_document(doc, _config(separators=("\n",)))] == [
            f"{HEADER}\nB1 | 10k ### x",
            f"{HEADER}\nB2 | 20k",
        ]


class TestHostileShapes:
    @pytest.mark.parametrize("template", TEMPLATES)
    def test_ten_thousand_rows(self, template: str) -> None:
        rows = [f"B{i} | {i}k" for i in range(10_000)]
        config = ChunkingConfig(template=template)
        chunks = chunk_document(_doc(*_table(rows, ("Pay",))), config)
        _assert_bounded(chunks, config)
        assert all(c.text.startswith(HEADER + "\n") for c in chunks)
        _assert_rows_under_header(chunks, rows, HEADER)
        if template == "table":
            assert len(chunks) == 10_000

    def test_time_is_linear_in_the_rows(self) -> None:
        def cost(count: int) -> float:
            doc = _doc(*_table([f"B{i} | {i}k | note" for i in range(count)]))
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                chunk_document(doc, ChunkingConfig())
                best = min(best, time.perf_counter() - start)
            return best

        cost(500)  # warm-up
        ratios = [cost(20_000) / cost(5_000) for _ in range(3)]
        assert min(ratios) < 8, ratios  # linear: about 4

    @pytest.mark.parametrize("template", TEMPLATES)
    def test_a_megabyte_cell(self, template: str) -> None:
        rows = ["B1 | " + "x" * 1_000_000, "B2 | " + "word " * 200_000, "B3 | 30k"]
        config = ChunkingConfig(template=template)
        chunks = chunk_document(_doc(*_table(rows)), config)
        _assert_bounded(chunks, config)
        assert all(c.text.startswith(HEADER + "\n") for c in chunks)
        assert sum(c.text.count("x") for c in chunks) >= 1_000_000
        assert any(c.text.endswith("B3 | 30k") for c in chunks)

    def test_a_megabyte_header_is_kept_once_and_repeated_clipped(self) -> None:
        header = "h" * 1_000_000 + " | Notes"
        config = ChunkingConfig(template="table")
        chunks = chunk_document(_doc(*_table(["B1 | n1", "B2 | n2"], header=header)), config)
        _assert_bounded(chunks, config)
        assert sum(c.text.count("h") for c in chunks) >= 1_000_000
        assert chunks[-1].text.endswith("…\nB2 | n2")
        assert chunks[-2].text.endswith("…\nB1 | n1")

    @pytest.mark.parametrize("template", ["qa", "articles"])
    def test_time_is_linear_in_marker_lines(self, template: str) -> None:
        line = "Why is it so?" if template == "qa" else "第十条"

        def cost(count: int) -> float:
            doc = _doc(Block("\n".join([line] * count), (), "paragraph"))
            start = time.perf_counter()
            chunks = chunk_document(doc, ChunkingConfig(template=template))
            _assert_bounded(chunks, ChunkingConfig())
            return time.perf_counter() - start

        cost(200)  # warm-up
        ratios = [cost(40_000) / cost(10_000) for _ in range(3)]
        assert min(ratios) < 8, ratios

    def test_tiny_budget(self) -> None:
        config = ChunkingConfig(max_tokens=1, overlap_tokens=0, min_tokens=0, template="qa")
        doc = _doc(Block("Why?\nBecause.", (), "paragraph"), *_table(["a | b", "c | d"]))
        chunks = chunk_document(doc, config)
        _assert_bounded(chunks, config)
        assert {"Why", "?", "a", "d"} <= {c.text for c in chunks}


_CELL = st.text(alphabet="abcxyz0123456789 知识", min_size=1, max_size=30).map(str.strip)
_ROW = st.lists(_CELL.filter(bool), min_size=1, max_size=5).map(" | ".join)
_PROSE = st.text(alphabet="abc def. 知识？?\nQ:第一条", min_size=1, max_size=200).filter(str.strip)
_PIECE = st.one_of(
    _PROSE.map(lambda t: ("p", t, ())),
    st.tuples(_ROW, st.lists(_ROW, min_size=0, max_size=12)).map(lambda hr: ("t", hr[0], hr[1])),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(_PIECE, min_size=1, max_size=6),
    template=st.sampled_from(TEMPLATES),
    max_tokens=st.integers(min_value=8, max_value=80),
    separators=st.sampled_from([(), ("\n",), ("。", "###"), ("\n\n", "?")]),
)
def test_any_mix_stays_bounded_and_rows_keep_their_header(
    pieces: list[tuple[str, str, list[str]]],
    template: str,
    max_tokens: int,
    separators: tuple[str, ...],
) -> None:
    config = ChunkingConfig(
        max_tokens=max_tokens,
        overlap_tokens=max_tokens // 4,
        min_tokens=2,
        template=template,  # type: ignore[arg-type]
        separators=separators,
    )
    # Table t's header starts with the word "hdr{t}x", its rows with "row{t}x{i}": one token
    # each, so a row line and its table's header (whole or clipped) can be told apart.
    blocks: list[Block] = []
    rows_of: dict[int, list[str]] = {}
    for kind, text, rows in pieces:
        if kind == "p":
            blocks.append(Block(text, (), "paragraph"))
            continue
        t = len(rows_of)
        rows_of[t] = [f"row{t}x{i} | {row}" for i, row in enumerate(rows)]
        blocks.extend(_table(rows_of[t], header=f"hdr{t}x | {text}"))
    chunks = chunk_document(_doc(*blocks), config)
    _assert_bounded(chunks, config)
    for chunk in chunks:
        lines = chunk.text.split("\n")
        for index, line in enumerate(lines):
            if line.startswith("row") and (t := int(line[3 : line.index("x")])) in rows_of:
                assert any(h.startswith(f"hdr{t}x") for h in lines[:index]), chunk.text
    for rows in rows_of.values():
        for row in rows:
            if count_tokens(row) < max_tokens // 2:
                assert any(row in c.text.split("\n") for c in chunks), row
