"""Issue 21, item 6: the prompt's token budget, counted with the model's tokenizer where the
backend has one and estimated (high) where it has not."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.chat.prompt import Passage, Turn, fit_prompt
from app.generation.base import GenerationLimits
from app.generation.limits import GenerationSlots, LimitedGenerator, QueuedGenerator, Requester
from app.generation.tokens import estimate_tokens, token_budget, tokenizer_of
from app.generation.transformers_backend import TransformersGenerator
from app.kit.settings import GeneratorSettings
from tests.chat.doubles import EchoGenerator
from tests.generation.slow import SlowGenerator

LIMITS = GenerationLimits(max_new_tokens=512)


class TestEstimate:
    def test_counts_ordinary_text_high(self) -> None:
        prose = "Every employee receives twenty five days of paid vacation per year."
        # Real tokenizers take about one token per English word here.
        assert estimate_tokens(prose) >= len(prose.split())
        chinese = "年假制度：每位员工每年享有二十五天带薪年假。"
        assert estimate_tokens(chinese) == len(chinese)  # one per character

    def test_counts_text_built_to_tokenize_badly(self) -> None:
        # Space-separated digits are a token each (and the spaces one more) in BPE tokenizers.
        assert estimate_tokens("1 2 3 4 5") == 9
        # Long letter runs are no words: a token per two letters.
        assert estimate_tokens("x" * 40) == 20
        assert estimate_tokens("") == 0


class TestBudget:
    def test_the_backends_tokenizer_is_found_behind_the_limit(self) -> None:
        slow = SlowGenerator(window=32_768)
        limited = LimitedGenerator(slow, GenerationSlots(1, queue_timeout=1))
        queued = QueuedGenerator(limited, Requester(1, 2))
        for generator in (slow, limited, queued):
            assert tokenizer_of(generator) is slow
        budget = token_budget(queued, GeneratorSettings(max_prompt_tokens=3000), LIMITS)
        assert (budget.tokens, budget.counted_by) == (3000, "tokenizer")
        assert budget.count("abcdefgh") == 2

    def test_the_context_leaves_room_for_the_answer(self) -> None:
        small = SlowGenerator(window=2048)
        budget = token_budget(small, GeneratorSettings(max_prompt_tokens=3000), LIMITS)
        assert budget.tokens == 2048 - 512

    def test_without_a_tokenizer_the_estimate_and_the_configured_context(self) -> None:
        settings = GeneratorSettings(max_prompt_tokens=8000, context_length=4096)
        budget = token_budget(EchoGenerator(), settings, LIMITS)
        assert (budget.tokens, budget.counted_by) == (4096 - 512, "estimate")
        assert budget.count is estimate_tokens


@pytest.fixture(scope="module")
def deepseek_v3(
    tiny_deepseek_v3: Path, tmp_path_factory: pytest.TempPathFactory
) -> TransformersGenerator:
    settings = GeneratorSettings(model_path=str(tiny_deepseek_v3), quantization="int8")
    return TransformersGenerator(settings, tmp_path_factory.mktemp("models"))


def test_a_cut_prompt_fits_the_models_own_template(deepseek_v3: TransformersGenerator) -> None:
    assert deepseek_v3.context_window() == 1024
    limits = GenerationLimits(max_new_tokens=16)
    budget = token_budget(deepseek_v3, GeneratorSettings(max_prompt_tokens=600), limits)
    assert (budget.tokens, budget.counted_by) == (600, "tokenizer")
    words = "the quick brown fox jumps over the lazy dog "
    history = [Turn(words * 20, words * 80) for _ in range(10)]
    passages = [Passage(n, n, n, f"doc{n}.txt", words * 30) for n in (3, 2, 1)]
    prompt = fit_prompt(
        "what is the capital of france ?",
        passages,
        language="en",
        budget=budget,
        history=history,
    )
    assert prompt.cut
    templated = int(deepseek_v3._inputs(prompt.messages)["input_ids"].shape[1])
    assert templated <= prompt.tokens <= budget.tokens
