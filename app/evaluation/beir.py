"""Reading a BEIR-format dataset: corpus.jsonl, queries.jsonl and qrels/<split>.tsv.

A split's queries come from ``queries-<split>.jsonl`` when the folder has one (SciFact's
training claims are kept apart from the test claims that way), else from ``queries.jsonl``."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

# A split names files in the folder: no separators or dots.
_SPLIT = re.compile(r"[A-Za-z0-9_-]+")


class DatasetError(ValueError):
    """The folder is not a readable BEIR dataset; the message says what is wrong."""


@dataclass(frozen=True)
class BeirDataset:
    name: str
    corpus: dict[str, tuple[str, str]]  # doc id -> (title, text)
    queries: dict[str, str]  # query id -> text (only queries that have judgments)
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> relevance grade (> 0)
    split: str = "test"


def _jsonl(path: Path) -> list[dict[str, object]]:
    if not path.is_file():
        raise DatasetError(f"{path.name} is missing in {path.parent}")
    records: list[dict[str, object]] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path.name} line {number}: not JSON ({exc.msg})") from exc
            if not isinstance(record, dict) or "_id" not in record:
                raise DatasetError(f"{path.name} line {number}: a record needs an _id")
            records.append(record)
    return records


def load_beir(folder: Path, split: str = "test") -> BeirDataset:
    """Load a BEIR dataset folder; queries without judgments in `split` are left out."""
    corpus = {
        str(r["_id"]): (str(r.get("title") or ""), str(r.get("text") or ""))
        for r in _jsonl(folder / "corpus.jsonl")
    }
    if not _SPLIT.fullmatch(split):
        raise DatasetError(f"split {split!r} is not a plain name")
    queries_path = folder / f"queries-{split}.jsonl"
    if not queries_path.is_file():
        queries_path = folder / "queries.jsonl"
    all_queries = {str(r["_id"]): str(r.get("text") or "") for r in _jsonl(queries_path)}
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise DatasetError(f"qrels/{split}.tsv is missing in {folder}")
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if len(row) < 3 or row[0] in ("query-id", "query_id"):
                continue
            query_id, doc_id, grade = row[0], row[1], int(row[2])
            if grade > 0 and doc_id in corpus and query_id in all_queries:
                qrels.setdefault(query_id, {})[doc_id] = grade
    if not qrels:
        raise DatasetError(f"qrels/{split}.tsv judges no query/document pair of this dataset")
    queries = {qid: all_queries[qid] for qid in qrels}
    return BeirDataset(folder.resolve().name, corpus, queries, qrels, split)
