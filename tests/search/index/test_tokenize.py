"""BM25 tokenizer: lower-case words, jieba for Chinese, no punctuation, no stop words,
English Snowball stemming (on by default), and the analyzer id recorded in shards."""

from __future__ import annotations

import importlib
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app.search.index.tokenize import CHINESE_STOP_WORDS, ENGLISH_STOP_WORDS, tokenize

# The package re-exports the function `tokenize`, which shadows the submodule attribute.
tokenize_module = importlib.import_module("app.search.index.tokenize")

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_english_lower_case_without_punctuation_and_stop_words() -> None:
    text = "The QUICK brown fox -- jumped over the lazy dog's back!"
    assert tokenize(text, stemmer="none") == [
        "quick",
        "brown",
        "fox",
        "jumped",
        "lazy",
        "dog",
        "back",
    ]
    # Stemmed by default: "jumped" and "lazy" lose their endings, the rest are stems already.
    assert tokenize(text) == ["quick", "brown", "fox", "jump", "lazi", "dog", "back"]


def test_digits_and_full_width_characters() -> None:
    assert tokenize("Error 429: ＡＰＩ rate-limit ｖ２ at 10:30") == [
        "error",
        "429",
        "api",
        "rate",
        "limit",
        "v2",
        "10",
        "30",
    ]


def test_non_ascii_letters_stay_inside_words() -> None:
    assert tokenize("Café naïve Größe", stemmer="none") == ["café", "naïve", "größe"]


def test_chinese_is_segmented_with_search_mode() -> None:
    tokens = tokenize("我来到北京清华大学")
    assert "北京" in tokens
    assert "清华大学" in tokens
    assert "清华" in tokens
    assert "大学" in tokens
    assert "我" not in tokens  # stop word


def test_chinese_punctuation_and_stop_words_dropped() -> None:
    tokens = tokenize("这是一个测试的文档，了解了吗？“索引”是关键！")
    assert tokens  # meaningful words survive
    assert not set(tokens) & CHINESE_STOP_WORDS
    assert not any(ch in "，？“”！。" for token in tokens for ch in token)
    assert "测试" in tokens
    assert "索引" in tokens
    assert "文档" in tokens


def test_mixed_text() -> None:
    tokens = tokenize("Cairn支持PDF和DOCX文档上传，使用FAISS向量索引。")
    for expected in ("cairn", "支持", "pdf", "docx", "文档", "上传", "faiss", "向量", "索引"):
        assert expected in tokens
    assert "和" not in tokens


def test_only_punctuation_or_stop_words_gives_nothing() -> None:
    assert tokenize("... !!! ，。？ — the of and 的 了 是") == []
    assert tokenize("") == []


def test_stop_word_lists_are_sane() -> None:
    assert len(ENGLISH_STOP_WORDS) >= 170
    assert {"the", "and", "is", "of"} <= ENGLISH_STOP_WORDS
    assert {"的", "了", "是"} <= CHINESE_STOP_WORDS
    assert all(word == word.lower() for word in ENGLISH_STOP_WORDS)


def test_deterministic_and_thread_safe_lazy_init(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "中华人民共和国的首都是北京 and Cairn indexes it"
    expected = tokenize(text)
    monkeypatch.setattr(tokenize_module, "_jieba_tokenizer", None)  # force a fresh lazy init
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(tokenize(text))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert results == [expected] * 8


def test_jieba_initialises_quietly() -> None:
    code = "from app.search.index.tokenize import tokenize; print(tokenize('北京大学'))"
    done = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "北京" in done.stdout
    assert done.stderr == ""


class TestStemming:
    def test_inflections_meet_at_one_stem(self) -> None:
        # What a query for "cell study" must find in "Cells were studied" (SciFact-like).
        assert tokenize("Cells were studied") == tokenize("cell study")
        assert tokenize("cells studied", stemmer="none") != tokenize("cell study", stemmer="none")

    def test_stop_words_go_before_stemming(self) -> None:
        # "was" would stem to "wa" and survive if stemming came first.
        assert tokenize("it was running") == ["run"]

    def test_chinese_is_not_stemmed_but_english_inside_it_is(self) -> None:
        tokens = tokenize("索引文档 indexing documents")
        assert tokens[-2:] == ["index", "document"]
        assert "索引" in tokens
        assert tokenize("我来到北京清华大学") == tokenize("我来到北京清华大学", stemmer="none")

    def test_stemming_is_thread_safe(self) -> None:
        words = " ".join(f"running{i} studies cells" for i in range(200))
        expected = tokenize(words)
        results: list[list[str]] = []

        def work() -> None:
            for _ in range(20):
                results.append(tokenize(words))

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 80
        assert all(r == expected for r in results)


class TestDocumentTokens:
    def test_headings_come_first_repeated(self) -> None:
        tokens = tokenize_module.document_tokens(
            "It binds the receptor.", ["Insulin signalling"], heading_repeat=2
        )
        assert tokens == ["insulin", "signal", "insulin", "signal", "bind", "receptor"]

    def test_off_and_heading_only_chunks(self) -> None:
        text = "It binds the receptor."
        assert tokenize_module.document_tokens(text, ["Insulin"], heading_repeat=0) == tokenize(
            text
        )
        assert tokenize_module.document_tokens(text, [], heading_repeat=1) == tokenize(text)
        # A chunk that is its own heading is not counted twice.
        assert tokenize_module.document_tokens("Insulin", ["Insulin"]) == ["insulin"]


def test_analyzer_id_names_every_option() -> None:
    ids = {
        tokenize_module.analyzer_id(stemmer, repeat)
        for stemmer in ("english", "none")
        for repeat in (0, 1, 2)
    }
    assert len(ids) == 6
    assert tokenize_module.LEGACY_ANALYZER not in ids
    assert str(tokenize_module.TOKENIZER_VERSION) in tokenize_module.analyzer_id()


def test_a_query_is_tokenized_with_the_stemmer_its_shard_records() -> None:
    for stemmer in ("english", "none"):
        for repeat in (0, 1, 3):
            name = tokenize_module.analyzer_id(stemmer, repeat)
            parsed = tokenize_module.parse_analyzer(name)
            assert parsed == tokenize_module.Analyzer(
                tokenize_module.TOKENIZER_VERSION, stemmer, repeat
            )
            # Headings change a document's tokens only, not how a query word becomes one.
            assert tokenize_module.query_stemmer(name) == stemmer
    # Another tokenizer version (or a name this code never wrote) cannot be matched.
    assert tokenize_module.query_stemmer(tokenize_module.LEGACY_ANALYZER) is None
    assert tokenize_module.query_stemmer("cairn-bm25/2 stem=french headings=1") is None
    assert tokenize_module.parse_analyzer("bm25s") is None
