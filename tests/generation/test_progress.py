"""The answer model's preparation progress: stages, an overall percent that only moves
forward, an estimate of the time left, and nothing reported outside a preparation."""

from __future__ import annotations

import logging
import sys
import types
from contextvars import copy_context
from pathlib import Path

import pytest

from app.generation import llamacpp_backend, progress
from app.generation.llamacpp_backend import LlamaCppGenerator
from app.generation.progress import EXPECTED_SECONDS, Preparation
from app.kit.settings import GeneratorSettings


def test_a_fresh_preparation_is_idle_and_a_finished_one_ready() -> None:
    preparation = Preparation()
    snapshot = preparation.snapshot()
    assert (snapshot.state, snapshot.percent, snapshot.preparing) == ("idle", 0, False)
    assert snapshot.started_at is None
    preparation.start()
    preparation.finish()
    snapshot = preparation.snapshot()
    assert (snapshot.state, snapshot.percent, snapshot.eta_seconds) == ("ready", 100, None)


def test_the_stages_weigh_by_their_expected_time() -> None:
    preparation = Preparation()
    preparation.start()
    preparation.enter("assembling")
    preparation.advance(0.5)
    snapshot = preparation.snapshot()
    total = sum(EXPECTED_SECONDS.values())
    assert snapshot.state == "assembling"
    assert snapshot.preparing
    assert snapshot.stage_percent == 50
    assert snapshot.percent == int(EXPECTED_SECONDS["assembling"] * 0.5 / total * 100)
    preparation.enter("converting")
    preparation.advance(0.6)
    snapshot = preparation.snapshot()
    expected = (EXPECTED_SECONDS["assembling"] + EXPECTED_SECONDS["converting"] * 0.6) / total
    assert (snapshot.state, snapshot.stage_percent) == ("converting", 60)
    assert snapshot.percent == int(expected * 100)
    assert snapshot.eta_seconds is not None
    assert snapshot.eta_seconds > 0


def test_a_stage_found_done_leaves_the_plan_and_the_percent_only_grows() -> None:
    # The conversion cache hit: assembling ran, converting never began, loading follows.
    preparation = Preparation()
    preparation.start()
    seen = []
    preparation.enter("assembling")
    for fraction in (0.3, 1.0):
        preparation.advance(fraction)
        seen.append(preparation.snapshot().percent)
    preparation.enter("loading")
    for fraction in (0.0, 0.5, 0.9):
        preparation.advance(fraction)
        seen.append(preparation.snapshot().percent)
    assert seen == sorted(seen)
    planned = EXPECTED_SECONDS["assembling"] + EXPECTED_SECONDS["loading"]
    assert seen[-1] == int(
        (EXPECTED_SECONDS["assembling"] + 0.9 * EXPECTED_SECONDS["loading"]) / planned * 100
    )
    # A stage never goes back: an earlier loop's lower count is ignored.
    preparation.advance(0.2)
    assert preparation.snapshot().stage_percent == 90


def test_a_failed_preparation_says_why() -> None:
    preparation = Preparation()
    preparation.start()
    preparation.enter("loading")
    preparation.fail("GeneratorUnavailable")
    snapshot = preparation.snapshot()
    assert (snapshot.state, snapshot.error, snapshot.preparing) == (
        "failed",
        "GeneratorUnavailable",
        False,
    )
    preparation.start()  # tried again: the error is forgotten
    assert preparation.snapshot().error is None


def test_work_reports_to_the_preparation_of_its_context_only() -> None:
    preparation = Preparation()
    preparation.start()
    progress.stage("converting")  # no preparation here: nothing happens
    assert preparation.snapshot().state == "idle"

    def work() -> None:
        progress.stage("converting")
        with progress.span(0.5, 1.0):
            assert list(progress.counted(iter(range(4)), 4)) == [0, 1, 2, 3]

    with progress.reporting(preparation):
        copy_context().run(work)  # as asyncio.to_thread carries it into the thread
    snapshot = preparation.snapshot()
    assert (snapshot.state, snapshot.stage_percent) == ("converting", 100)


def test_progress_lines_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    preparation = Preparation()
    preparation.start()
    with caplog.at_level(logging.INFO, logger="cairn.generation"):
        preparation.enter("converting")
        preparation.advance(0.6)
        preparation.finish()
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("preparing the answer model: converting 0%") for line in lines)
    assert any("ready after" in line for line in lines)


def test_transformers_loops_count_into_the_preparation() -> None:
    progress.track_transformers_loops()
    progress.track_transformers_loops()  # once per process, whatever the calls
    from transformers import core_model_loading

    tqdm = core_model_loading.tqdm  # type: ignore[attr-defined]
    assert getattr(tqdm, "cairn_counting", False)
    # Outside a preparation: the library's own bar, untouched.
    assert list(tqdm(range(3), disable=True)) == [0, 1, 2]
    preparation = Preparation()
    preparation.start()
    preparation.enter("loading")

    def load() -> list[int]:
        with progress.span(0.0, 0.5):
            return list(tqdm(range(10), disable=True))

    with progress.reporting(preparation):
        assert copy_context().run(load) == list(range(10))
    assert preparation.snapshot().stage_percent == 50


def test_llamacpp_reports_its_stages_and_plans_no_conversion(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # llama-cpp-python is optional and not installed here: a stand-in for its `Llama` records
    # what the preparation showed while the model was opened.
    seen: list[tuple[str, int]] = []
    preparation = Preparation(progress.plan_for("llamacpp"))

    class Llama:
        def __init__(self, **kwargs: object) -> None:
            snapshot = preparation.snapshot()
            seen.append((snapshot.state, snapshot.percent))

    monkeypatch.setitem(sys.modules, "llama_cpp", types.SimpleNamespace(Llama=Llama))
    # The trial run is a child process, which the stand-in cannot reach (it has its own test).
    monkeypatch.setattr(llamacpp_backend, "trial_run", lambda gguf, threads: None)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    settings = GeneratorSettings(backend="llamacpp", model_path=str(gguf))
    preparation.start()
    with progress.reporting(preparation):
        copy_context().run(LlamaCppGenerator, settings, tmp_path)
    # Assembling is not needed for a configured file; loading is the whole plan then.
    assert seen == [("loading", 0)]
    preparation.finish()
    assert preparation.snapshot().percent == 100
    assert progress.plan_for("llamacpp") == ("assembling", "loading")
    assert "converting" in progress.plan_for("transformers")
