"""The transformers backend on tiny random DeepSeek models (fast) and on the bundled Qwen
GGUF (slow): loading, int8 quantization, generation, streaming, cancellation, timeout."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from app.generation.base import ChatMessage, GenerationLimits, GenerationTimeout
from app.generation.transformers_backend import TransformersGenerator
from app.kit.settings import GeneratorSettings
from tests.generation.helpers import drain

QUESTION = [ChatMessage("user", "what is the capital of france ?")]


def _int8_linear_count(generator: TransformersGenerator) -> int:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    return sum(isinstance(m, DynamicInt8Linear) for m in generator.model.modules())


def _float_linears(generator: TransformersGenerator) -> list[str]:
    import torch

    return [n for n, m in generator.model.named_modules() if type(m) is torch.nn.Linear]


@pytest.fixture(scope="module")
def deepseek_v3(
    tiny_deepseek_v3: Path, tmp_path_factory: pytest.TempPathFactory
) -> TransformersGenerator:
    settings = GeneratorSettings(model_path=str(tiny_deepseek_v3), quantization="int8")
    return TransformersGenerator(settings, tmp_path_factory.mktemp("models"))


def _generation_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("cairn-generate-")]


class TestDeepSeekInt8:
    @pytest.mark.parametrize("fixture", ["tiny_deepseek_v3", "tiny_deepseek_v2"])
    def test_loads_quantized_and_generates(
        self, fixture: str, request: pytest.FixtureRequest, tmp_path: Path
    ) -> None:
        path: Path = request.getfixturevalue(fixture)
        settings = GeneratorSettings(model_path=str(path), quantization="int8")
        generator = TransformersGenerator(settings, tmp_path)

        expected = "DeepseekV3ForCausalLM" if fixture.endswith("v3") else "DeepseekV2ForCausalLM"
        assert type(generator.model).__name__ == expected
        # Every nn.Linear (attention projections, dense and shared-expert MLPs, lm_head) is
        # now a dynamic int8 Linear, except the MLP down projections kept float by default.
        assert _int8_linear_count(generator) > 0
        floats = _float_linears(generator)
        assert floats
        assert all(name.endswith("down_proj") for name in floats)
        assert generator.name == f"transformers:{path.name}:int8"

        completion = generator.complete(QUESTION, GenerationLimits(max_new_tokens=6))
        assert completion.completion_tokens == 6
        assert completion.finish_reason == "length"
        assert completion.prompt_tokens > 0
        assert completion.text.strip()

    def test_int8_without_skips_quantizes_every_linear(
        self, tiny_deepseek_v3: Path, tmp_path: Path
    ) -> None:
        settings = GeneratorSettings(
            model_path=str(tiny_deepseek_v3), quantization="int8", int8_skip_modules=()
        )
        generator = TransformersGenerator(settings, tmp_path)
        assert _float_linears(generator) == []
        assert generator.complete(QUESTION, GenerationLimits(max_new_tokens=3)).text

    def test_unquantized_keeps_float_linears(self, tiny_deepseek_v3: Path, tmp_path: Path) -> None:
        settings = GeneratorSettings(model_path=str(tiny_deepseek_v3), quantization="none")
        generator = TransformersGenerator(settings, tmp_path)
        assert _int8_linear_count(generator) == 0
        assert generator.complete(QUESTION, GenerationLimits(max_new_tokens=3)).text

    def test_greedy_is_deterministic(self, deepseek_v3: TransformersGenerator) -> None:
        limits = GenerationLimits(max_new_tokens=8)
        assert (
            deepseek_v3.complete(QUESTION, limits).text
            == deepseek_v3.complete(QUESTION, limits).text
        )


class TestStreaming:
    async def test_deltas_add_up_to_the_answer(self, deepseek_v3: TransformersGenerator) -> None:
        limits = GenerationLimits(max_new_tokens=8)
        deltas = [d async for d in deepseek_v3.stream(QUESTION, limits)]
        assert len(deltas) > 1
        assert "".join(deltas).strip() == deepseek_v3.complete(QUESTION, limits).text.strip()

    async def test_cancel_event_stops_generation(self, deepseek_v3: TransformersGenerator) -> None:
        cancel = threading.Event()
        deltas = []
        async for delta in deepseek_v3.stream(
            QUESTION, GenerationLimits(max_new_tokens=500), cancel
        ):
            deltas.append(delta)
            cancel.set()
        # Stopped after the token in flight, far short of 500.
        assert 1 <= len(deltas) <= 3

    async def test_closing_the_stream_stops_the_generation_thread(
        self, deepseek_v3: TransformersGenerator
    ) -> None:
        stream = deepseek_v3.stream(QUESTION, GenerationLimits(max_new_tokens=900))
        first = await anext(stream)
        assert first
        assert _generation_threads(), "generation should be running in its thread"
        started = time.monotonic()
        await stream.aclose()  # what a client disconnect does to a streaming response
        assert time.monotonic() - started < 5
        assert not _generation_threads()

    def test_preset_cancel_stops_after_the_first_token(
        self, deepseek_v3: TransformersGenerator
    ) -> None:
        cancel = threading.Event()
        cancel.set()
        completion = deepseek_v3.complete(QUESTION, GenerationLimits(max_new_tokens=50), cancel)
        assert completion.finish_reason == "cancelled"
        assert completion.completion_tokens == 1

    def test_timeout_raises_with_the_partial_answer(
        self, deepseek_v3: TransformersGenerator
    ) -> None:
        limits = GenerationLimits(max_new_tokens=900, timeout_seconds=0.001)
        with pytest.raises(GenerationTimeout) as raised:
            deepseek_v3.complete(QUESTION, limits)
        assert raised.value.status_code == 504

    async def test_stream_timeout_raises_after_the_deltas(
        self, deepseek_v3: TransformersGenerator
    ) -> None:
        limits = GenerationLimits(max_new_tokens=900, timeout_seconds=0.001)
        deltas: list[str] = []
        with pytest.raises(GenerationTimeout):
            await drain(deepseek_v3.stream(QUESTION, limits), deltas)
        await asyncio.sleep(0)
        assert not _generation_threads()


@pytest.fixture(scope="module")
def qwen(models_dir: Path) -> TransformersGenerator:
    """The bundled GGUF, converted through transformers (once) and int8-quantized."""
    return TransformersGenerator(GeneratorSettings(quantization="int8"), models_dir)


@pytest.mark.slow
class TestBundledQwen:
    def test_answers_a_trivial_question(self, qwen: TransformersGenerator) -> None:
        completion = qwen.complete(
            [ChatMessage("user", "What is 2 + 2?")], GenerationLimits(max_new_tokens=8)
        )
        assert "4" in completion.text
        assert _int8_linear_count(qwen) > 0
        assert qwen.name == "transformers:Qwen2.5-Coder-0.5B-Instruct Q4_K_M:int8"

    def test_second_start_uses_the_converted_checkpoint(
        self, qwen: TransformersGenerator, models_dir: Path
    ) -> None:
        assert qwen.checkpoint.parent == models_dir / "gguf-cache"
        started = time.monotonic()
        again = TransformersGenerator(GeneratorSettings(quantization="none"), models_dir)
        assert again.checkpoint == qwen.checkpoint
        # Converting took about a minute on two cores; the cached checkpoint loads in seconds.
        assert time.monotonic() - started < 30
