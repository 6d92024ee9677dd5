"""A remote OpenAI-compatible chat server: vLLM, SGLang, Ollama, DeepSeek's API, ...

`POST {base_url}/chat/completions`, with `stream: true` read as Server-Sent Events. Closing
the stream closes the HTTP connection, which those servers take as the signal to stop
generating.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import httpx

from app.generation.base import (
    ChatMessage,
    Completion,
    FinishReason,
    GenerationLimits,
    GenerationTimeout,
    GeneratorBusy,
    GeneratorError,
    GeneratorUnavailable,
    StopSignal,
    as_dicts,
)
from app.kit.errors import CairnError
from app.kit.settings import GeneratorSettings

logger = logging.getLogger(__name__)


def _finish_reason(value: Any) -> FinishReason:
    return "stop" if value in (None, "stop", "eos", "stop_sequence") else "length"


class OpenAIGenerator:
    """Talks to one OpenAI-compatible endpoint; holds no connection between calls."""

    def __init__(self, settings: GeneratorSettings) -> None:
        endpoint = settings.openai
        if not endpoint.base_url or not endpoint.model:
            raise GeneratorUnavailable("generator.openai.base_url and .model are required")
        self.base_url = endpoint.base_url.rstrip("/")
        self.model = endpoint.model
        self.name = f"openai:{endpoint.model}"
        self._headers = {"Accept": "application/json"}
        if endpoint.api_key:
            self._headers["Authorization"] = f"Bearer {endpoint.api_key}"
        self._connect_timeout = endpoint.connect_timeout_seconds

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _payload(
        self, messages: Sequence[ChatMessage], limits: GenerationLimits, *, stream: bool
    ) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": as_dicts(messages),
            "max_tokens": limits.max_new_tokens,
            "temperature": limits.temperature,
            "top_p": limits.top_p,
            "stream": stream,
        }

    def _timeout(self, signal: StopSignal) -> httpx.Timeout:
        remaining = max(signal.remaining(), 0.001)
        return httpx.Timeout(remaining, connect=min(self._connect_timeout, remaining))

    def _refused(self, status: int, body: str) -> CairnError:
        # The endpoint's own words go to the log only: they can name internal hosts.
        logger.warning("generator endpoint %s answered %s: %s", self.url, status, body[:500])
        if status == 429:
            return GeneratorBusy("The generator endpoint is rate-limiting; try again shortly")
        return GeneratorError(f"The generator endpoint answered HTTP {status}")

    def _unreachable(self, exc: httpx.HTTPError) -> GeneratorUnavailable:
        logger.warning("generator endpoint %s failed: %r", self.url, exc)
        return GeneratorUnavailable(f"The generator endpoint failed ({type(exc).__name__})")

    def complete(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """One non-streaming request; `cancel` is honoured before it is sent."""
        signal = StopSignal(limits, cancel)
        if signal.cancelled:
            return Completion(
                text="", finish_reason="cancelled", prompt_tokens=0, completion_tokens=0
            )
        try:
            with httpx.Client(timeout=self._timeout(signal)) as client:
                response = client.post(
                    self.url,
                    json=self._payload(messages, limits, stream=False),
                    headers=self._headers,
                )
        except httpx.TimeoutException as exc:
            raise GenerationTimeout() from exc
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            raise self._refused(response.status_code, response.text)
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise GeneratorError("The generator endpoint sent a malformed answer") from exc
        usage = data.get("usage") or {}
        return Completion(
            text=str(text),
            finish_reason=_finish_reason(choice.get("finish_reason")),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> AsyncGenerator[str, None]:
        """Text deltas read from the endpoint's SSE stream."""
        signal = StopSignal(limits, cancel)
        payload = self._payload(messages, limits, stream=True)
        sent: list[str] = []
        async with httpx.AsyncClient(timeout=self._timeout(signal)) as client:
            try:
                async with client.stream(
                    "POST", self.url, json=payload, headers=self._headers
                ) as response:
                    if response.status_code >= 400:
                        body = (await response.aread()).decode("utf-8", "replace")
                        raise self._refused(response.status_code, body)
                    deltas = self._deltas(response.aiter_lines(), signal)
                    async with contextlib.aclosing(deltas):
                        async for delta in deltas:
                            sent.append(delta)
                            yield delta
            except httpx.TimeoutException as exc:
                raise GenerationTimeout(partial="".join(sent)) from exc
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from exc
        signal.raise_if_timed_out("".join(sent))

    async def _deltas(
        self, lines: AsyncIterator[str], signal: StopSignal
    ) -> AsyncGenerator[str, None]:
        while not signal.should_stop():
            try:
                # Bounded by what is left of the whole generation's time, not per read.
                line = await asyncio.wait_for(anext(lines), timeout=signal.remaining())
            except StopAsyncIteration:
                return
            except TimeoutError:
                signal.timed_out = True
                return
            if not line.startswith("data:"):
                continue  # SSE comments, event names, keep-alives, blank separators
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                chunk = json.loads(data)
            except ValueError as exc:
                raise GeneratorError("The generator endpoint sent a malformed event") from exc
            if isinstance(chunk, dict) and "error" in chunk:
                raise self._refused(502, data)
            for choice in chunk.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    yield str(content)
