"""The API process's generator: loaded on the first question (or at start when asked), off
the event loop, once; a failed load is reported (503) and tried again on the next question."""

from __future__ import annotations

import asyncio
import logging

from app.generation.base import Generator
from app.generation.loader import load_generator
from app.kit.settings import Settings

logger = logging.getLogger("cairn.generation")


class GeneratorProvider:
    def __init__(self, settings: Settings, generator: Generator | None = None) -> None:
        """`generator`: hand out this one instead of loading the configured model."""
        self._settings = settings
        self._generator = generator
        self._lock = asyncio.Lock()
        self._failure: str | None = None

    @property
    def loaded(self) -> bool:
        return self._generator is not None

    @property
    def failure(self) -> str | None:
        """The type of the error that stopped the last load, while no load has succeeded."""
        return self._failure

    async def get(self) -> Generator:
        """The generator; the first call loads the model (seconds to a minute)."""
        if self._generator is not None:
            return self._generator
        async with self._lock:
            if self._generator is None:
                # Loading reads and may convert hundreds of MB: never on the event loop.
                try:
                    self._generator = await asyncio.to_thread(load_generator, self._settings)
                except Exception as exc:
                    self._failure = type(exc).__name__
                    raise
                self._failure = None
                logger.info("generator ready: %s", self._generator.name)
        return self._generator

    async def preload(self) -> None:
        """Load now, logging (not raising) a failure: the first question reports it."""
        try:
            await self.get()
        except Exception:
            logger.exception("the generator could not be loaded; chat answers will fail")
