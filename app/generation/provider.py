"""The process's generator: prepared once (assembled, converted, loaded: minutes on a first
start, see app/generation/progress.py) off the event loop, at start when asked or on the first
question; a failed preparation is reported (503) and tried again on the next question.

The API does not hold a question while the model is prepared: it waits `wait_seconds` (enough
for a loaded model or a remote endpoint), then answers 503 `generator_preparing` with the
progress and a Retry-After. The CLI (`cairn ask`, the evaluation) waits until it is done.
"""

from __future__ import annotations

import asyncio
import logging

from app.generation.base import Generator
from app.generation.loader import load_generator
from app.generation.progress import Preparation, Snapshot, plan_for, reporting
from app.kit.errors import ServiceUnavailable
from app.kit.settings import Settings

logger = logging.getLogger("cairn.generation")

# How long an API question waits for a preparation in progress before the 503.
API_WAIT_SECONDS = 2.0
# Retry-After of that 503: the estimate of the time left, within these bounds (a client that
# comes back every minute sees the progress; one told "5 minutes" by a bad estimate waits idle).
RETRY_AFTER_BOUNDS = (5, 60)


class GeneratorPreparing(ServiceUnavailable):
    code = "generator_preparing"
    message = "The answer model is being prepared"

    @classmethod
    def of(cls, snapshot: Snapshot) -> GeneratorPreparing:
        low, high = RETRY_AFTER_BOUNDS
        retry = min(high, max(low, snapshot.eta_seconds or low))
        left = f"; about {snapshot.eta_seconds} s left" if snapshot.eta_seconds else ""
        stage = snapshot.state if snapshot.preparing else "starting"
        return cls(
            f"The answer model is being prepared ({stage}, {snapshot.percent}% done{left}). "
            f"Try again in {retry} s; search works meanwhile.",
            headers={"Retry-After": str(retry)},
            details={"preparation": snapshot.as_dict()},
        )


class GeneratorProvider:
    def __init__(
        self,
        settings: Settings,
        generator: Generator | None = None,
        *,
        wait_seconds: float | None = None,
    ) -> None:
        """`generator`: hand out this one instead of loading the configured model.
        `wait_seconds`: how long `get()` waits for a preparation in progress before raising
        `GeneratorPreparing` (None: until it ends)."""
        self._settings = settings
        self._generator = generator
        self._wait_seconds = wait_seconds
        self._task: asyncio.Task[Generator] | None = None
        self._failure: str | None = None
        self._preparation = Preparation(plan_for(settings.generator.backend))
        if generator is not None:
            self._preparation.finish()

    @classmethod
    def for_api(cls, settings: Settings) -> GeneratorProvider:
        """The API's provider: a question during the preparation is a quick 503."""
        return cls(settings, wait_seconds=API_WAIT_SECONDS)

    @property
    def loaded(self) -> bool:
        return self._generator is not None

    @property
    def failure(self) -> str | None:
        """The type of the error that stopped the last load, while no load has succeeded."""
        return self._failure

    @property
    def preparation(self) -> Snapshot:
        """Where the preparation stands (idle before it starts, ready once loaded)."""
        return self._preparation.snapshot()

    @property
    def preparing(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> asyncio.Task[Generator]:
        """The preparation in progress, started now when none is (a failed one is retried).
        Only while no generator is loaded."""
        if self._task is None or (self._task.done() and self._generator is None):
            self._task = asyncio.get_running_loop().create_task(self._prepare())
        return self._task

    async def _prepare(self) -> Generator:
        self._preparation.start()
        logger.info("preparing the answer model")
        try:
            # Loading reads and may convert hundreds of MB: never on the event loop. The
            # thread inherits this context, and with it the preparation to report to.
            with reporting(self._preparation):
                generator = await asyncio.to_thread(load_generator, self._settings)
        except Exception as exc:
            self._failure = type(exc).__name__
            self._preparation.fail(type(exc).__name__)
            raise
        self._generator, self._failure = generator, None
        self._preparation.finish()
        logger.info("generator ready: %s", generator.name)
        return generator

    async def get(self) -> Generator:
        """The generator; the first call prepares the model (seconds to minutes)."""
        if self._generator is not None:
            return self._generator
        task = self.start()
        if self._wait_seconds is None:
            return await asyncio.shield(task)
        try:
            # Shielded: a question that stops waiting leaves the preparation running.
            return await asyncio.wait_for(asyncio.shield(task), self._wait_seconds)
        except TimeoutError:
            raise GeneratorPreparing.of(self.preparation) from None

    async def preload(self) -> None:
        """Prepare now, logging (not raising) a failure: the first question reports it."""
        if self._generator is not None:
            return
        try:
            await asyncio.shield(self.start())
        except Exception:
            logger.exception("the generator could not be loaded; chat answers will fail")
