"""Issue 15 levers through the real indexer and retriever: stemming and headings change the
BM25 ranking the expected way; a query is tokenized for each shard with the stemmer that shard
records, and a shard made by another tokenizer version is refused with the re-tokenize hint
until `rebuild_tenant` rewrites it (stored vectors kept)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update

from app.kit.db import Database
from app.kit.errors import ServiceUnavailable
from app.kit.settings import IndexSettings, SearchSettings
from app.models import Chunk
from app.search.index import TokenizerMismatch
from app.search.index.writer import Indexer
from app.search.retriever import QueryVector, Retriever, SearchQuery
from app.search.shard_cache import ShardCache
from app.search.visibility import Visibility
from tests.search.corpus import DIM, EMBEDDER, Corpus, DocSpec, add_documents, add_tenant, index

# The function `tokenize` shadows its module in app.search.index.
tokenize_module = importlib.import_module("app.search.index.tokenize")


class StoredVectorsOnly:
    """Stands in for the embedder in a rebuild that keeps the stored vectors: only its name
    and dimension are read (embedding anything would be a bug)."""

    name = EMBEDDER
    dim = DIM

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        raise AssertionError("a re-tokenize rebuild must not embed")

    def embed_query(self, text: str) -> np.ndarray:
        raise AssertionError("a re-tokenize rebuild must not embed")


def retriever(database: Database, root: Path) -> Retriever:
    search = SearchSettings(version_poll_seconds=0, max_chunks_per_document=0)
    cache = ShardCache(database, root, max_bytes=1 << 30, poll_seconds=0)
    return Retriever(search, cache)


async def bm25_texts(r: Retriever, tenant_id: int, text: str) -> list[str]:
    hits = await r.retrieve(Visibility.for_tenant(tenant_id), SearchQuery(text, "bm25", 10))
    return [h.text for h in hits]


async def set_headings(database: Database, headings: dict[str, list[str]]) -> None:
    async with database.sessionmaker() as session, session.begin():
        for text, path in headings.items():
            await session.execute(
                update(Chunk).where(Chunk.text == text).values(heading_path=json.dumps(path))
            )


async def test_stemming_finds_inflected_forms(database: Database, tmp_path: Path) -> None:
    tenant = await add_tenant(database, "t")
    texts = ["cells were studied in mice", "the cell study protocol form", "protocol form"]
    texts += [f"unrelated filler note {w}" for w in ("alpha", "bravo", "charlie")]
    await add_documents(
        database, Corpus(), tenant, [DocSpec([t]) for t in texts], np.random.default_rng(1)
    )
    stemmed = IndexSettings(bm25_heading_repeat=0)
    await index(database, tmp_path / "stem", tenant, stemmed)
    found = await bm25_texts(retriever(database, tmp_path / "stem"), tenant, "cell studies")
    # Both documents about cell studies match; unstemmed, "cells ... studied" matches nothing.
    assert set(found) == {texts[0], texts[1]}

    async with database.sessionmaker() as session, session.begin():
        await session.execute(update(Chunk).values(shard_no=None))
    plain = IndexSettings(bm25_heading_repeat=0, bm25_stemmer="none")
    await Indexer(database, tmp_path / "plain", plain).rebuild_tenant(
        tenant,
        embedder=StoredVectorsOnly(),  # type: ignore[arg-type]
    )
    found = await bm25_texts(retriever(database, tmp_path / "plain"), tenant, "cell studies")
    assert found == [texts[1]]


async def test_headings_lift_a_chunk_that_never_names_its_subject(
    database: Database, tmp_path: Path
) -> None:
    tenant = await add_tenant(database, "t")
    about = "it lowers glucose in mice"
    other = "glucose and glucose control"
    # Fillers keep the idf of the query's words meaningful (in a corpus of two, a word in
    # one document has idf 0).
    fillers = [f"unrelated filler note {w}" for w in ("alpha", "bravo", "charlie", "delta")]
    specs = [DocSpec([t]) for t in (about, other, *fillers)]
    await add_documents(database, Corpus(), tenant, specs, np.random.default_rng(2))
    await set_headings(database, {about: ["Metformin trial"], other: ["Diet review"]})
    query = "metformin glucose"

    without = IndexSettings(bm25_heading_repeat=0)
    await index(database, tmp_path / "a", tenant, without)
    assert (await bm25_texts(retriever(database, tmp_path / "a"), tenant, query))[0] == other

    with_headings = IndexSettings(bm25_heading_repeat=1)
    await Indexer(database, tmp_path / "b", with_headings).rebuild_tenant(
        tenant,
        embedder=StoredVectorsOnly(),  # type: ignore[arg-type]
    )
    found = await bm25_texts(retriever(database, tmp_path / "b"), tenant, query)
    assert found[0] == about


async def test_each_shard_is_searched_with_its_stemmer_and_another_version_is_refused(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "indexes"
    tenant = await add_tenant(database, "t")
    corpus = Corpus()
    rng = np.random.default_rng(3)
    await add_documents(database, corpus, tenant, [DocSpec(["running studies"])], rng)
    old = IndexSettings(bm25_stemmer="none", bm25_heading_repeat=0)
    await index(database, root, tenant, old)

    # The query is tokenized as the shard was, whatever the server's setting: unstemmed,
    # "running" matches and "run" does not.
    r = retriever(database, root)
    assert await bm25_texts(r, tenant, "running") == ["running studies"]
    assert await bm25_texts(r, tenant, "run") == []

    # A shard from another tokenizer version cannot be matched by this code: refused.
    monkeypatch.setattr(tokenize_module, "TOKENIZER_VERSION", 1)
    await Indexer(database, root, old).rebuild_tenant(
        tenant,
        embedder=StoredVectorsOnly(),  # type: ignore[arg-type]
    )
    monkeypatch.undo()
    vis = Visibility.for_tenant(tenant)
    vector = QueryVector(np.ones(DIM, dtype=np.float32) / np.sqrt(DIM), EMBEDDER)
    for mode in ("bm25", "hybrid"):
        with pytest.raises(ServiceUnavailable) as info:
            await r.retrieve(vis, SearchQuery("run", mode, 5, vector))  # type: ignore[arg-type]
        assert info.value.code == "tokenizer_mismatch"
        assert "cairn index rebuild --tenant SLUG" in info.value.message
    # Vector search does not read BM25 tokens: it keeps working.
    assert len(await r.retrieve(vis, SearchQuery("run", "vector", 5, vector))) == 1

    # New documents are not mixed into the old shard either.
    new = IndexSettings()  # the defaults: stemmed, headings indexed
    await add_documents(database, corpus, tenant, [DocSpec(["more studies"])], rng)
    with pytest.raises(TokenizerMismatch, match="cairn index rebuild"):
        await index(database, root, tenant, new)

    # The re-tokenize path: rebuild from stored text and vectors, nothing embedded.
    count = await Indexer(database, root, new).rebuild_tenant(
        tenant,
        embedder=StoredVectorsOnly(),  # type: ignore[arg-type]
    )
    assert count == 2
    found = await bm25_texts(retriever(database, root), tenant, "run study")
    # Both match "study" through the stemmer; the one with "running" too ranks first.
    assert found == ["running studies", "more studies"]
