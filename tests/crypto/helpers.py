"""KEK files and an encrypted world for the encryption-at-rest tests."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from app.kit.settings import Settings
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
