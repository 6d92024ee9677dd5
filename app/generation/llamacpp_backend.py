"""GGUF models through llama.cpp (llama-cpp-python): the fast CPU path for quantized files.

Optional: `pip install 'cairn[llamacpp]'` (llama-cpp-python builds llama.cpp from source, about
ten minutes on two cores). The import is deferred until this backend is configured, so Cairn
runs without it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.generation import progress
from app.generation.base import (
    ChatMessage,
    Completion,
    Emit,
    FinishReason,
    GenerationLimits,
    GeneratorUnavailable,
    InProcessGenerator,
    StopSignal,
    as_dicts,
)
from app.generation.bundled import BUNDLED_MODELS, ensure_bundled_gguf
from app.generation.llamacpp_probe import trial_run
from app.kit.settings import GeneratorSettings

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "the llamacpp generator backend needs llama-cpp-python: pip install 'cairn[llamacpp]' "
    "(it compiles llama.cpp from source)"
)


def is_available() -> bool:
    """Whether llama-cpp-python is installed (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


class LlamaCppGenerator(InProcessGenerator):
    """One llama.cpp context; it runs one generation at a time, so calls take turns."""

    thread_prefix = "cairn-llamacpp"

    def __init__(self, settings: GeneratorSettings, models_dir: Path) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise GeneratorUnavailable(INSTALL_HINT) from exc
        started = time.monotonic()
        if settings.model_path is None:
            bundled = BUNDLED_MODELS[settings.bundled]
            path, label = ensure_bundled_gguf(models_dir, bundled), bundled.name
        else:
            path = Path(settings.model_path).expanduser()
            label = path.name
            if not path.is_file() or path.suffix.lower() != ".gguf":
                raise GeneratorUnavailable(
                    f"generator.model_path {path} is not a .gguf file (the llamacpp backend "
                    "reads GGUF only)"
                )
        progress.stage("loading")
        if not settings.device.startswith("cuda"):
            # A build whose CPU kernels this machine cannot run dies by a signal: in a child.
            trial_run(path, settings.threads)
        self._llama: Any = Llama(
            model_path=str(path),
            n_ctx=settings.context_length,
            n_threads=settings.threads,
            # Offload every layer when a GPU build of llama.cpp is asked to use CUDA.
            n_gpu_layers=-1 if settings.device.startswith("cuda") else 0,
            seed=0,
            verbose=False,
        )
        self._lock = threading.Lock()
        self.name = f"llamacpp:{label}"
        self.load_seconds = time.monotonic() - started

    def count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def context_window(self) -> int | None:
        """The context llama.cpp was opened with (`generator.context_length`)."""
        return int(self._llama.n_ctx())

    def _run(
        self,
        messages: Sequence[ChatMessage],
        limits: GenerationLimits,
        signal: StopSignal,
        emit: Emit | None = None,
    ) -> Completion:
        parts: list[str] = []
        finish: FinishReason = "length"
        chunks = 0
        with self._lock:
            stream = self._llama.create_chat_completion(
                messages=as_dicts(messages),
                max_tokens=limits.max_new_tokens,
                temperature=limits.temperature,
                top_p=limits.top_p,
                stream=True,
            )
            try:
                for chunk in stream:
                    choice = chunk["choices"][0]
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        chunks += 1
                        parts.append(content)
                        if emit is not None:
                            emit(content)
                    if choice.get("finish_reason"):
                        finish = "stop" if choice["finish_reason"] == "stop" else "length"
                    if signal.should_stop():
                        break
            finally:
                stream.close()  # stops llama.cpp's decode loop when we left early
        text = "".join(parts)
        signal.raise_if_timed_out(text)
        if signal.cancelled:
            finish = "cancelled"
        # A stream carries no usage; chunks are roughly one per token but merge where a token
        # ends inside a UTF-8 character, so the answer is re-tokenized instead.
        completion_tokens = self.count_tokens(text) if text else chunks
        return Completion(
            text=text, finish_reason=finish, prompt_tokens=0, completion_tokens=completion_tokens
        )
