"""What any uncaught error of a `cairn` command becomes: one line and an exit code."""

from __future__ import annotations

import sqlite3

import pytest
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import OperationalError

from app.kit.console import FAILED, MISCONFIGURED, one_line
from app.kit.errors import ResourceNotFound
from app.kit.locate import DataNotFound
from app.kit.settings import InsecureConfiguration


class _Port(BaseModel):
    port: int


def _validation_error() -> ValidationError:
    with pytest.raises(ValidationError) as raised:
        _Port.model_validate({"port": "eighty"})
    return raised.value


@pytest.mark.parametrize(
    ("exc", "line", "code"),
    [
        (ResourceNotFound("Tenant 'x' not found"), "Tenant 'x' not found", FAILED),
        (DataNotFound("no Cairn data at /d"), "no Cairn data at /d", MISCONFIGURED),
        (InsecureConfiguration("set\nthe secret"), "set the secret", MISCONFIGURED),
        (
            FileNotFoundError(2, "No such file or directory", "/x.pdf"),
            "No such file or directory: /x.pdf",
            FAILED,
        ),
        (
            OperationalError("SELECT 1", {}, sqlite3.OperationalError("no such table: tenants")),
            "database error: no such table: tenants; the database was never migrated: run "
            "`cairn migrate`",
            FAILED,
        ),
        (KeyError("boom"), "KeyError: 'boom' (run `cairn --debug ...` for the traceback)", FAILED),
    ],
)
def test_errors_become_one_line(exc: BaseException, line: str, code: int) -> None:
    assert one_line(exc) == (line, code)


def test_a_settings_validation_error_names_the_setting() -> None:
    message, code = one_line(_validation_error())
    assert message.startswith("invalid setting port: Input should be a valid integer")
    assert code == MISCONFIGURED
