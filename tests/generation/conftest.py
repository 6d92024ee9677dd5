"""Generation fixtures: tiny DeepSeek models (fast) and the bundled Qwen GGUF (assembled once
per run; loading it through transformers is `slow`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.generation.tiny_models import build_tiny_deepseek


@pytest.fixture(scope="session")
def tiny_deepseek_v3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_deepseek(tmp_path_factory.mktemp("deepseek-v3"), "v3")


@pytest.fixture(scope="session")
def tiny_deepseek_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_deepseek(tmp_path_factory.mktemp("deepseek-v2"), "v2")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the bundled GGUF and its converted checkpoint go. CAIRN_TEST_MODELS_DIR keeps
    them between runs (the conversion takes a minute on two cores)."""
    kept = os.environ.get("CAIRN_TEST_MODELS_DIR")
    if kept:
        path = Path(kept)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def bundled_gguf(models_dir: Path) -> Path:
    from app.generation.bundled import ensure_bundled_gguf

    return ensure_bundled_gguf(models_dir)
