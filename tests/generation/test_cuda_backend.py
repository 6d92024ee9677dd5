"""The transformers backend on a CUDA device, on tiny random DeepSeek models: every GPU
quantization (none, fp16, bf16, bnb8, bnb4) loads onto the GPU with the dtypes or
bitsandbytes layers it promises, and generation, streaming, stopping and limits behave as on
the CPU. Marked `cuda`; without a CUDA device every test skips with the reason "no CUDA
device".

Self-contained (its own model fixture, no async test functions) so that the GPU check
(scripts/gpu_check.sh) can run it with --noconftest and without pytest-asyncio: the shared
conftest imports the whole app, whose packages the GPU machine does not carry.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest

from app.generation.base import ChatMessage, GenerationLimits, GenerationTimeout
from app.generation.transformers_backend import (
    BNB8_SKIP_MODULES,
    TransformersGenerator,
    resolve_device,
)
from app.kit.settings import GeneratorSettings
from tests.generation.tiny_models import build_tiny_deepseek

pytestmark = pytest.mark.cuda

QUESTION = [ChatMessage("user", "what is the capital of france ?")]
Quantization = Literal["none", "fp16", "bf16", "bnb8", "bnb4"]
QUANTIZATIONS: list[Quantization] = ["none", "fp16", "bf16", "bnb8", "bnb4"]
# The dtype of every floating parameter not quantized by bitsandbytes (transformers_backend:
# bnb8 loads the rest in float16, bnb4 in bfloat16, its compute dtype).
FLOAT_DTYPE = {
    "none": "float32",
    "fp16": "float16",
    "bf16": "bfloat16",
    "bnb8": "float16",
    "bnb4": "bfloat16",
}
T = TypeVar("T")


@pytest.fixture(scope="module", autouse=True)
def cuda_device() -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


def _require_bitsandbytes() -> None:
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        pytest.skip(f"bitsandbytes is not importable: {exc}")


@pytest.fixture(scope="module", params=["v3", "v2"])
def tiny_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    architecture: Literal["v2", "v3"] = request.param
    return build_tiny_deepseek(tmp_path_factory.mktemp(f"deepseek-{architecture}"), architecture)


@pytest.fixture(scope="module", params=QUANTIZATIONS)
def generator(
    request: pytest.FixtureRequest, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TransformersGenerator]:
    import torch

    quantization: Quantization = request.param
    if quantization.startswith("bnb"):
        _require_bitsandbytes()
    settings = GeneratorSettings(
        model_path=str(tiny_model), quantization=quantization, device="cuda"
    )
    loaded = TransformersGenerator(settings, tmp_path_factory.mktemp("models"))
    yield loaded
    del loaded
    gc.collect()
    torch.cuda.empty_cache()


def _bnb_linears(model: Any) -> dict[str, str]:
    """Qualified name -> class name of the model's bitsandbytes Linear layers."""
    import bitsandbytes as bnb

    classes = (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit)
    return {n: type(m).__name__ for n, m in model.named_modules() if isinstance(m, classes)}


def _float_linears(model: Any) -> list[str]:
    import torch

    return [n for n, m in model.named_modules() if type(m) is torch.nn.Linear]


def _kept_in_float32(model: Any) -> set[str]:
    # Modules the model class asks to keep in float32 whatever the load dtype (DeepSeek: the
    # MoE router's gate weight and its score-correction bias).
    kept: set[str] = set()
    for attribute in ("_keep_in_fp32_modules", "_keep_in_fp32_modules_strict"):
        kept |= set(getattr(model, attribute, None) or ())
    return kept


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    # A private event loop, never installed as the thread's current loop, so it cannot
    # disturb the loop pytest-asyncio keeps for the async tests of a full run.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


async def _deltas(stream: AsyncIterator[str], cancel: threading.Event | None = None) -> list[str]:
    """Every delta of `stream`; with `cancel`, set it once the first delta arrived."""
    deltas: list[str] = []
    async for delta in stream:
        deltas.append(delta)
        if cancel is not None:
            cancel.set()
    return deltas


def _generation_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("cairn-generate-")]


class TestLoading:
    def test_parameters_live_on_the_gpu(self, generator: TransformersGenerator) -> None:
        assert generator.device == "cuda"
        assert generator.model.device.type == "cuda"
        tensors = [*generator.model.named_parameters(), *generator.model.named_buffers()]
        elsewhere = [name for name, t in tensors if t.device.type != "cuda"]
        assert elsewhere == []
        assert generator.name.endswith(f":{generator.quantization}")

    def test_floating_parameters_have_the_quantization_dtype(
        self, generator: TransformersGenerator
    ) -> None:
        expected = FLOAT_DTYPE[generator.quantization]
        kept = _kept_in_float32(generator.model)
        wrong = {
            name: str(p.dtype)
            for name, p in generator.model.named_parameters()
            if p.is_floating_point()
            and not any(k in name for k in kept)
            and str(p.dtype) != f"torch.{expected}"
        }
        assert wrong == {}

    def test_bitsandbytes_replaces_the_linear_layers(
        self, generator: TransformersGenerator
    ) -> None:
        if not generator.quantization.startswith("bnb"):
            assert _float_linears(generator.model), "unquantized models keep nn.Linear"
            return
        expected = "Linear8bitLt" if generator.quantization == "bnb8" else "Linear4bit"
        layers = _bnb_linears(generator.model)
        # Attention projections and the dense and shared-expert MLPs are quantized; transformers
        # keeps the output head (lm_head) in float (bnb8 also the MLA kv_b_proj, see
        # BNB8_SKIP_MODULES), and routed experts are not nn.Linear.
        assert layers, "no bitsandbytes Linear layer"
        assert set(layers.values()) == {expected}
        for name in ("model.layers.0.self_attn.o_proj", "model.layers.0.mlp.down_proj"):
            assert layers.get(name) == expected, name
        float_linears = {name.rsplit(".", 1)[-1] for name in _float_linears(generator.model)}
        kept = set(BNB8_SKIP_MODULES) if generator.quantization == "bnb8" else {"lm_head"}
        assert float_linears <= kept
        weight_dtype = "torch.int8" if generator.quantization == "bnb8" else "torch.uint8"
        weights = {str(m.weight.dtype) for n, m in generator.model.named_modules() if n in layers}
        assert weights == {weight_dtype}


class TestGeneration:
    def test_complete_returns_the_requested_tokens(self, generator: TransformersGenerator) -> None:
        completion = generator.complete(QUESTION, GenerationLimits(max_new_tokens=6))
        assert completion.completion_tokens == 6
        assert completion.finish_reason == "length"
        assert completion.prompt_tokens > 0
        assert completion.text.strip()

    def test_stream_deltas_add_up_to_the_answer(self, generator: TransformersGenerator) -> None:
        limits = GenerationLimits(max_new_tokens=8)
        deltas = _run(_deltas(generator.stream(QUESTION, limits)))
        assert len(deltas) > 1
        assert "".join(deltas).strip() == generator.complete(QUESTION, limits).text.strip()

    def test_preset_cancel_stops_after_the_first_token(
        self, generator: TransformersGenerator
    ) -> None:
        cancel = threading.Event()
        cancel.set()
        completion = generator.complete(QUESTION, GenerationLimits(max_new_tokens=50), cancel)
        assert completion.finish_reason == "cancelled"
        assert completion.completion_tokens == 1

    def test_cancel_during_the_stream_stops_it(self, generator: TransformersGenerator) -> None:
        cancel = threading.Event()
        stream = generator.stream(QUESTION, GenerationLimits(max_new_tokens=900), cancel)
        deltas = _run(_deltas(stream, cancel))
        # The GPU decodes a few more tokens while the cancel travels; far short of 900.
        assert 1 <= len(deltas) <= 10
        assert not _generation_threads()

    def test_closing_the_stream_stops_the_generation_thread(
        self, generator: TransformersGenerator
    ) -> None:
        async def first_then_close() -> float:
            stream = generator.stream(QUESTION, GenerationLimits(max_new_tokens=900))
            assert await anext(stream)
            started = time.monotonic()
            await stream.aclose()  # what a client disconnect does to a streaming response
            return time.monotonic() - started

        assert _run(first_then_close()) < 5
        assert not _generation_threads()

    def test_timeout_raises(self, generator: TransformersGenerator) -> None:
        limits = GenerationLimits(max_new_tokens=900, timeout_seconds=0.001)
        with pytest.raises(GenerationTimeout) as raised:
            generator.complete(QUESTION, limits)
        assert raised.value.status_code == 504

    def test_greedy_is_deterministic(self, generator: TransformersGenerator) -> None:
        limits = GenerationLimits(max_new_tokens=8)
        assert (
            generator.complete(QUESTION, limits).text == generator.complete(QUESTION, limits).text
        )


class TestAutoDevice:
    def test_auto_picks_cuda_unless_int8(self, tmp_path: Path) -> None:
        assert resolve_device(GeneratorSettings(device="auto", quantization="bf16")) == "cuda"
        assert resolve_device(GeneratorSettings(device="auto", quantization="int8")) == "cpu"

    def test_auto_loads_onto_the_gpu(self, tmp_path: Path) -> None:
        model = build_tiny_deepseek(tmp_path / "model", "v3")
        settings = GeneratorSettings(model_path=str(model), quantization="fp16", device="auto")
        generator = TransformersGenerator(settings, tmp_path)
        assert generator.device == "cuda"
        assert generator.model.device.type == "cuda"
        assert generator.complete(QUESTION, GenerationLimits(max_new_tokens=3)).completion_tokens
