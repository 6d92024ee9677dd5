"""BM25 tokenizer for mixed English / Chinese text.

Text is NFKC-normalised (full-width letters and digits become ASCII) and lower-cased, then
split into runs: CJK ideograph runs are segmented with jieba, every other run of letters or
digits is one token. Punctuation and whitespace separate runs and never become tokens.
English and Chinese stop words are dropped. Non-CJK words are then Snowball-stemmed (English,
PyStemmer: what bm25s and Lucene's EnglishAnalyzer do), so "cells" finds "cell" and
"studies" finds "study"; ``stemmer="none"`` keeps the words as they are.

A BM25 shard records the analyzer that built it (``analyzer_id``: the tokenizer version, the
stemmer and how many times headings were indexed). Query tokens only match document tokens
made by the same stemmer, so a query is tokenized for each shard with that shard's stemmer
(``query_stemmer``; a tenant's shards may differ while its keyword index is rebuilt with a
knowledge base's new stemmer). A shard made by another tokenizer version cannot be matched by
this code at all and is refused with a rebuild hint rather than silently searched (see
``TokenizerMismatch``).

Chinese runs use ``jieba.cut_for_search`` rather than ``jieba.lcut``: besides the precise
segmentation it also emits the shorter dictionary words inside long words (中华人民共和国
→ 中华, 华人, 人民, 共和, 共和国, 中华人民共和国), so a query for 人民 matches a document
that only says 中华人民共和国. Documents and queries go through the same function, so the
extra overlapping tokens are symmetric; the cost is somewhat longer Chinese documents.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "CHINESE_STOP_WORDS",
    "ENGLISH_STOP_WORDS",
    "LEGACY_ANALYZER",
    "STEMMERS",
    "TOKENIZER_VERSION",
    "Analyzer",
    "StemmerName",
    "analyzer_id",
    "document_tokens",
    "load_segmenter",
    "parse_analyzer",
    "query_stemmer",
    "stem_english",
    "tokenize",
]

#: Bumped whenever the same text and options could give other tokens.
TOKENIZER_VERSION = 2
StemmerName = Literal["english", "none"]
STEMMERS: tuple[StemmerName, ...] = ("english", "none")


def analyzer_id(stemmer: StemmerName = "english", heading_repeat: int = 1) -> str:
    """The name recorded in a BM25 shard for the tokens this code and these options make."""
    return f"cairn-bm25/{TOKENIZER_VERSION} stem={stemmer} headings={heading_repeat}"


@dataclass(frozen=True)
class Analyzer:
    """The parts of an ``analyzer_id``."""

    version: int
    stemmer: StemmerName
    heading_repeat: int


_ANALYZER = re.compile(r"^cairn-bm25/(\d+) stem=(\w+) headings=(\d+)$")


def parse_analyzer(name: str) -> Analyzer | None:
    """The parts of an analyzer id (None for a name this code never wrote)."""
    match = _ANALYZER.match(name)
    if match is None or match.group(2) not in STEMMERS:
        return None
    stemmer: StemmerName = "english" if match.group(2) == "english" else "none"
    return Analyzer(int(match.group(1)), stemmer, int(match.group(3)))


def query_stemmer(analyzer: str) -> StemmerName | None:
    """The stemmer a query is tokenized with to match a shard made by ``analyzer``; None when
    this code cannot make that analyzer's tokens (another tokenizer version). Headings only
    change what a document's tokens are, not how a word is turned into one."""
    parsed = parse_analyzer(analyzer)
    if parsed is None or parsed.version != TOKENIZER_VERSION:
        return None
    return parsed.stemmer


#: What shards written before the analyzer was recorded were built with (no stemming, chunk
#: text only); they never match ``analyzer_id(...)``, so they are refused until rebuilt.
LEGACY_ANALYZER = "cairn-bm25/1 stem=none headings=0"

#: the classic English stop-word list (NLTK's, 179 words)
ENGLISH_STOP_WORDS: frozenset[str] = frozenset(
    """
    i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself
    yourselves he him his himself she she's her hers herself it it's its itself they them
    their theirs themselves what which who whom this that that'll these those am is are was
    were be been being have has had having do does did doing a an the and but if or because
    as until while of at by for with about against between into through during before after
    above below to from up down in out on off over under again further then once here there
    when where why how all any both each few more most other some such no nor not only own
    same so than too very s t can will just don don't should should've now d ll m o re ve y
    ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven
    haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn
    shouldn't wasn wasn't weren weren't won won't wouldn wouldn't
    """.split()
)

#: frequent Chinese function words that carry no search meaning
CHINESE_STOP_WORDS: frozenset[str] = frozenset(
    """
    的 了 是 在 和 与 及 或 也 都 就 而 被 把 让 向 从 对 于 以 之 其 这 那 这个 那个 这些 那些
    一个 一些 有 没有 我 你 他 她 它 我们 你们 他们 她们 它们 吗 呢 吧 啊 呀 着 过 给 等 并
    但 但是 如果 因为 所以 还 又 很 个
    """.split()
)

# CJK Unified Ideographs + Extension A + Compatibility Ideographs + Extensions B-F (astral).
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
# Group 1: a run of ideographs. Group 2: a run of any other letters/digits (\w minus "_"
# minus ideographs), which covers Latin words, numbers, kana, hangul, Cyrillic, ...
_RUN = re.compile(f"([{_CJK}]+)|([^\\W_{_CJK}]+)")
_WORD = re.compile(f"[^\\W_{_CJK}]+")
_HAS_CJK = re.compile(f"[{_CJK}]")

_jieba_lock = threading.Lock()
_jieba_tokenizer: Any = None


def _jieba() -> Any:
    """The process-wide jieba tokenizer, loaded on first use (about a second)."""
    global _jieba_tokenizer
    if _jieba_tokenizer is None:
        with _jieba_lock:
            if _jieba_tokenizer is None:
                import jieba

                # jieba logs "Building prefix dict..." to stderr at DEBUG on load.
                jieba.setLogLevel(logging.WARNING)
                jieba.initialize()
                _jieba_tokenizer = jieba.dt
    return _jieba_tokenizer


def load_segmenter() -> None:
    """Load jieba now (blocking, about a second) rather than on the first Chinese text.

    Loading holds the GIL for most of that second: in a server, the first search whose hits
    hold Chinese text would stall every search running beside it (seen as 1–2 s latency tails
    in `cairn bench search`), so the API loads it at start-up.
    """
    _jieba()


_stemmers = threading.local()


def stem_english(words: list[str]) -> list[str]:
    """The English Snowball stems of ``words`` (already lower-cased), as ``tokenize`` makes."""
    return _stem(words)


def _stem(words: list[str]) -> list[str]:
    # PyStemmer objects keep a cache and are not thread-safe: one per thread (searches
    # tokenize in worker threads).
    stemmer = getattr(_stemmers, "english", None)
    if stemmer is None:
        import Stemmer

        stemmer = _stemmers.english = Stemmer.Stemmer("english")
    stemmed: list[str] = stemmer.stemWords(words)
    return stemmed


def tokenize(text: str, *, stemmer: StemmerName = "english") -> list[str]:
    """Lower-cased search tokens of ``text`` without punctuation and stop words, stemmed."""
    normalised = unicodedata.normalize("NFKC", text).lower()
    stem = stemmer == "english"
    if _HAS_CJK.search(normalised) is None:
        # The same tokens as below without the per-run dispatch: most text has no ideograph,
        # and search tokenizes the query and every new hit text for de-duplication.
        words = [word for word in _WORD.findall(normalised) if word not in ENGLISH_STOP_WORDS]
        return _stem(words) if stem and words else words
    tokens: list[str] = []
    for match in _RUN.finditer(normalised):
        cjk_run, word = match.group(1), match.group(2)
        if word is not None:
            if word not in ENGLISH_STOP_WORDS:
                tokens.append(_stem([word])[0] if stem else word)
            continue
        for piece in _jieba().cut_for_search(cjk_run, HMM=True):
            if piece and piece not in CHINESE_STOP_WORDS:
                tokens.append(piece)
    return tokens


def document_tokens(
    text: str,
    heading_path: Sequence[str] = (),
    *,
    stemmer: StemmerName = "english",
    heading_repeat: int = 1,
) -> list[str]:
    """A chunk's BM25 tokens: its headings (document title first) ``heading_repeat`` times,
    then its text.

    A chunk often never names its subject, which its document title or section heading does;
    indexing the headings with the chunk lets a query that names the subject find it. A
    heading-only chunk (whose text is its heading) is not counted twice.
    """
    tokens = tokenize(text, stemmer=stemmer)
    headings = [h for h in heading_path if h.strip()]
    if heading_repeat < 1 or not headings or headings == [text.strip()]:
        return tokens
    heading_tokens = tokenize(" ".join(headings), stemmer=stemmer)
    return heading_tokens * heading_repeat + tokens
