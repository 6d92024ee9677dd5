"""De-duplicating a fused ranking: near-identical chunks once, a cap of chunks per document.

``Deduplicator`` is fed candidates best first and decides for each: kept, dropped as a
near-duplicate of a better-ranked kept chunk, or held back because its document already has
``max_per_document`` kept chunks. Held-back chunks are not lost: when nothing else visible is
left, ``backfill`` returns them (best first) so that ``top_k`` can still be filled. Near
duplicates are never returned.

Similarity is the Jaccard index of the chunks' search-token sets (the BM25 tokenizer: case,
punctuation and stop words do not matter), so the same paragraph pasted into two documents,
or a chunk overlapping another almost entirely, counts as one. Token sets are kept in a
bounded per-process cache keyed by the text itself (``TokenCache``): the same popular chunks
come back search after search, and a text always has the same tokens, so a cached set can
never be stale, whatever happens to the chunk it came from.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from app.search.index import tokenize

Decision = Literal["kept", "duplicate", "capped"]


@dataclass(frozen=True)
class Candidate:
    chunk_id: int
    document_id: int
    score: float
    title: str
    text: str
    heading_path: tuple[str, ...]
    # The document's sensitivity level ("" where a caller did not read it).
    sensitivity: str = ""


class TokenCache:
    """Token sets of recently seen chunk texts, least recently used dropped past ``max_items``.

    Thread-safe: searches run in worker threads (see app.search.retriever). An entry holds
    its text and token set, a few KiB for a typical chunk, so the default bound keeps the
    cache in the tens of MiB.
    """

    def __init__(self, max_items: int = 8192) -> None:
        self.max_items = max_items
        self._sets: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sets)

    def get(self, text: str) -> frozenset[str]:
        """The token set of ``text``, tokenizing it here when it is not cached."""
        with self._lock:
            tokens = self._sets.get(text)
            if tokens is not None:
                self._sets.move_to_end(text)
                return tokens
        # Unstemmed: near-duplicates share their words as written, and stemming every hit's
        # text would cost a search more than the check is worth.
        tokens = frozenset(tokenize(text, stemmer="none"))
        with self._lock:
            self._sets[text] = tokens
            self._sets.move_to_end(text)
            while len(self._sets) > self.max_items:
                self._sets.popitem(last=False)
        return tokens


#: the process-wide cache ``Deduplicator`` uses unless given another
token_cache = TokenCache()


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a ∩ b| / |a ∪ b| (1 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


@dataclass
class Deduplicator:
    #: 0 = no cap
    max_per_document: int
    #: Jaccard at or above which a chunk is a duplicate; 0 = keep duplicates
    threshold: float
    kept: list[Candidate] = field(default_factory=list)
    held_back: list[Candidate] = field(default_factory=list)
    #: where token sets come from (the process-wide cache unless a test passes its own)
    cache: TokenCache = field(default_factory=lambda: token_cache, repr=False)
    _tokens: dict[int, frozenset[str]] = field(default_factory=dict)
    _per_document: dict[int, int] = field(default_factory=dict)
    _seen: set[int] = field(default_factory=set)

    def offer(self, candidate: Candidate) -> Decision:
        """Decide about the next candidate (candidates must come best first)."""
        if candidate.chunk_id in self._seen:
            return "duplicate"
        self._seen.add(candidate.chunk_id)
        tokens = self._duplicate_free_tokens(candidate)
        if tokens is None:
            return "duplicate"
        count = self._per_document.get(candidate.document_id, 0)
        if self.max_per_document and count >= self.max_per_document:
            self.held_back.append(candidate)
            return "capped"
        self._keep(candidate, tokens)
        return "kept"

    def backfill(self, limit: int) -> list[Candidate]:
        """Move held-back chunks (best first, duplicates skipped) into ``kept``, up to ``limit``."""
        added: list[Candidate] = []
        for candidate in self.held_back:
            if len(added) >= limit:
                break
            tokens = self._duplicate_free_tokens(candidate)
            if tokens is None:
                continue
            self._keep(candidate, tokens)
            added.append(candidate)
        self.held_back = [c for c in self.held_back if c not in added]
        # Keep rank order: a backfilled chunk ranked above some kept ones goes back there.
        self.kept.sort(key=lambda c: (-c.score, c.chunk_id))
        return added

    def _keep(self, candidate: Candidate, tokens: frozenset[str]) -> None:
        self.kept.append(candidate)
        self._tokens[candidate.chunk_id] = tokens
        self._per_document[candidate.document_id] = (
            self._per_document.get(candidate.document_id, 0) + 1
        )

    def _duplicate_free_tokens(self, candidate: Candidate) -> frozenset[str] | None:
        """The candidate's token set, or None when it nearly equals a kept chunk."""
        if self.threshold <= 0:
            return frozenset()
        tokens = self.cache.get(candidate.text)
        for kept in self.kept:
            kept_tokens = self._tokens[kept.chunk_id]
            # Jaccard <= min/max of the sizes: skip pairs that cannot reach the threshold.
            small, large = sorted((len(tokens), len(kept_tokens)))
            if large and small / large < self.threshold:
                continue
            if not tokens and not kept_tokens:
                # No searchable tokens (punctuation, stop words only): compare the text.
                if " ".join(candidate.text.split()) == " ".join(kept.text.split()):
                    return None
                continue
            if jaccard(tokens, kept_tokens) >= self.threshold:
                return None
        return tokens
