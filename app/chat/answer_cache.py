"""The chat-answer cache: finished answers kept for the next caller who asks the same thing and
may see the same documents.

Why a cached answer can never show deleted or forbidden content:

* The key covers the tenant (first, so one tenant's entries are listed and purged by prefix
  and a key computed for tenant B never names an entry of A), the tenant's content version,
  the caller's visibility (sensitivity levels and filters), the normalised question, the
  conversation it continues, the passages asked for, every setting that shapes retrieval or
  the answer, and the generation limits.
* The content version moves in the same transaction as every change of what members may see
  (app/cache/versions.py), and it is read before retrieval: an answer written from the state
  before a change is stored under the old version and is unreachable once the change commits.
* Every hit is checked again against the current visibility of every document that was in its
  prompt (cited or not, like chat_message_sources), and dropped when any is out of sight.

Entries hold the answer, its citations and its prompt passages, never who asked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app.cache import versions
from app.cache.store import CacheStore
from app.chat.citations import Citation
from app.chat.language import Language
from app.chat.prompt import Passage, Turn
from app.chat.repository import chat_repository
from app.generation.base import GenerationLimits
from app.kit.metrics import CACHE_LOOKUPS
from app.kit.settings import Settings
from app.search.visibility import Visibility

logger = logging.getLogger(__name__)

# Bumped when what an entry holds, or how an answer is made from the same inputs, changes.
CACHE_FORMAT = 3
KIND = "answer"

T = TypeVar("T")


def normalise(text: str) -> str:
    """The text with runs of whitespace made one space: asked again with other spacing is
    asked the same. Case is kept: it reaches the model and may change the answer."""
    return " ".join(text.split())


def tenant_prefix(tenant_id: int) -> str:
    """The key prefix of every cached answer of the tenant."""
    return f"{KIND}:{tenant_id}:"


@dataclass(frozen=True)
class AnswerKey:
    """Where one question's answer is cached, and whether it may be."""

    key: str
    tenant_id: int


@dataclass(frozen=True)
class CachedAnswer(Generic[T]):
    answer: T
    language: Language
    relevant: bool
    passages: list[Passage]


def _settings_fingerprint(settings: Settings) -> str:
    # Everything that shapes retrieval, the prompt or the model's answer; never a secret.
    shaping = {
        "chat": settings.chat.model_dump(mode="json"),
        "search": settings.search.model_dump(mode="json"),
        "embedding": settings.embedding.model_dump(mode="json"),
        "generator": settings.generator.model_dump(mode="json", exclude={"openai": {"api_key"}}),
    }
    return json.dumps(shaping, sort_keys=True, default=str)


class AnswerCache:
    async def key(
        self,
        session: AsyncSession,
        settings: Settings,
        visibility: Visibility,
        *,
        question: str,
        history: Sequence[Turn],
        instructions: str | None,
        top_k: int,
        limits: GenerationLimits,
    ) -> AnswerKey | None:
        """The question's cache key under the tenant's content version now; None when answers
        are not cached (switched off, or sampled and `answer_sampled` is off)."""
        config = settings.cache
        if not config.answers or (limits.temperature > 0 and not config.answer_sampled):
            return None
        version = await versions.current(session, visibility.tenant_id)
        material = json.dumps(
            {
                "format": CACHE_FORMAT,
                "tenant": visibility.tenant_id,
                "version": version,
                "visibility": {
                    "sensitivity": sorted(visibility.sensitivity),
                    "tags": sorted(visibility.tags),
                    "documents": sorted(visibility.document_ids)
                    if visibility.document_ids is not None
                    else None,
                    "after": visibility.uploaded_after.isoformat()
                    if visibility.uploaded_after
                    else None,
                    "before": visibility.uploaded_before.isoformat()
                    if visibility.uploaded_before
                    else None,
                },
                "question": normalise(question),
                "history": [[t.question, t.answer] for t in history],
                "instructions": instructions,
                "top_k": top_k,
                "limits": dataclasses.asdict(limits),
                "settings": _settings_fingerprint(settings),
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        digest = hashlib.sha256(material.encode()).hexdigest()
        return AnswerKey(tenant_prefix(visibility.tenant_id) + digest, visibility.tenant_id)

    async def lookup(
        self,
        session: AsyncSession,
        store: CacheStore,
        key: AnswerKey,
        visibility: Visibility,
        *,
        build: Callable[[dict[str, Any]], T],
    ) -> CachedAnswer[T] | None:
        """The cached answer, when there is one and every document of its prompt is still
        visible to the caller; `build` makes the answer from its stored fields."""
        raw = await store.get(key.key)
        if raw is None:
            CACHE_LOOKUPS.labels(KIND, "miss").inc()
            return None
        try:
            entry = json.loads(raw)
            if entry["tenant"] != key.tenant_id or entry["format"] != CACHE_FORMAT:
                raise ValueError("an entry of another tenant or format")
            fields = dict(entry["answer"])
            fields["citations"] = [
                Citation(**{**c, "highlight": tuple(c.get("highlight", ()))})
                for c in fields["citations"]
            ]
            cached = CachedAnswer(
                build(fields),
                entry["language"],
                bool(entry["relevant"]),
                [Passage(**p) for p in entry["passages"]],
            )
            sources = {int(i) for i in entry["sources"]}
        except (KeyError, TypeError, ValueError) as exc:
            # Written by another version of Cairn: not an answer this one can serve.
            logger.info("unreadable cached answer ignored: %s", exc)
            CACHE_LOOKUPS.labels(KIND, "miss").inc()
            return None
        visible = await chat_repository.visible_documents(session, visibility, sources)
        if not sources <= visible:
            # Only reachable between a change and its version bump, or through a bug elsewhere:
            # either way this caller must not get it, and nobody else should either.
            CACHE_LOOKUPS.labels(KIND, "stale").inc()
            await store.delete(key.key)
            return None
        CACHE_LOOKUPS.labels(KIND, "hit").inc()
        return cached

    async def remember(
        self,
        store: CacheStore,
        settings: Settings,
        key: AnswerKey,
        *,
        answer: Any,
        language: Language,
        relevant: bool,
        passages: Sequence[Passage],
    ) -> None:
        """Keep a finished answer (a dataclass) with the passages of its prompt."""
        entry = {
            "format": CACHE_FORMAT,
            "tenant": key.tenant_id,
            "answer": dataclasses.asdict(answer),
            "language": language,
            "relevant": relevant,
            "passages": [dataclasses.asdict(p) for p in passages],
            "sources": sorted({p.document_id for p in passages}),
        }
        value = json.dumps(entry, ensure_ascii=False).encode()
        await store.set(key.key, value, ttl=settings.cache.answer_ttl_seconds)

    async def forget_document(self, store: CacheStore, tenant_id: int, document_id: int) -> int:
        """Remove every cached answer of the tenant whose prompt held the document; how many."""

        def held(raw: bytes) -> bool:
            try:
                return document_id in json.loads(raw).get("sources", [])
            except ValueError:
                return True  # unreadable: cannot prove it did not hold the document

        return await store.delete_where(tenant_prefix(tenant_id), held)


answer_cache = AnswerCache()
