"""`cairn eval` loads a BEIR dataset through the real pipeline and scores the real retriever."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.container import Container
from app.documents.bulk import operator_access, queue_files
from app.evaluation.beir import load_beir
from app.evaluation.direct import direct_bm25
from app.evaluation.runner import evaluate, write_corpus_files
from app.kit.settings import Settings
from tests.evaluation.test_metrics_and_beir import write_dataset

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_eval_scores_every_mode(settings: Settings, tmp_path: Path) -> None:
    dataset = load_beir(write_dataset(tmp_path / "tiny"))
    report = await evaluate(settings, dataset, tenant="evaltiny")
    assert report.documents == 4
    assert report.queries == 3
    assert [s.mode for s in report.scores] == ["bm25", "vector", "hybrid"]
    by_mode = {s.mode: s for s in report.scores}
    # Four documents, three easy queries: every mode finds each answer in its top 10.
    for scores in by_mode.values():
        assert scores.recall_100 == 1.0
        assert 0.5 <= scores.ndcg_10 <= 1.0
    assert by_mode["vector"].mrr_10 == 1.0
    # A second run reuses the loaded corpus (duplicates are skipped), same figures.
    again = await evaluate(settings, dataset, tenant="evaltiny", modes=["hybrid"])
    assert again.documents == 4
    assert again.scores[0].ndcg_10 == pytest.approx(by_mode["hybrid"].ndcg_10)
    table = report.markdown({"published": ("0.1", "0.2", "n/a")})
    assert "| hybrid |" in table
    assert "| published | 0.1 | 0.2 | n/a | |" in table


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_an_interrupted_load_is_finished_and_no_load_reuses_it(
    settings: Settings, tmp_path: Path
) -> None:
    from rich.progress import Progress

    from app.evaluation.runner import _tenant_id

    dataset = load_beir(write_dataset(tmp_path / "tiny"))
    # A load stopped after queueing two documents: they sit queued, their jobs open.
    container = Container(settings)
    try:
        await _tenant_id(container.database, "evalresume")
        access = await operator_access(container.database, "evalresume")
        paths = write_corpus_files(dataset, tmp_path, ["d1", "d2"])
        queued, _ = await queue_files(
            container,
            access,
            paths,
            tags=["eval"],
            sensitivity="internal",
            progress=Progress(disable=True),
        )
        assert len(queued) == 2
    finally:
        await container.close()
    # The re-run meets d1 and d2 as duplicates and must still finish them.
    report = await evaluate(settings, dataset, tenant="evalresume", modes=["bm25"])
    assert report.documents == 4
    assert report.scores[0].recall_100 == 1.0
    # --no-load: the loaded tenant is scored again, nothing is ingested.
    again = await evaluate(settings, dataset, tenant="evalresume", modes=["bm25"], ingest=False)
    assert again.ingest_seconds == 0.0
    assert again.documents == 4
    assert again.scores[0].ndcg_10 == pytest.approx(report.scores[0].ndcg_10)
    # --direct (no database, no embedder) scores BM25 exactly as the loaded tenant does.
    direct = direct_bm25(settings, dataset)
    for field in ("ndcg_10", "recall_100", "mrr_10"):
        assert getattr(direct, field) == pytest.approx(getattr(report.scores[0], field))
