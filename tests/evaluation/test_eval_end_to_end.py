"""`cairn eval` loads a BEIR dataset through the real pipeline and scores the real retriever."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.evaluation.beir import load_beir
from app.evaluation.runner import evaluate
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
