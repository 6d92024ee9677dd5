import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.kit.settings import ChunkingConfig
from ingest.chunking import Chunk, chunk_document, count_tokens, split_sentences
from ingest.parsers import Block, ParsedDocument


def _doc(*blocks: Block) -> ParsedDocument:
    return ParsedDocument(media_type="text/plain", blocks=list(blocks))


def _english(count: int, start: int = 0) -> str:
    return " ".join(f"Sentence {i} explains hybrid retrieval." for i in range(start, start + count))


def _chinese(count: int) -> str:
    return "".join(f"第{i}条规定知识库的管理办法。" for i in range(count))


class TestCountTokens:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("", 0),
            ("   \n\t", 0),
            ("hello", 1),
            ("hello world", 2),
            ("internationalization", 4),  # 20 letters -> ceil(20 / 6)
            ("中文测试", 4),
            ("知识库，好！", 6),
            ("a.b", 3),
            ("2024年", 2),
            ("x_y", 3),
            ("ŝtono", 1),
        ],
    )
    def test_estimates(self, text: str, expected: int) -> None:
        assert count_tokens(text) == expected


class TestSplitSentences:
    def test_english(self) -> None:
        assert split_sentences("One. Two! Three? 3.14 is pi. Done") == [
            "One.",
            "Two!",
            "Three?",
            "3.14 is pi.",
            "Done",
        ]

    def test_chinese_without_spaces(self) -> None:
        assert split_sentences("第一句。第二句！第三句？第四句；最后……完") == [
            "第一句。",
            "第二句！",
            "第三句？",
            "第四句；",
            "最后……",
            "完",
        ]

    def test_closing_quotes_stay_with_the_sentence(self) -> None:
        assert split_sentences('He said "stop." Then left. 她说：“好。”然后走了。') == [
            'He said "stop."',
            "Then left.",
            "她说：“好。”",
            "然后走了。",
        ]


class TestConfig:
    def test_overlap_must_be_below_max(self) -> None:
        with pytest.raises(ValidationError):
            ChunkingConfig(max_tokens=32, overlap_tokens=32)

    def test_defaults(self) -> None:
        config = ChunkingConfig()
        assert (config.max_tokens, config.overlap_tokens, config.min_tokens) == (256, 32, 16)


class TestChunkDocument:
    config = ChunkingConfig(max_tokens=40, overlap_tokens=8, min_tokens=4)

    def test_budgets_and_positions(self) -> None:
        doc = _doc(
            Block(_english(30), ("A",), "paragraph"),
            Block(_chinese(20), ("B",), "paragraph"),
        )
        chunks = chunk_document(doc, self.config)
        assert len(chunks) > 4
        assert [c.position for c in chunks] == list(range(len(chunks)))
        for chunk in chunks:
            assert chunk.token_count == count_tokens(chunk.text)
            assert chunk.token_count <= self.config.max_tokens

    def test_small_sections_stay_whole_and_unprefixed(self) -> None:
        doc = _doc(
            Block("Intro", ("Intro",), "heading"),
            Block("First paragraph.", ("Intro",), "paragraph"),
            Block("Second paragraph.", ("Intro",), "paragraph"),
        )
        assert chunk_document(doc, self.config) == [
            Chunk("First paragraph.\n\nSecond paragraph.", 0, ("Intro",), 8)
        ]

    def test_headings_never_mixed(self) -> None:
        doc = _doc(
            Block("alpha one.", ("A",), "paragraph"),
            Block("beta two.", ("A", "B"), "paragraph"),
            Block("gamma three.", ("C",), "paragraph"),
        )
        chunks = chunk_document(doc, self.config)
        assert [(c.heading_path, c.text) for c in chunks] == [
            (("A",), "alpha one."),
            (("A", "B"), "beta two."),
            (("C",), "gamma three."),
        ]

    def test_overlap_repeats_whole_sentences(self) -> None:
        config = ChunkingConfig(max_tokens=48, overlap_tokens=16)
        doc = _doc(Block(_english(12), ("A",), "paragraph"))  # 9 tokens per sentence
        chunks = chunk_document(doc, config)
        assert len(chunks) >= 3
        for previous, current in zip(chunks, chunks[1:], strict=False):
            first_sentence = split_sentences(current.text)[0]
            assert first_sentence.startswith("Sentence")
            assert previous.text.endswith(first_sentence)

    def test_overlap_falls_back_to_tokens_when_sentences_are_long(self) -> None:
        config = ChunkingConfig(max_tokens=40, overlap_tokens=4)
        chunks = chunk_document(_doc(Block(_english(12), (), "paragraph")), config)
        assert len(chunks) >= 3
        for previous, current in zip(chunks, chunks[1:], strict=False):
            shared = next(
                n
                for n in range(len(current.text), 0, -1)
                if previous.text.endswith(current.text[:n])
            )
            assert 0 < count_tokens(current.text[:shared]) <= config.overlap_tokens

    def test_no_overlap_when_disabled(self) -> None:
        config = ChunkingConfig(max_tokens=40, overlap_tokens=0)
        chunks = chunk_document(_doc(Block(_english(12), (), "paragraph")), config)
        assert " ".join(c.text for c in chunks) == _english(12)

    def test_chinese_splits_on_sentence_ends(self) -> None:
        config = ChunkingConfig(max_tokens=48, overlap_tokens=16)
        doc = _doc(Block(_chinese(12), (), "paragraph"))  # 14-15 tokens per sentence
        chunks = chunk_document(doc, config)
        assert len(chunks) > 1
        for previous, current in zip(chunks, chunks[1:], strict=False):
            assert previous.text.endswith("。")
            assert current.text.startswith("第")
            assert previous.text.endswith(split_sentences(current.text)[0])

    def test_chinese_semicolons_are_boundaries(self) -> None:
        text = "；".join("甲乙丙丁戊己庚辛壬癸" * 2 for _ in range(6)) + "。"
        chunks = chunk_document(_doc(Block(text, (), "paragraph")), self.config)
        assert len(chunks) > 1
        assert all(c.text.endswith(("；", "。")) for c in chunks)

    def test_oversized_sentence_falls_back_to_tokens(self) -> None:
        words = " ".join(f"w{i}" for i in range(100))  # one 100-token "sentence"
        chunks = chunk_document(_doc(Block(words, (), "paragraph")), self.config)
        assert all(c.token_count <= self.config.max_tokens for c in chunks)
        seen = " ".join(c.text for c in chunks).split()
        assert set(seen) == set(words.split())

    def test_giant_word_is_sliced(self) -> None:
        chunks = chunk_document(_doc(Block("x" * 2000, (), "paragraph")), self.config)
        assert all(c.token_count <= self.config.max_tokens for c in chunks)
        assert len("".join(c.text for c in chunks)) >= 2000

    def test_oversized_list_splits_on_lines(self) -> None:
        items = "\n".join(f"- item number {i} without punctuation" for i in range(20))
        chunks = chunk_document(_doc(Block(items, (), "list")), self.config)
        assert len(chunks) > 1
        for chunk in chunks:
            assert all(line.startswith("- item number") for line in chunk.text.split("\n"))

    def test_tiny_trailing_sentence_stays_with_its_predecessor(self) -> None:
        text = _english(6) + " Yes."
        chunks = chunk_document(_doc(Block(text, (), "paragraph")), self.config)
        assert chunks[-1].text.endswith("retrieval. Yes.")
        assert not any(c.text == "Yes." for c in chunks)

    def test_table_rows_join_with_single_newlines(self) -> None:
        doc = _doc(Block("a | b", (), "table"), Block("1 | 2", (), "table"))
        assert chunk_document(doc, self.config)[0].text == "a | b\n1 | 2"

    def test_heading_without_content_or_children_is_kept(self) -> None:
        doc = _doc(
            Block("Parent", ("Parent",), "heading"),
            Block("Child", ("Parent", "Child"), "heading"),
            Block("body.", ("Parent", "Child"), "paragraph"),
            Block("Empty end", ("Empty end",), "heading"),
        )
        chunks = chunk_document(doc, self.config)
        assert [(c.heading_path, c.text) for c in chunks] == [
            (("Parent", "Child"), "body."),
            (("Empty end",), "Empty end"),
        ]

    def test_deterministic(self) -> None:
        doc = _doc(
            Block(_english(25), ("A",), "paragraph"),
            Block(_chinese(25), ("A", "B"), "paragraph"),
        )
        assert chunk_document(doc, self.config) == chunk_document(doc, self.config)

    def test_blank_document(self) -> None:
        assert chunk_document(_doc(Block("  ", (), "paragraph")), self.config) == []


_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=14)
_HAN = st.text(alphabet="知识库管理办法文档检索中文", min_size=1, max_size=12)
_ENGLISH_SENTENCE = st.builds(
    lambda words, end: " ".join(words) + end,
    st.lists(_WORD, min_size=1, max_size=12),
    st.sampled_from([".", "!", "?"]),
)
_CHINESE_SENTENCE = st.builds(lambda han, end: han + end, _HAN, st.sampled_from(list("。！？；")))
_BLOCK = st.tuples(
    st.sampled_from([(), ("A",), ("A", "B"), ("C",)]),
    st.lists(st.one_of(_ENGLISH_SENTENCE, _CHINESE_SENTENCE), min_size=1, max_size=15),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    blocks=st.lists(_BLOCK, min_size=1, max_size=8),
    max_tokens=st.integers(min_value=24, max_value=120),
    overlap_ratio=st.floats(min_value=0.0, max_value=0.5),
)
def test_chunking_never_loses_a_sentence(
    blocks: list[tuple[tuple[str, ...], list[str]]], max_tokens: int, overlap_ratio: float
) -> None:
    config = ChunkingConfig(
        max_tokens=max_tokens, overlap_tokens=int(max_tokens * overlap_ratio), min_tokens=4
    )
    doc = _doc(*(Block(" ".join(sentences), path, "paragraph") for path, sentences in blocks))
    chunks = chunk_document(doc, config)

    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert all(c.token_count <= max_tokens for c in chunks)
    for path, sentences in blocks:
        for sentence in sentences:
            if count_tokens(sentence) <= max_tokens:
                assert any(sentence in c.text for c in chunks if c.heading_path == path), sentence
