"""The per-search read of a tenant's hidden chunks (disabled by a curator, or staged by a
re-parse): only that tenant's, and answered from the partial index, not a scan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import sqlalchemy as sa

from app.models import Base, Chunk
from app.search.repository import search_repository
from app.search.visibility import present


def _chunk(
    tenant_id: int, position: int, *, enabled: bool = True, staged: bool = False
) -> dict[str, object]:
    return {
        "document_id": tenant_id * 100,
        "tenant_id": tenant_id,
        "position": position,
        "text": "x",
        "heading_path": "[]",
        "token_count": 1,
        "embedding": b"",
        "shard_no": 0,
        "enabled": enabled,
        "staged": staged,
    }


def test_only_the_tenants_hidden_chunks_from_the_partial_index(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'hidden.db'}")
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        rows = [_chunk(1, i) for i in range(500)] + [_chunk(2, i) for i in range(500)]
        rows += [
            _chunk(1, 900, enabled=False),
            _chunk(1, 901, staged=True),
            _chunk(2, 900, enabled=False),
            _chunk(2, 901, staged=True),
        ]
        connection.execute(sa.insert(Chunk), rows)
        ids = {
            (t, p): i
            for i, t, p in connection.execute(sa.select(Chunk.id, Chunk.tenant_id, Chunk.position))
        }
    with engine.connect() as connection:
        hidden = search_repository.hidden_chunk_ids(connection, 1)
        assert hidden.tolist() == sorted([ids[(1, 900)], ids[(1, 901)]])
        sql = str(search_repository._hidden_chunks.compile(engine))
        plan = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, (1,)).all()
    assert any("ix_chunks_hidden" in str(step) for step in plan), plan


def test_present_finds_the_wanted_ids_of_a_sorted_shard() -> None:
    shard = np.array([2, 3, 5, 8, 13, 21], dtype=np.int64)
    wanted = np.array([1, 3, 8, 22, 21], dtype=np.int64)
    assert present(shard, wanted).tolist() == [3, 8, 21]
    assert present(shard, np.empty(0, dtype=np.int64)).size == 0
    assert present(np.empty(0, dtype=np.int64), wanted).size == 0
