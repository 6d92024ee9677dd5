"""The `cairn bench generate` section, rendered from made-up runs (no model involved)."""

from __future__ import annotations

from app.bench.generate import QUESTIONS, QuestionRun, VariantRun, render
from app.generation.bundled import BUNDLED_MODELS


def _run(label: str, seconds: float, texts: list[str]) -> VariantRun:
    questions = [QuestionRun(0.5, seconds, 10, text) for text in texts]
    return VariantRun(label, label, 1.0, 900.0, 2000.0, questions)


def test_ratio_and_same_answers_are_reported() -> None:
    texts = [f"answer {i}" for i in range(len(QUESTIONS))]
    fp32 = _run("transformers fp32", 4.0, texts)
    int8 = _run("transformers int8", 1.0, [*texts[:-1], "different"])
    body = render(
        [fp32, int8],
        model=BUNDLED_MODELS["qwen2.5-coder-1.5b"],
        max_new_tokens=64,
        assemble_seconds=2.0,
        convert_seconds=80.0,
        cached=False,
        load_average=(1.0, 1.5),
        llamacpp_note="llama.cpp: not measured",
    )
    assert "**4.0×**" in body
    assert f"**{len(QUESTIONS) - 1}/{len(QUESTIONS)}**" in body
    assert "not met" in body
    assert "| transformers int8 | 1.0 | 0.50 | 10.0 |" in body
    assert "converting it for transformers 80 s" in body
    assert "llama.cpp: not measured" in body
    assert "Bundled Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF" in body
    assert "from its 22 packages" in body
