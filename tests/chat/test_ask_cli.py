"""`cairn ask`: an answer on the console with its citations, under a user's role if asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from typer.testing import CliRunner

from app.chat.language import NOTHING_FOUND
from app.kit.settings import Settings
from app.models import AuditEntry
from tests.chat.conftest import World
from tests.conftest import in_thread
from tests.helpers import key_of

QUESTION = "How many days of paid vacation does every employee receive per year?"


def with_model(settings: Settings, model_path: Path) -> Settings:
    generator = settings.generator.model_copy(
        update={"model_path": str(model_path), "max_new_tokens": 8}
    )
    return settings.model_copy(update={"generator": generator})


def invoke(monkeypatch: pytest.MonkeyPatch, settings: Settings, *args: str) -> Any:
    from app import cli
    from app.chat import cli as chat_cli

    monkeypatch.setattr(chat_cli, "get_settings", lambda: settings)
    return in_thread(CliRunner().invoke, cli.app, ["ask", *args])


async def test_ask_prints_the_answer_and_its_citations(
    app: FastAPI, world: World, monkeypatch: pytest.MonkeyPatch, tiny_deepseek_v3: Path
) -> None:
    settings = with_model(app.state.settings, tiny_deepseek_v3)
    result = invoke(monkeypatch, settings, QUESTION, "--tenant", "hr", "--as-user", "vi")
    assert result.exit_code == 0, result.output
    assert result.output.strip()
    async with app.state.database.read_sessionmaker() as session:
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "chat.ask"))
    assert entry is not None
    details = json.loads(entry.details)
    assert details["via"] == "cli"
    assert details["grounded"] is True
    assert key_of(world.docs["vacation"]) in details["passage_document_ids"]


async def test_nothing_relevant_needs_no_model(
    app: FastAPI, world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The configured model does not exist: it is never loaded for an unanswerable question.
    settings = with_model(app.state.settings, tmp_path / "missing")
    result = invoke(
        monkeypatch, settings, "Who won the football world cup in 1998?", "--tenant", "hr"
    )
    assert result.exit_code == 0, result.output
    assert NOTHING_FOUND["en"] in result.output
    assert "(no citations)" in result.output
    failed = invoke(monkeypatch, settings, QUESTION, "--tenant", "hr")
    assert failed.exit_code == 1
    assert "missing" in failed.output


async def test_roles_and_bad_input(
    app: FastAPI, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = app.state.settings
    guest = invoke(monkeypatch, settings, QUESTION, "--tenant", "hr", "--as-user", "gu")
    assert guest.exit_code == 1
    assert "may not chat" in guest.output
    assert invoke(monkeypatch, settings, QUESTION, "--tenant", "nope").exit_code == 1
    assert invoke(monkeypatch, settings, "  ", "--tenant", "hr").exit_code == 2
