"""The llamacpp backend: a clear error without the optional extra; with it installed, the
bundled GGUF answers (slow)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from app.generation import llamacpp_backend
from app.generation.base import ChatMessage, GenerationLimits, GeneratorUnavailable
from app.generation.llamacpp_backend import LlamaCppGenerator
from app.kit.settings import GeneratorSettings


def test_without_the_extra_the_error_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_llama_cpp(name: str, *args: object, **kwargs: object) -> object:
        if name == "llama_cpp" or name.startswith("llama_cpp."):
            raise ImportError("No module named 'llama_cpp'", name="llama_cpp")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_llama_cpp)
    with pytest.raises(GeneratorUnavailable, match=r"pip install 'cairn\[llamacpp\]'"):
        LlamaCppGenerator(GeneratorSettings(backend="llamacpp"), tmp_path)


def test_only_gguf_files_are_accepted(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    settings = GeneratorSettings(backend="llamacpp", model_path=str(tmp_path))
    with pytest.raises(GeneratorUnavailable, match="not a .gguf file"):
        LlamaCppGenerator(settings, tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not llamacpp_backend.is_available(), reason="llama-cpp-python not installed")
class TestBundledOnLlamaCpp:
    @pytest.fixture(scope="class")
    @classmethod
    def llama(cls, models_dir: Path) -> LlamaCppGenerator:
        return LlamaCppGenerator(GeneratorSettings(backend="llamacpp", threads=2), models_dir)

    def test_answers(self, llama: LlamaCppGenerator) -> None:
        completion = llama.complete(
            [ChatMessage("user", "What is 2 + 2?")], GenerationLimits(max_new_tokens=8)
        )
        assert "4" in completion.text

    async def test_stream_stops_on_cancel(self, llama: LlamaCppGenerator) -> None:
        cancel = threading.Event()
        deltas = []
        question = [ChatMessage("user", "Count from 1 to 100.")]
        async for delta in llama.stream(question, GenerationLimits(max_new_tokens=200), cancel):
            deltas.append(delta)
            cancel.set()
        assert 1 <= len(deltas) <= 3
