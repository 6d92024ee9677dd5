"""The llamacpp backend: a clear error without the optional extra; with it installed, the
bundled GGUF answers (slow)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from app.generation import llamacpp_backend
from app.generation.base import ChatMessage, GenerationLimits, GeneratorUnavailable
from app.generation.llamacpp_backend import LlamaCppGenerator
from app.generation.llamacpp_probe import trial_run
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
        try:
            return LlamaCppGenerator(GeneratorSettings(backend="llamacpp", threads=2), models_dir)
        except GeneratorUnavailable as exc:
            if "died with" not in str(exc):
                raise
            # The installed build cannot run on this CPU (seen: AMX kernels on a VM); the
            # trial run above is what keeps that from ending the server.
            pytest.skip(f"this llama.cpp build cannot run here: {exc}")

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


def test_a_build_that_dies_in_its_trial_run_is_unavailable(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    # What a llama.cpp build with kernels this CPU cannot run does: the child dies by SIGILL.
    dies = "import os, signal; os.kill(os.getpid(), signal.SIGILL)"
    with pytest.raises(GeneratorUnavailable, match="died with SIGILL .* model.gguf"):
        trial_run(gguf, 2, code=dies)
    with pytest.raises(GeneratorUnavailable, match="failed a trial run .* ValueError: bad file"):
        trial_run(gguf, None, code="raise ValueError('bad file')")
    # A child that reads its arguments and exits cleanly passes.
    trial_run(gguf, None, code="import sys; assert sys.argv[1].endswith('model.gguf')")
