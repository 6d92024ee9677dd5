"""KEK files and an encrypted world for the encryption-at-rest tests."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.kit.settings import Settings
from app.kit.storage import ContentStore
from tests.conftest import make_settings

CANARY = "Zephyrquokka7731"


def write_kek(path: Path, mode: int = 0o600) -> Path:
    """A fresh KEK file (32 random bytes, base64) with this mode."""
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    path.chmod(mode)
    return path


def encrypted_settings(database_url: str, tmp: Path, *, enabled: bool = True) -> Settings:
    """Test settings with a KEK in `tmp`; `enabled`: new data is sealed."""
    kek = tmp / "kek"
    if not kek.exists():
        write_kek(kek)
    return make_settings(
        database_url,
        tmp / "data",
        encryption={"enabled": enabled, "kek_file": kek},
    )


def scan(root: Path, needle: bytes) -> list[Path]:
    """Every file under `root` whose bytes hold `needle` (case-insensitively)."""
    found: list[Path] = []
    lowered = needle.lower()
    for path in root.rglob("*"):
        if path.is_file() and lowered in path.read_bytes().lower():
            found.append(path)
    return found


class Interrupted(Exception):
    """A conversion stopped halfway (a killed process, as far as the data is concerned)."""


def interrupt_sealing_at(monkeypatch: pytest.MonkeyPatch, call: int) -> Callable[[], None]:
    """Make the `call`-th stored file sealed raise Interrupted; returns how to undo it."""
    original = ContentStore.seal_existing
    calls = {"n": 0}

    def failing(self: ContentStore, *args: Any) -> bool:
        calls["n"] += 1
        if calls["n"] == call:
            raise Interrupted()
        return original(self, *args)

    monkeypatch.setattr(ContentStore, "seal_existing", failing)
    return lambda: monkeypatch.setattr(ContentStore, "seal_existing", original)
