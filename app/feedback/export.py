"""`cairn feedback export SLUG --out DIR`: a tenant's rated answers as a question set in the
format `cairn eval answers DIR` reads (app/evaluation/beir.py, app/evaluation/answers.py), so
that real use grows a golden set.

- queries.jsonl: every rated answer's question (`_id` its answer's public id), with its
  rating and the asker's comment for whoever curates the set;
- corpus.jsonl: the passages the answers cited (`_id` the chunk's public id, the document's
  title, and the passage as the citation stored it);
- qrels/test.tsv: a thumbs-up question judged against the passages its answer cited;
- answers.jsonl: a thumbs-up question's reference answer (the approved text without citation
  markers or the check's note) and the supporting quotes of its citations, as gold spans.

A thumbs-down question is a question only: it has no judged passage or gold span until a
person writes them, so `cairn eval answers` leaves it out until then. An answer withheld from
the operator (written from a document deleted since) is not exported: its passages may be
gone, and its text must not outlive them."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import audit_service
from app.chat.citations import strip_markers
from app.feedback.service import RatedEntry, feedback_service
from app.kit.actor import SystemActor
from app.kit.errors import ResourceNotFound
from app.kit.public_ids import IdKind, encode_id
from app.search.visibility import Visibility
from app.tenants.repository import tenant_repository


@dataclass(frozen=True)
class ExportSummary:
    questions: int
    judged: int
    passages: int
    skipped: int


def reference_answer(entry: RatedEntry) -> str:
    """The approved answer as a reference: no citation markers, no note the check added."""
    message = entry.stored.message
    text = message.content
    if message.note and text.endswith("\n\n" + message.note):
        text = text[: -len(message.note) - 2]
    return " ".join(strip_markers(text).split())


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


async def export_feedback(session: AsyncSession, slug: str, out: Path) -> ExportSummary:
    """Write the tenant's rated answers into `out` as a question set; audited."""
    tenant = await tenant_repository.get_by_slug(session, slug)
    if tenant is None:
        raise ResourceNotFound(f"Tenant {slug!r} not found")
    entries, _ = await feedback_service.rated_answers(
        session, Visibility.for_tenant(tenant.id), rating=None, limit=None
    )
    shown = [e for e in entries if not e.withheld and e.question]
    queries: list[dict[str, object]] = []
    corpus: dict[str, dict[str, object]] = {}
    qrels: list[tuple[str, str, int]] = []
    answers: list[dict[str, object]] = []
    for entry in sorted(shown, key=lambda e: e.stored.message.id):
        query_id = encode_id(IdKind.CHAT_MESSAGE, entry.stored.message.id)
        rating = entry.feedback.rating
        queries.append(
            {
                "_id": query_id,
                "text": entry.question,
                "rating": rating,
                "comment": entry.feedback.comment or "",
            }
        )
        if rating != "up":
            continue
        for citation in entry.stored.citations:
            passage_id = encode_id(IdKind.CHUNK, citation.chunk_id)
            corpus.setdefault(
                passage_id, {"_id": passage_id, "title": citation.title, "text": citation.snippet}
            )
            qrels.append((query_id, passage_id, 1))
        spans = [reference_answer(entry)]
        spans += [q for c in entry.stored.citations if (q := " ".join(c.quote.split()))]
        answers.append({"_id": query_id, "answers": list(dict.fromkeys(s for s in spans if s))})
    out.mkdir(parents=True, exist_ok=True)
    (out / "qrels").mkdir(exist_ok=True)
    _write_jsonl(out / "queries.jsonl", queries)
    _write_jsonl(out / "corpus.jsonl", list(corpus.values()))
    _write_jsonl(out / "answers.jsonl", answers)
    with (out / "qrels" / "test.tsv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["query-id", "corpus-id", "score"])
        writer.writerows(qrels)
    summary = ExportSummary(
        questions=len(queries),
        judged=len({q for q, _, _ in qrels}),
        passages=len(corpus),
        skipped=len(entries) - len(shown),
    )
    await audit_service.record(
        session,
        action="answer.feedback_export",
        actor=SystemActor.OPERATOR,
        tenant_id=tenant.id,
        target_type="tenant",
        target_id=tenant.id,
    )
    return summary
