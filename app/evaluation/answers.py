"""`cairn eval answers DATASET_DIR`: answer quality through the answer service the APIs use.

The dataset is a BEIR folder plus `answers.jsonl` ({"_id": query id, "answers": [gold spans]}).
The corpus is loaded into a tenant through the real pipeline (once: a re-run finds it there),
a sample of the questions is asked as the operator, stateless (only the audit entry is kept),
and each answer is scored:

- gold span: the answer as shown (citation markers removed, NFKC, case, spaces and
  punctuation ignored) contains one of the question's gold spans; "in own words": the same
  for the model's words alone, without the supporting quote it ends with
  (`chat.answer_quote`), a quote given instead of the model's answer counting as wrong;
- own-words F1: CMRC 2018's F1 of the model's own words against the best gold span (Chinese
  characters and English words as tokens, the longest common substring as the overlap; a
  quote instead, a refusal or nothing found counts 0);
- quoted instead: the share of answers the check replaced by the documents' sentence;
- gold passage cited: a citation names the question's judged document;
- unsupported: the answer as shown fails the faithfulness check against its cited passages
  (app/chat/faithfulness.py), whatever the configured `chat.unsupported_answer` did;
- grounded but wrong: shown as grounded and without a gold span;
- refusal: "nothing relevant" without the model, or the model declining.

Several variants (settings overrides) can run in one process, sharing the loaded corpus and,
where their generator settings agree, the loaded model, so that their times compare. With
`reuse`, a variant whose prompt is one an earlier variant already sent gets that variant's
generation again (decoding is greedy, so it is the same text): post-generation levers (the
check, repetition trimming) are then compared on identical generations. Generations are kept
in DATA_DIR/eval/generations.jsonl, so a later run re-scores them too; a reused generation
counts with the seconds it took when it was made (the table marks such variants "(r)").
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import random
import re
import resource
import statistics
import threading
import time
import unicodedata
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.progress import Progress
from sqlalchemy import select

from app.chat.answers import Answer, AnswerRuntime, Caller, Question, answer_service
from app.chat.citations import strip_markers
from app.chat.faithfulness import check, is_refusal
from app.container import Container
from app.evaluation.beir import BeirDataset, DatasetError, _jsonl
from app.evaluation.runner import _tenant_id, document_filename, load_dataset
from app.generation.base import (
    ChatMessage,
    Completion,
    GenerationLimits,
    GenerationTimeout,
    Generator,
)
from app.generation.loader import load_generator
from app.generation.provider import GeneratorProvider
from app.kit.actor import SystemActor
from app.kit.db import Database
from app.kit.settings import Settings
from app.models import Document
from app.search.visibility import Visibility

# The settings a report records (besides every override a variant makes).
RECORDED = (
    "chat.unsupported_answer",
    "chat.min_support",
    "chat.check_sentences",
    "chat.quote_sentences",
    "chat.subject_words",
    "chat.require_focus",
    "chat.focus_window",
    "chat.focus_rank",
    "chat.subject_picks_passage",
    "chat.numbers_in_quote",
    "chat.answer_quote",
    "chat.prompt_style",
    "chat.native_examples",
    "chat.passage_order",
    "chat.passage_sentences",
    "chat.answer_max_new_tokens",
    "chat.trim_repetition",
    "chat.top_k",
    "chat.mode",
    "chat.max_context_chars",
    "generator.backend",
    "generator.model_path",
    "generator.quantization",
    "generator.max_new_tokens",
    "generator.threads",
    "generator.openai.base_url",
    "generator.openai.model",
)
_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)


def normalise_span(text: str) -> str:
    """Text as gold spans are matched: NFKC, lower case, no spaces or punctuation."""
    return _PUNCT.sub("", unicodedata.normalize("NFKC", text).lower())


def contains_gold(answer: str, gold: Sequence[str]) -> bool:
    """Whether the answer contains one of the gold spans (module doc)."""
    said = normalise_span(strip_markers(answer))
    return any((span := normalise_span(g)) and span in said for g in gold)


def load_gold(folder: Path) -> dict[str, list[str]]:
    """answers.jsonl: query id -> its gold answer spans."""
    gold: dict[str, list[str]] = {}
    for record in _jsonl(folder / "answers.jsonl"):
        spans = record.get("answers")
        if not isinstance(spans, list):
            raise DatasetError(f"answers.jsonl: {record['_id']} has no list of answers")
        gold[str(record["_id"])] = [str(s) for s in spans if str(s).strip()]
    return gold


def sample_queries(
    dataset: BeirDataset, gold: Mapping[str, list[str]], *, size: int | None, seed: int
) -> list[str]:
    """The query ids to ask: those with gold spans, a seeded sample of `size` of them."""
    ids = sorted(q for q in dataset.queries if gold.get(q))
    if size is not None and size < len(ids):
        ids = sorted(random.Random(seed).sample(ids, size))
    return ids


def corpus_subset(
    dataset: BeirDataset, query_ids: Sequence[str], *, distractors: int | None, seed: int
) -> BeirDataset:
    """The dataset with only the sampled questions' judged documents plus `distractors`
    others (seeded); None: the whole corpus."""
    if distractors is None:
        return dataset
    needed = {doc for q in query_ids for doc in dataset.qrels[q]}
    others = sorted(set(dataset.corpus) - needed)
    extra = random.Random(seed).sample(others, min(distractors, len(others)))
    keep = needed | set(extra)
    corpus = {doc: body for doc, body in dataset.corpus.items() if doc in keep}
    return BeirDataset(dataset.name, corpus, dataset.queries, dataset.qrels)


class ReusingGenerator:
    """A generator that answers a prompt it has seen before with its earlier completion
    (greedy decoding makes that the same text), counting how often it did. With a `store`
    file the completions (and the seconds each took) outlive the process, so a later run
    re-scores the same generations under other post-generation settings."""

    def __init__(self, inner: Generator, model: str, store: Path | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = model
        self.store = store
        self.reused = 0
        # Generation seconds of the reused completions (what they took when generated).
        self.replayed_seconds = 0.0
        self._seen: dict[str, tuple[Completion, float]] = {}
        if store is not None and store.is_file():
            for line in store.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                completion = Completion(
                    row["text"],
                    row["finish_reason"],
                    row["prompt_tokens"],
                    row["completion_tokens"],
                )
                self._seen[row["key"]] = (completion, float(row["seconds"]))

    def _key(self, messages: Sequence[ChatMessage], limits: GenerationLimits) -> str:
        body = json.dumps(
            [self.model, repr(limits), [(m.role, m.content) for m in messages]],
            ensure_ascii=False,
        )
        return hashlib.sha256(body.encode()).hexdigest()

    def complete(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> Completion:
        key = self._key(messages, limits)
        if key in self._seen:
            completion, seconds = self._seen[key]
            self.reused += 1
            self.replayed_seconds += seconds
            return completion
        started = time.perf_counter()
        completion = self.inner.complete(messages, limits, cancel)
        seconds = time.perf_counter() - started
        if completion.finish_reason == "cancelled":
            return completion
        self._seen[key] = (completion, seconds)
        if self.store is not None:
            row = {"key": key, "seconds": round(seconds, 3), **dataclasses.asdict(completion)}
            with self.store.open("a", encoding="utf-8") as out:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        return completion

    def stream(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> AsyncGenerator[str, None]:
        return self.inner.stream(messages, limits, cancel)


@dataclass
class Record:
    """One question's answer and its scores (a line of the per-question log)."""

    variant: str
    query_id: str
    question: str
    gold: list[str]
    gold_document: list[str]
    answer: str
    generated: str | None
    check: str
    grounded: bool
    note: str | None
    cited_documents: list[str]
    quotes: list[str]
    seconds: float
    # The prompt passages in rank order: {"ref", "document" (BEIR id), "text"}.
    passages: list[dict[str, Any]] = field(default_factory=list)
    # Seconds of reused generations (--reuse) included in `seconds`: what they took when made.
    replayed_seconds: float = 0.0
    # The supporting quote the answer ends with ("" when none).
    quote: str = ""
    gold_span: bool = False
    # The answer without `quote` contains a gold span.
    gold_span_own: bool = False
    gold_cited: bool = False
    unsupported: bool = False
    refused: bool = False

    # CMRC F1 of the model's own words (0 for a quote instead, a refusal, nothing found).
    own_f1: float = 0.0
    # The check's reason for its verdict on the model's text (`Answer.reason`).
    reason: str | None = None

    @property
    def grounded_wrong(self) -> bool:
        return self.grounded and not self.gold_span


@dataclass
class Metrics:
    variant: str
    answers: int
    gold_span: float
    gold_cited: float
    unsupported: float
    grounded_wrong: float
    refusal: float
    median_seconds: float
    outcomes: dict[str, int] = field(default_factory=dict)
    # Gold span in the answer without its supporting quote (the model's own words).
    gold_span_own: float = 0.0
    # Generations taken from an earlier variant (its time is not in median_seconds).
    reused: int = 0
    own_f1: float = 0.0
    quoted: float = 0.0
    p90_seconds: float = 0.0
    # The process's peak resident memory when the variant finished (MiB; ru_maxrss).
    peak_mib: float = 0.0


def summarise(variant: str, records: Sequence[Record], *, peak: bool = True) -> Metrics:
    """The rates over one variant's answers (each a share of all its answers). `peak`: the
    process's peak memory now is this variant's (0 when it is not: a row re-scored later)."""
    n = len(records)

    def rate(flags: Sequence[bool]) -> float:
        return sum(flags) / n if n else 0.0

    outcomes: dict[str, int] = {}
    for r in records:
        outcomes[r.check] = outcomes.get(r.check, 0) + 1
    return Metrics(
        variant,
        n,
        rate([r.gold_span for r in records]),
        rate([r.gold_cited for r in records]),
        rate([r.unsupported for r in records]),
        rate([r.grounded_wrong for r in records]),
        rate([r.refused for r in records]),
        statistics.median(r.seconds for r in records) if records else 0.0,
        dict(sorted(outcomes.items())),
        rate([r.gold_span_own for r in records]),
        own_f1=sum(r.own_f1 for r in records) / n if n else 0.0,
        quoted=rate([r.check == "quoted" for r in records]),
        p90_seconds=_percentile([r.seconds for r in records], 0.9),
        peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if peak else 0.0,
    )


def same_questions(answered: Mapping[str, Sequence[Record]]) -> list[Metrics]:
    """For each variant stopped before the others (`--variant-minutes`), every variant that
    answered more, scored on the same first questions only: a row "NAME (first N)" beside the
    short one. Questions are asked in the same order under every variant, so the first N are
    the same N."""
    counts = sorted({len(records) for records in answered.values()})
    rows: list[Metrics] = []
    for n in counts[:-1]:
        for name, records in answered.items():
            if len(records) > n and n > 0:
                row = summarise(f"{name} (first {n})", records[:n], peak=False)
                row.reused = sum(r.replayed_seconds > 0 for r in records[:n])
                rows.append(row)
    return rows


def _percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def cmrc_tokens(text: str) -> list[str]:
    """CMRC 2018's mixed segmentation: each Chinese character a token, other runs of letters
    and digits a token each, punctuation and spaces dropped (NFKC, lower case)."""
    tokens: list[str] = []
    run = ""
    for char in unicodedata.normalize("NFKC", text).lower():
        if _CJK.match(char) or not (char.isalnum()):
            if run:
                tokens.append(run)
                run = ""
            if _CJK.match(char):
                tokens.append(char)
        else:
            run += char
    if run:
        tokens.append(run)
    return tokens


def _common_run(a: Sequence[str], b: Sequence[str]) -> int:
    """The length of the longest common contiguous run of tokens (CMRC's find_lcs)."""
    best = 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def cmrc_f1(prediction: str, gold: Sequence[str]) -> float:
    """CMRC 2018's F1: the best over the gold spans of the longest common run's precision and
    recall."""
    said = cmrc_tokens(prediction)
    best = 0.0
    for span in gold:
        wanted = cmrc_tokens(span)
        common = _common_run(wanted, said)
        if not common:
            continue
        precision, recall = common / len(said), common / len(wanted)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def own_words(answer: Answer) -> str:
    """The model's own words of an answer: "" for a quote instead, a refusal or nothing found;
    otherwise the text without its supporting quote, citation markers and the check's note."""
    if answer.state not in ("answered", "unverified"):
        return ""
    text = answer.text.removesuffix(answer.quote)
    if answer.note:
        text = text.replace(answer.note, "")
    return strip_markers(text).strip()


def markdown(metrics: Sequence[Metrics]) -> str:
    """The table of variants."""
    head = (
        "| variant | answers | gold span as shown | gold span in own words | own-words F1 | "
        "quoted instead | grounded but wrong | gold passage cited | unsupported | refusal | "
        "median s/answer | p90 s/answer | peak MiB | check outcomes |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    reused = " (r)"
    rows = [
        f"| {m.variant} | {m.answers} | {m.gold_span:.3f} | {m.gold_span_own:.3f} | "
        f"{m.own_f1:.3f} | {m.quoted:.3f} | {m.grounded_wrong:.3f} | {m.gold_cited:.3f} | "
        f"{m.unsupported:.3f} | {m.refusal:.3f} | "
        f"{m.median_seconds:.2f}{reused if m.reused else ''} | "
        f"{m.p90_seconds:.2f}{reused if m.reused else ''} | "
        f"{f'{m.peak_mib:.0f}' if m.peak_mib else '–'} | "
        + ", ".join(f"{k} {v}" for k, v in m.outcomes.items())
        + " |"
        for m in metrics
    ]
    return head + "\n".join(rows)


def _value(raw: str) -> Any:
    """A settings value from the command line: JSON when it parses (numbers, true, null),
    otherwise the string itself."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def apply_overrides(settings: Settings, overrides: Mapping[str, str]) -> Settings:
    """Settings with `section.key[.key]` overrides, validated like the configuration file."""
    data = settings.model_dump()
    for dotted, raw in overrides.items():
        *path, key = dotted.split(".")
        node = data
        for part in path:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"unknown setting {dotted!r}")
            node = node[part]
        if key not in node:
            raise ValueError(f"unknown setting {dotted!r}")
        node[key] = _value(raw)
    update = {name: data[name] for name in {d.split(".")[0] for d in overrides}}
    validated = {
        name: type(getattr(settings, name)).model_validate(value) for name, value in update.items()
    }
    return settings.model_copy(update=validated)


def setting(settings: Settings, dotted: str) -> Any:
    node: Any = settings
    for part in dotted.split("."):
        node = getattr(node, part) if isinstance(node, BaseModel) else None
    return node


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """`name:key=value,key=value` (or `name` alone: the configured settings)."""
    name, _, rest = text.partition(":")
    overrides: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"variant {name!r}: {item!r} is not key=value")
        overrides[key.strip()] = value.strip()
    return name.strip() or "configured", overrides


async def _beir_ids(database: Database, tenant_id: int, dataset: BeirDataset) -> dict[int, str]:
    wanted = {document_filename(doc_id): doc_id for doc_id in dataset.corpus}
    async with database.read_sessionmaker() as session:
        rows = await session.execute(
            select(Document.id, Document.filename).where(
                Document.tenant_id == tenant_id, Document.status == "ready"
            )
        )
        return {doc: wanted[name] for doc, name in rows if name in wanted}


async def ask(
    settings: Settings,
    runtime: AnswerRuntime,
    tenant_id: int,
    beir_ids: Mapping[int, str],
    dataset: BeirDataset,
    gold: Mapping[str, list[str]],
    query_id: str,
    variant: str,
    reusing: ReusingGenerator | None = None,
) -> Record:
    """Ask one question through the answer service as the operator and score the answer.
    Its time includes, for a reused generation, the seconds that generation took."""
    question = dataset.queries[query_id]
    caller = Caller(SystemActor.OPERATOR, Visibility.for_tenant(tenant_id), via="eval")
    database = runtime.database
    replayed = reusing.replayed_seconds if reusing is not None else 0.0
    started = time.perf_counter()
    async with database.sessionmaker() as session, session.begin():
        prepared = await answer_service.prepare(
            session, caller, question=Question(question), runtime=runtime
        )
        timed_out = False
        try:
            answer = (await answer_service.answer(session, prepared)).answer
        except GenerationTimeout:
            # What a user got: a 504 and no answer. It counts as a wrong, ungrounded answer
            # that took the whole time limit (check "timeout"), and the run goes on.
            timed_out = True
            answer = Answer("", [], "timeout", grounded=False)
    replayed = (reusing.replayed_seconds if reusing is not None else 0.0) - replayed
    seconds = time.perf_counter() - started + replayed
    by_ref = {p.ref: p for p in prepared.grounding.passages}
    # The passage text the model saw (possibly cut to sentences), as the check sees it.
    cited_texts = [by_ref[c.ref].text + " " + by_ref[c.ref].title for c in answer.citations]
    # The check tells refusals apart; unchecked text is read for one here. (A quote is the
    # documents' text, whatever it says: "…没有包含…" in it is no refusal.)
    refused = (
        not prepared.grounding.relevant
        or answer.check == "refused"
        or (answer.check == "unchecked" and is_refusal(answer.text))
    )
    record = Record(
        variant=variant,
        query_id=query_id,
        question=question,
        gold=list(gold[query_id]),
        gold_document=sorted(dataset.qrels[query_id]),
        answer=answer.text,
        generated=answer.generated,
        check="timeout" if timed_out else answer.check,
        grounded=answer.grounded,
        note=answer.note,
        cited_documents=[beir_ids.get(c.document_id, "?") for c in answer.citations],
        quotes=[c.quote for c in answer.citations],
        seconds=round(seconds, 3),
        passages=[
            {"ref": p.ref, "document": beir_ids.get(p.document_id, "?"), "text": p.text}
            for p in sorted(prepared.grounding.passages, key=lambda p: p.ref)
        ],
        replayed_seconds=round(replayed, 3),
        reason=answer.reason,
    )
    record.quote = answer.quote
    record.gold_span = contains_gold(answer.text, record.gold)
    own = own_words(answer)
    record.gold_span_own = bool(own) and contains_gold(own, record.gold)
    record.own_f1 = round(cmrc_f1(own, record.gold), 4) if own else 0.0
    record.gold_cited = bool(set(record.cited_documents) & set(record.gold_document))
    record.refused = refused
    record.unsupported = (
        not refused
        and not timed_out
        and not check(
            answer.text, question, cited_texts, min_support=settings.chat.min_support
        ).supported
    )
    return record


@dataclass
class AnswerEvalReport:
    dataset: str
    documents: int
    sampled: int
    ingest_seconds: float
    metrics: list[Metrics]
    settings: dict[str, dict[str, Any]]
    logs: list[Path]
    # Variants stopped by `variant_seconds` before their last question: name -> answers.
    stopped: dict[str, int] = field(default_factory=dict)

    def settings_table(self) -> str:
        names = list(self.settings)
        keys = sorted({k for s in self.settings.values() for k in s})
        head = "| setting | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
        rows = [
            f"| `{k}` | " + " | ".join(str(self.settings[n].get(k, "")) for n in names) + " |"
            for k in keys
        ]
        return head + "\n".join(rows)


async def evaluate_answers(
    settings: Settings,
    dataset: BeirDataset,
    gold: Mapping[str, list[str]],
    *,
    tenant: str,
    query_ids: Sequence[str],
    variants: Sequence[tuple[str, Mapping[str, str]]],
    log_dir: Path,
    reuse: bool = False,
    progress: Progress | None = None,
    variant_seconds: float | None = None,
) -> AnswerEvalReport:
    """Load the corpus (once) and ask every sampled question under each variant.
    `variant_seconds`: a variant asks no new question once it has run this long (it always
    asks one); the report then also scores the longer variants on the same first questions
    (`same_questions`)."""
    progress = progress or Progress(disable=True)
    container = Container(settings)
    database = container.database
    try:
        seconds = await load_dataset(container, dataset, tenant, progress)
        tenant_id = await _tenant_id(database, tenant)
        beir_ids = await _beir_ids(database, tenant_id, dataset)
        retriever = container.retriever
        providers: dict[str, GeneratorProvider] = {}
        reusing: dict[str, ReusingGenerator] = {}
        metrics: list[Metrics] = []
        recorded: dict[str, dict[str, Any]] = {}
        logs: list[Path] = []
        answered: dict[str, list[Record]] = {}
        stopped: dict[str, int] = {}
        log_dir.mkdir(parents=True, exist_ok=True)
        for name, overrides in variants:
            configured = apply_overrides(settings, overrides)
            key = configured.generator.model_dump_json()
            if key not in providers:
                loaded = None
                if reuse:
                    # Loaded here (not on the first question) so that every variant's
                    # answers can share it; a load failure stops the run like a 503 would.
                    model = await asyncio.to_thread(load_generator, configured)
                    loaded = reusing[key] = ReusingGenerator(
                        model, key, log_dir / "generations.jsonl"
                    )
                providers[key] = GeneratorProvider(configured, loaded)
            provider = providers[key]
            reused_before = reusing[key].reused if key in reusing else 0
            runtime = AnswerRuntime(configured, retriever, provider, database)
            recorded[name] = {k: setting(configured, k) for k in (*RECORDED, *overrides)}
            log = log_dir / f"answers-{dataset.name}-{_safe(name)}.jsonl"
            records: list[Record] = []
            task = progress.add_task(f"answers ({name})", total=len(query_ids))
            started = time.monotonic()
            with log.open("w", encoding="utf-8") as out:
                for query_id in query_ids:
                    spent = time.monotonic() - started
                    if records and variant_seconds is not None and spent >= variant_seconds:
                        stopped[name] = len(records)
                        break
                    record = await ask(
                        configured,
                        runtime,
                        tenant_id,
                        beir_ids,
                        dataset,
                        gold,
                        query_id,
                        name,
                        reusing.get(key),
                    )
                    records.append(record)
                    row = asdict(record) | {"grounded_wrong": record.grounded_wrong}
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                    out.flush()
                    progress.advance(task)
            summary = summarise(name, records)
            summary.reused = (reusing[key].reused if key in reusing else 0) - reused_before
            metrics.append(summary)
            logs.append(log)
            answered[name] = records
        return AnswerEvalReport(
            dataset.name,
            len(beir_ids),
            len(query_ids),
            seconds,
            metrics + same_questions(answered),
            recorded,
            logs,
            stopped,
        )
    finally:
        await container.close()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60] or "variant"
