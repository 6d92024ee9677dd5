"""The English answer-quality set (`eval/squad2-dev-en`, SQuAD 2.0 dev paragraphs): loadable
by `cairn eval answers`, every question judged against one passage that holds its gold span."""

from __future__ import annotations

from pathlib import Path

from app.evaluation.answers import contains_gold, load_gold, sample_queries
from app.evaluation.beir import load_beir

ENGLISH = Path(__file__).parents[2] / "eval" / "squad2-dev-en"


def test_every_question_has_its_gold_span_in_its_passage() -> None:
    dataset = load_beir(ENGLISH)
    gold = load_gold(ENGLISH)
    assert len(dataset.queries) == 121
    assert set(gold) == set(dataset.queries) == set(dataset.qrels)
    for query_id, spans in gold.items():
        [passage] = dataset.qrels[query_id]
        text = dataset.corpus[passage][1]
        assert all(contains_gold(text, [span]) for span in spans), query_id
    # The eval samples from it like from the Chinese trial set.
    assert len(sample_queries(dataset, gold, size=40, seed=18)) == 40
