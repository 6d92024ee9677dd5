"""Generator test doubles for the chat API.

`EchoGenerator` answers with its whole prompt. It is the strictest adversary for isolation
tests: whatever reached the model comes back to the caller, so "no text of tenant eng in the
answer" proves that none of it was in the prompt. `StallingGenerator` produces tokens until
it is stopped and records that it was, for the disconnect tests. Real-model behaviour is
tested with the tiny DeepSeek and the bundled Qwen.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncGenerator, Sequence

from app.generation.base import (
    ChatMessage,
    Completion,
    Emit,
    GenerationLimits,
    InProcessGenerator,
    StopSignal,
)
from app.generation.limits import GenerationSlots, LimitedGenerator


class EchoGenerator:
    name = "echo"

    def __init__(self) -> None:
        self.calls = 0
        self.prompts: list[list[ChatMessage]] = []

    def _text(self, messages: Sequence[ChatMessage]) -> str:
        self.calls += 1
        self.prompts.append(list(messages))
        return "\n".join(f"{m.role}: {m.content}" for m in messages)

    def complete(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> Completion:
        text = self._text(messages)
        return Completion(text, "stop", len(text.split()), len(text.split()))

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> AsyncGenerator[str, None]:
        for line in self._text(messages).splitlines(keepends=True):
            yield line


class StallingGenerator(InProcessGenerator):
    """Emits "tick " every 20 ms until stopped (or its limits end it); `complete` and `stream`
    are the real in-process backends' own."""

    name = "stalling"
    thread_prefix = "stalling"

    def __init__(self) -> None:
        self.started = threading.Event()
        self.stopped = threading.Event()
        self.emitted = 0

    def _run(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        signal: StopSignal,
        emit: Emit | None = None,
    ) -> Completion:
        self.started.set()
        parts: list[str] = []
        try:
            while not signal.should_stop():
                parts.append("tick ")
                self.emitted += 1
                if emit is not None:
                    emit("tick ")
                time.sleep(0.02)
        finally:
            self.stopped.set()
        # As the real backends do: past the deadline is an error, carrying what was produced.
        signal.raise_if_timed_out("".join(parts))
        return Completion("".join(parts), "cancelled", 1, self.emitted)


def limited(
    backend: EchoGenerator | StallingGenerator | ScriptedGenerator, *, queue_timeout: float = 5.0
) -> LimitedGenerator:
    """The double behind the same concurrency limit the real loader applies."""
    return LimitedGenerator(backend, GenerationSlots(1, queue_timeout=queue_timeout))


class ScriptedGenerator:
    """Answers with the given texts in turn (the last one again once they run out), as a model
    would: for the faithfulness check, which must see an answer, not a prompt."""

    name = "scripted"

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.prompts: list[list[ChatMessage]] = []

    def _text(self, messages: Sequence[ChatMessage]) -> str:
        self.prompts.append(list(messages))
        return self.answers[min(len(self.prompts), len(self.answers)) - 1]

    def complete(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> Completion:
        text = self._text(messages)
        return Completion(text, "stop", 10, len(text.split()))

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        cancel: threading.Event | None = None,
    ) -> AsyncGenerator[str, None]:
        text = self._text(messages)
        for start in range(0, len(text), 4):
            yield text[start : start + 4]
