"""The OpenAI-compatible face of grounded chat. Stateless: the client sends the conversation
each time, so nothing is stored but the audit entry."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession
from sse_starlette import ServerSentEvent
from starlette.requests import Request

from app.chat.citations import sources_block
from app.chat.conversation import ChatContext, citation_out
from app.chat.language import SOURCES_HEADING
from app.chat.prompt import Turn
from app.chat.schemas import CitationOut
from app.chat.service import Answer, Grounding, chat_service
from app.generation.base import GenerationLimits, Generator
from app.generation.limits import limits_from_settings
from app.kit.authz import Authorizer, Enforcer, TenantAccess, domain_of
from app.kit.background import run_detached
from app.kit.disconnect import cancel_on_disconnect
from app.kit.errors import (
    BadRequest,
    CairnError,
    NotPermitted,
    ResourceNotFound,
    error_body,
)
from app.kit.principal import Principal
from app.openai_compat.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ModelCard,
    ModelList,
    Usage,
    chunk,
)
from app.tenants.repository import tenant_repository

MODEL_PREFIX = "cairn:"
_chat_access = Authorizer("chat", "ask")


class ModelNotFound(ResourceNotFound):
    code = "model_not_found"
    message = "The model does not exist or you do not have access to it"


@dataclass(frozen=True)
class Asked:
    """A completion request turned into what grounded chat needs."""

    question: str
    history: list[Turn]
    instructions: str | None
    top_k: int
    limits: GenerationLimits


@dataclass(frozen=True)
class Running:
    model: str
    grounding: Grounding
    generator: Generator | None
    limits: GenerationLimits
    completion_id: str
    created: int


class OpenAICompatService:
    async def models(
        self, session: AsyncSession, principal: Principal, enforcer: Enforcer
    ) -> ModelList:
        """One model per tenant the caller may chat in."""
        rows = await session.execute(
            tenant_repository.readable_statement(principal).order_by("slug")
        )
        cards = [
            ModelCard(id=MODEL_PREFIX + tenant.slug, created=int(tenant.created_at.timestamp()))
            for tenant, _role in rows
            if enforcer.allowed(principal.user_id, domain_of(tenant.id), "chat", "ask")
        ]
        return ModelList(data=cards)

    async def access_for(
        self, session: AsyncSession, principal: Principal, enforcer: Enforcer, model: str
    ) -> TenantAccess:
        """The caller's chat access to the model's tenant; an unknown model and a tenant you
        have no chat role in both answer 404 model_not_found, so neither leaks existence."""
        if not model.startswith(MODEL_PREFIX) or len(model) == len(MODEL_PREFIX):
            raise ModelNotFound(
                f"Unknown model {model[:100]!r}: Cairn's models are named cairn:<tenant-slug>; "
                "GET /v1/models lists yours"
            )
        try:
            return await _chat_access(model[len(MODEL_PREFIX) :], principal, session, enforcer)
        except (ResourceNotFound, NotPermitted) as exc:
            raise ModelNotFound() from exc

    def read(self, data: ChatCompletionRequest, ctx: ChatContext) -> Asked:
        """The question (the last user message), earlier turns and the client's instructions."""
        config = ctx.settings.chat
        if data.n not in (None, 1):
            raise BadRequest("Only n = 1 is supported")
        if any(m.has_non_text() for m in data.messages):
            raise BadRequest("Only text content is supported")
        last = data.messages[-1]
        if last.role != "user" or not last.text().strip():
            raise BadRequest("The last message must be a non-empty user message")
        question = last.text().strip()
        top_k = chat_service.admit(config, question, data.top_k)
        instructions = "\n".join(
            m.text() for m in data.messages if m.role in ("system", "developer") and m.text()
        )
        turns: list[Turn] = []
        dialogue = [m for m in data.messages[:-1] if m.role in ("user", "assistant")]
        for asked, answered in zip(dialogue, dialogue[1:], strict=False):
            if asked.role == "user" and answered.role == "assistant":
                # Clients resend whole conversations: each earlier turn is cut to the size of
                # a question so that history cannot crowd out the passages.
                cap = config.max_question_chars
                turns.append(Turn(asked.text()[:cap], answered.text()[:cap]))
        limits = limits_from_settings(
            ctx.settings.generator, max_new_tokens=data.max_completion_tokens or data.max_tokens
        )
        if data.temperature is not None:
            limits = dataclasses.replace(limits, temperature=data.temperature)
        if data.top_p is not None:
            limits = dataclasses.replace(limits, top_p=data.top_p)
        history = turns[-config.history_turns :] if config.history_turns else []
        instructions = instructions[: config.max_question_chars]
        return Asked(question, history, instructions or None, top_k, limits)

    async def start(self, ctx: ChatContext, model: str, asked: Asked) -> Running:
        grounding = await chat_service.ground(
            ctx.visibility,
            ctx.retriever,
            ctx.settings.chat,
            question=asked.question,
            top_k=asked.top_k,
            history=asked.history,
            client_instructions=asked.instructions,
        )
        generator = await ctx.generators.get() if grounding.relevant else None
        return Running(
            model,
            grounding,
            generator,
            asked.limits,
            "chatcmpl-" + secrets.token_hex(12),
            int(time.time()),
        )

    async def complete(
        self, request: Request, session: AsyncSession, ctx: ChatContext, running: Running
    ) -> ChatCompletion:
        async def work(cancel: threading.Event) -> Answer:
            return await chat_service.complete(
                running.grounding, running.generator, running.limits, ctx.settings.chat, cancel
            )

        answer = await cancel_on_disconnect(request, work)
        await ctx.audit(session, running.grounding, answer, via="openai")
        heading = SOURCES_HEADING[running.grounding.language]
        return ChatCompletion(
            id=running.completion_id,
            created=running.created,
            model=running.model,
            choices=[
                Choice(
                    message=AssistantMessage(
                        content=answer.text + sources_block(answer.citations, heading)
                    ),
                    finish_reason="length" if answer.finish_reason == "length" else "stop",
                )
            ],
            usage=Usage(
                prompt_tokens=answer.prompt_tokens,
                completion_tokens=answer.completion_tokens,
                total_tokens=answer.prompt_tokens + answer.completion_tokens,
            ),
            citations=[citation_out(c) for c in answer.citations],
        )

    async def stream(self, ctx: ChatContext, running: Running) -> AsyncIterator[ServerSentEvent]:
        """`chat.completion.chunk` events, the sources as a last text delta, a final chunk
        with `citations`, then `[DONE]`. Closing it stops the generation."""

        def event(
            delta: dict[str, str],
            finish_reason: str | None = None,
            citations: list[CitationOut] | None = None,
        ) -> ServerSentEvent:
            body = chunk(
                running.completion_id,
                running.created,
                running.model,
                delta,
                finish_reason,
                citations,
            )
            return ServerSentEvent(json.dumps(body, ensure_ascii=False))

        grounding = running.grounding
        parts: list[str] = []
        answer: Answer | None = None
        try:
            yield event({"role": "assistant", "content": ""})
            deltas = chat_service.stream(grounding, running.generator, running.limits)
            async with contextlib.aclosing(deltas) as produced:
                async for delta in produced:
                    parts.append(delta)
                    yield event({"content": delta})
            answer = chat_service.finish(grounding, "".join(parts), ctx.settings.chat)
            sources = sources_block(answer.citations, SOURCES_HEADING[grounding.language])
            if sources:
                yield event({"content": sources})
            yield event(
                {},
                finish_reason="stop",
                citations=[citation_out(c) for c in answer.citations],
            )
            yield ServerSentEvent("[DONE]")
        except CairnError as exc:
            yield ServerSentEvent(json.dumps(error_body(exc.code, exc.message)))
        finally:
            # Detached: after a disconnect this request's own awaits are cancelled.
            audited = ctx.audit_alone(grounding, answer, via="openai")
            run_detached(audited, what="audit a completion")


openai_service = OpenAICompatService()
