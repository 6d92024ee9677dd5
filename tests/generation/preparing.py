"""A stand-in for the model's preparation that stops where the test says: no model loads."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from app.generation import progress
from app.generation.limits import LimitedGenerator
from app.kit.settings import Settings
from tests.chat.doubles import EchoGenerator, limited

# Generous bounds for a thread on a loaded 2-core box; the tests never assert on time.
WAIT_SECONDS = 30.0


class BlockedPreparation:
    """Replaces `load_generator`: reports assembling done and converting at 60%, then waits
    for `release()` and hands out an echo generator."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reached = threading.Event()
        self._released = threading.Event()
        self.echo = EchoGenerator()
        self.calls = 0
        monkeypatch.setattr("app.generation.provider.load_generator", self._load)

    def _load(self, _: Settings) -> LimitedGenerator:
        self.calls += 1
        progress.stage("assembling")
        progress.advance(1.0)
        progress.stage("converting")
        progress.advance(0.6)
        self.reached.set()
        if not self._released.wait(WAIT_SECONDS):
            raise RuntimeError("the test never released the preparation")
        return limited(self.echo)

    def wait_reached(self) -> None:
        assert self.reached.wait(WAIT_SECONDS), "the preparation never started"

    def release(self) -> None:
        self._released.set()

    def __enter__(self) -> BlockedPreparation:
        return self

    def __exit__(self, *_: Any) -> None:
        self.release()  # never leave the loading thread waiting
