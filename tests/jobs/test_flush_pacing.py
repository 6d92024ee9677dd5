"""The in-process indexer spaces its rounds out as rewriting the open shard gets slower, and
does its CPU work on the ingestion threads' lower priority."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.jobs.pool import flush_pause
from app.kit.settings import IndexSettings


def test_cheap_rounds_keep_the_configured_interval() -> None:
    settings = IndexSettings(flush_interval_seconds=1.0, flush_max_share=0.1)
    assert flush_pause(0.0, settings) == 1.0
    assert flush_pause(0.05, settings) == 1.0


def test_a_slow_rewrite_waits_until_rewriting_is_at_most_its_share() -> None:
    settings = IndexSettings(flush_interval_seconds=1.0, flush_max_share=0.1)
    took = 0.8
    pause = flush_pause(took, settings)
    assert pause == pytest.approx(7.2)
    assert took / (took + pause) == pytest.approx(0.1)


def test_a_share_of_one_never_waits_longer_than_the_interval() -> None:
    settings = IndexSettings(flush_interval_seconds=2.0, flush_max_share=1.0)
    assert flush_pause(30.0, settings) == 2.0


@pytest.mark.parametrize("share", [0, -0.1, 1.5])
def test_the_share_is_bounded(share: float) -> None:
    with pytest.raises(ValidationError, match="flush_max_share"):
        IndexSettings(flush_max_share=share)
