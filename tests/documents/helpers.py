"""Shard-level search over what the indexer wrote (the search API builds on the same files)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI
from sqlalchemy import select

from app.models import Chunk, IndexShard
from app.search.index import corpus_stats, load_bm25_shard, load_shard, search_bm25, search_shard
from app.search.index import tokenize as tokenize_fn
from app.search.index.layout import shard_path


async def wait_for(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    slug: str,
    document_id: int,
    *,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Poll a document until it is ready or failed."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(
            f"/api/v1/tenants/{slug}/documents/{document_id}", headers=headers
        )
        body = dict(response.json())
        if body.get("status") in ("ready", "failed"):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"document {document_id} still {body.get('status')}")
        await asyncio.sleep(0.2)


async def _shards(app: FastAPI, tenant_id: int, kind: str) -> list[IndexShard]:
    async with app.state.database.read_sessionmaker() as session:
        rows = await session.scalars(
            select(IndexShard).where(IndexShard.tenant_id == tenant_id, IndexShard.kind == kind)
        )
        return list(rows)


async def bm25_hits(app: FastAPI, tenant_id: int, query: str, k: int = 10) -> list[str]:
    """Texts of the top BM25 chunks of a tenant."""
    root = app.state.settings.index_dir
    shards = [
        load_bm25_shard(shard_path(root, tenant_id, "bm25", s.shard_no, s.version))
        for s in await _shards(app, tenant_id, "bm25")
    ]
    if not shards:
        return []
    stats = corpus_stats(shards)
    scored: list[tuple[float, int]] = []
    for shard in shards:
        scores, ids = search_bm25(shard, stats, tokenize_fn(query), k)
        scored += list(zip(scores.tolist(), ids.tolist(), strict=True))
    return await _texts(app, [i for _, i in sorted(scored, reverse=True)[:k]])


async def vector_hits(
    app: FastAPI, tenant_id: int, query_vector: np.ndarray, k: int = 5
) -> list[str]:
    """Texts of the nearest chunks of a tenant."""
    root = app.state.settings.index_dir
    scored: list[tuple[float, int]] = []
    for s in await _shards(app, tenant_id, "vector"):
        index = load_shard(shard_path(root, tenant_id, "vector", s.shard_no, s.version))
        scores, ids = search_shard(index, query_vector.reshape(1, -1), k)
        scored += [
            (sc, i) for sc, i in zip(scores[0].tolist(), ids[0].tolist(), strict=True) if i >= 0
        ]
    return await _texts(app, [i for _, i in sorted(scored, reverse=True)[:k]])


async def _texts(app: FastAPI, ids: list[int]) -> list[str]:
    if not ids:
        return []
    async with app.state.database.read_sessionmaker() as session:
        rows = dict(
            (await session.execute(select(Chunk.id, Chunk.text).where(Chunk.id.in_(ids)))).all()
        )
    return [rows[i] for i in ids if i in rows]
