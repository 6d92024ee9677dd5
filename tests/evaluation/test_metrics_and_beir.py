"""Metrics against hand-computed values; BEIR loading and its error messages."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from app.evaluation.beir import DatasetError, load_beir
from app.evaluation.metrics import mrr_at_k, ndcg_at_k, recall_at_k


def test_ndcg_matches_hand_computation() -> None:
    relevant = {"a": 1, "b": 2}
    # b (grade 2) at rank 3, a (grade 1) at rank 1.
    dcg = 1 / math.log2(2) + 2 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(["a", "x", "b"], relevant, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["b", "a"], relevant, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], relevant, 10) == 0.0
    assert ndcg_at_k(["x", "a"], relevant, 1) == 0.0


def test_recall_and_mrr() -> None:
    relevant = {"a": 1, "b": 1, "c": 1, "d": 1}
    assert recall_at_k(["a", "x", "c"], relevant, 100) == 0.5
    assert recall_at_k(["a", "x", "c"], relevant, 1) == 0.25
    assert mrr_at_k(["x", "y", "c"], relevant, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(["x", "y", "c"], relevant, 2) == 0.0


def write_dataset(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "Hydraulic pumps", "text": "Pumps are serviced every May."}\n'
        '{"_id": "d2", "title": "Valves", "text": "Turn the brass valve clockwise to close it."}\n'
        '{"_id": "d3", "title": "年假", "text": "员工每年享有十五天带薪年假。"}\n'
        '{"_id": "d4", "title": "Canteen", "text": "The canteen serves soup on Fridays."}\n'
    )
    (folder / "queries.jsonl").write_text(
        '{"_id": "q1", "text": "When are the pumps serviced?"}\n'
        '{"_id": "q2", "text": "How do I close the brass valve?"}\n'
        '{"_id": "q3", "text": "员工有几天带薪年假"}\n'
        '{"_id": "q9", "text": "a query nobody judged"}\n'
    )
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\nq3\tmissing\t1\n"
    )
    return folder


def test_load_beir(tmp_path: Path) -> None:
    dataset = load_beir(write_dataset(tmp_path / "tiny"))
    assert dataset.name == "tiny"
    assert len(dataset.corpus) == 4
    assert set(dataset.queries) == {"q1", "q2", "q3"}  # unjudged q9 left out
    assert dataset.qrels["q3"] == {"d3": 1}  # judgments of unknown documents dropped


def test_load_beir_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="corpus.jsonl is missing"):
        load_beir(tmp_path)
    folder = write_dataset(tmp_path / "bad")
    (folder / "corpus.jsonl").write_text('{"_id": "d1"}\nnot json\n')
    with pytest.raises(DatasetError, match="line 2"):
        load_beir(folder)


def test_train_split_reads_its_own_queries_and_qrels(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "tiny")
    (folder / "queries-train.jsonl").write_text(
        '{"_id": "t1", "text": "brass valve"}\n{"_id": "q1", "text": "not this file\'s q1"}\n'
    )
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nt1\td2\t1\n")
    train = load_beir(folder, "train")
    assert train.split == "train"
    assert train.queries == {"t1": "brass valve"}
    assert train.qrels == {"t1": {"d2": 1}}
    # The test split keeps queries.jsonl (there is no queries-test.jsonl).
    test = load_beir(folder, "test")
    assert test.split == "test"
    assert set(test.queries) == {"q1", "q2", "q3"}
    assert test.queries["q1"] == "When are the pumps serviced?"


def test_split_errors(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "tiny")
    with pytest.raises(DatasetError, match="qrels/train.tsv is missing"):
        load_beir(folder, "train")
    with pytest.raises(DatasetError, match="not a plain name"):
        load_beir(folder, "../test")


def test_retrieval_settings_name_every_lever() -> None:
    from app.evaluation.runner import retrieval_settings
    from app.kit.settings import Settings

    base = Settings()
    line = retrieval_settings(base)
    for part in ("stemmer=english", "headings=1", "heading_context=False", "fusion zscore"):
        assert part in line
    assert "candidates=" in line
    changed = base.model_copy(
        update={
            "index": base.index.model_copy(update={"bm25_stemmer": "none"}),
            "search": base.search.model_copy(update={"fusion": "rrf"}),
        }
    )
    assert "stemmer=none" in retrieval_settings(changed)
    assert "fusion rrf k=" in retrieval_settings(changed)
