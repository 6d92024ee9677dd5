"""What every `cairn` command shares: the settings it runs with once its data is found, and
errors as one line on stderr (the traceback only with `cairn --debug`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from typer.core import TyperGroup

from app.kit.errors import CairnError
from app.kit.files import secure_data_dir
from app.kit.locate import (
    ConfigFileError,
    DataNotFound,
    cli_data_dir,
    command_creates_data,
    locate_data_dir,
    require_data,
)
from app.kit.migrate import ensure_embedded_schema
from app.kit.public_ids import configure_public_ids
from app.kit.settings import DEFAULT_CONFIG_FILE, InsecureConfiguration, Settings

# Exit codes: 1 = the command failed; 2 = it cannot run as configured or invoked (no data,
# unsafe or invalid settings), as click uses 2 for usage errors.
FAILED = 1
MISCONFIGURED = 2
DEBUG_HINT = "run `cairn --debug ...` for the traceback"


def prepared(settings: Settings) -> Settings:
    """`settings` once its data is known to be there: a command other than serve/migrate/worker on a
    missing or never-migrated data dir stops here (DataNotFound), before anything is created;
    then the data dir is made private, embedded SQLite brought to head, public ids keyed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not command_creates_data():
        location = locate_data_dir(
            flag=cli_data_dir(),
            cwd=Path.cwd(),
            environ=os.environ,
            default_config=DEFAULT_CONFIG_FILE,
        )
        require_data(settings.data_dir, settings.resolved_database_url, location)
    secure_data_dir(settings.data_dir, settings.resolved_database_url)
    ensure_embedded_schema(settings.resolved_database_url)
    configure_public_ids(settings.secret("audit_secret"))
    return settings


def _flat(text: str) -> str:
    return " ".join(str(text).split())


def _validation(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or exc.title
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"invalid setting {where}: {first['msg']}{more}"


def _database(exc: SQLAlchemyError) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    text = _flat(str(cause)).split(" [SQL:")[0]
    hint = ""
    if "no such table" in text or ("relation" in text and "does not exist" in text):
        hint = "; the database was never migrated: run `cairn migrate`"
    return f"database error: {text}{hint}"


def one_line(exc: BaseException) -> tuple[str, int]:
    """The one line (without "error: ") and exit code an uncaught exception becomes."""
    if isinstance(exc, CairnError):
        return _flat(exc.message), FAILED
    if isinstance(exc, DataNotFound | InsecureConfiguration | ConfigFileError):
        return _flat(str(exc)), MISCONFIGURED
    if isinstance(exc, ValidationError):
        return _flat(_validation(exc)), MISCONFIGURED
    if isinstance(exc, SQLAlchemyError):
        return _database(exc), FAILED
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return _flat(f"{exc.strerror or exc}{where}"), FAILED
    detail = _flat(str(exc))
    name = type(exc).__name__
    return (f"{name}: {detail}" if detail else name) + f" ({DEBUG_HINT})", FAILED


class OneLineErrors(TyperGroup):
    """The root command group: whatever a command raises ends as one line on stderr and a
    non-zero exit, unless `--debug` asked for the traceback."""

    # `ctx` is typer's own (vendored) click Context, which typer does not export by name.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        # Exits and usage errors (TyperException: typer's click) keep their own handling.
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            message, code = one_line(exc)
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(code) from exc
