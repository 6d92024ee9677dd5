"""A generator double that is slow per token, like an in-process model on a CPU.

Its prefill costs `prefill_seconds` per prompt token and cannot be interrupted (a real prefill
runs before the first stop check); then it decodes its answer one word per `token_seconds`,
checking the stop signal between words as the real backends do. It counts one token per four
characters, so the prompt budget sees a tokenizer, and has a `window`-token context.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence

from app.generation.base import (
    ChatMessage,
    Completion,
    Emit,
    FinishReason,
    GenerationLimits,
    InProcessGenerator,
    StopSignal,
)


class SlowGenerator(InProcessGenerator):
    name = "slow"
    thread_prefix = "slow"

    def __init__(
        self,
        answer: str = "Every employee receives twenty five days of paid vacation [1].",
        *,
        prefill_seconds: float = 0.0,
        token_seconds: float = 0.0,
        endless: bool = False,
        window: int | None = 32_768,
    ) -> None:
        self.answer = answer
        self.prefill_seconds = prefill_seconds
        self.token_seconds = token_seconds
        self.endless = endless
        self.window = window
        self.prompt_tokens: list[int] = []
        self.decoded: list[int] = []
        self.timed_out: list[bool] = []
        self.started = threading.Event()
        self.finished = threading.Event()

    def count_tokens(self, text: str) -> int:
        return -(-len(text) // 4)

    def context_window(self) -> int | None:
        return self.window

    def _run(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        signal: StopSignal,
        emit: Emit | None = None,
    ) -> Completion:
        self.started.set()
        prompt = sum(self.count_tokens(m.content) for m in messages)
        self.prompt_tokens.append(prompt)
        time.sleep(prompt * self.prefill_seconds)
        words = self.answer.split(" ")
        stream = itertools.cycle(words) if self.endless else iter(words)
        parts: list[str] = []
        finish: FinishReason = "stop"
        try:
            for word in stream:
                if signal.should_stop():
                    finish = "cancelled"
                    break
                if len(parts) == limits.max_new_tokens:
                    finish = "length"
                    break
                piece = word if not parts else " " + word
                parts.append(piece)
                if emit is not None:
                    emit(piece)
                time.sleep(self.token_seconds)
        finally:
            self.decoded.append(len(parts))
            self.timed_out.append(signal.timed_out)
            self.finished.set()
        text = "".join(parts)
        signal.raise_if_timed_out(text)
        return Completion(text, finish, prompt, len(parts))
