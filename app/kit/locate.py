"""Where Cairn's data is: one resolution order for the data dir, used by the settings and the
CLI alike, and the check that a command other than `serve`/`migrate`/`worker` finds data there.

The order, first match wins:

1. the CLI's global ``--data-dir``;
2. ``CAIRN_DATA_DIR``;
3. ``data_dir`` of the TOML file named in ``CAIRN_CONFIG`` (relative to the working directory);
4. a ``cairn.toml`` found in the working directory or a folder above it: its ``data_dir``
   (relative to the folder holding it), else that folder's ``data/``;
5. ``./data`` (``data_dir`` of configs/default.toml).

Only ``cairn serve`` and ``cairn migrate`` create a data dir that is missing; any other command
that finds no initialised data there stops with one line naming the folder and what to run, so
that running in the wrong folder never creates a second ``./data`` with fresh secrets.

This module imports nothing of Cairn's: the settings build on it.
"""

from __future__ import annotations

import sqlite3
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

PROJECT_FILE = "cairn.toml"
DATA_DIR_ENV = "CAIRN_DATA_DIR"
CONFIG_ENV = "CAIRN_CONFIG"
# The fallback of configs/default.toml, used when that file names none.
DEFAULT_DATA_DIR = "./data"


class ConfigFileError(ValueError):
    """A settings file that cannot be read (bad TOML, or data_dir not a string)."""


class DataNotFound(RuntimeError):
    """A command found no initialised Cairn data where the resolution order led it."""


@dataclass(frozen=True)
class DataLocation:
    """The data dir the resolution order chose, and what it consulted on the way."""

    data_dir: Path
    # The step that chose it: "--data-dir", "CAIRN_DATA_DIR", "CAIRN_CONFIG (path)",
    # "cairn.toml (path)" or "./data".
    source: str
    # Every step consulted, in order, each with what it found ("CAIRN_DATA_DIR: not set").
    looked_at: tuple[str, ...]
    # The cairn.toml found upward from the working directory (loaded as settings too).
    project_file: Path | None


@dataclass
class _CliChoice:
    data_dir: Path | None = None
    creates: bool = False


# What the running `cairn` command said: its --data-dir, and whether it is one of the commands
# that may create a data dir (serve, migrate). Set by the CLI's callback, reset when it ends.
_cli = _CliChoice()


def choose_for_cli(data_dir: Path | None, *, creates: bool) -> None:
    """Record the CLI's --data-dir (None: not given) and whether the command creates data."""
    _cli.data_dir = data_dir
    _cli.creates = creates


def cli_data_dir() -> Path | None:
    """The running command's --data-dir, if any."""
    return _cli.data_dir


def command_creates_data() -> bool:
    """Whether the running command may create a missing data dir (serve, migrate)."""
    return _cli.creates


def find_project_file(start: Path) -> Path | None:
    """The nearest cairn.toml in `start` or a folder above it."""
    start = start.absolute()
    for folder in (start, *start.parents):
        candidate = folder / PROJECT_FILE
        if candidate.is_file():
            return candidate
    return None


def read_toml(path: Path) -> dict[str, Any]:
    """A settings file's table; a file that is not TOML is a ConfigFileError naming it."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigFileError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _data_dir_of(path: Path) -> str | None:
    value = read_toml(path).get("data_dir")
    if value is not None and not isinstance(value, str):
        raise ConfigFileError(f"{path}: data_dir must be a string (a folder path)")
    return value


def _env(environ: Mapping[str, str], name: str) -> str | None:
    # pydantic-settings reads CAIRN_* case-insensitively; so does this.
    if name in environ:
        return environ[name]
    return next((v for k, v in environ.items() if k.upper() == name), None)


def locate_data_dir(
    *,
    flag: Path | None,
    cwd: Path,
    environ: Mapping[str, str],
    default_config: Path | None = None,
) -> DataLocation:
    """The data dir by the resolution order (module docstring); always an absolute path."""
    cwd = cwd.absolute()
    project = find_project_file(cwd)
    looked: list[str] = []

    def found(path: Path | str, source: str, base: Path = cwd) -> DataLocation:
        chosen = Path(path).expanduser()
        absolute = chosen if chosen.is_absolute() else base / chosen
        looked.append(source)
        return DataLocation(absolute, source, tuple(looked), project)

    if flag is not None:
        return found(flag, "--data-dir")
    looked.append("--data-dir: not given")
    from_env = _env(environ, DATA_DIR_ENV)
    if from_env:
        return found(from_env, DATA_DIR_ENV)
    looked.append(f"{DATA_DIR_ENV}: not set")
    config = _env(environ, CONFIG_ENV)
    if config:
        config_path = Path(config).expanduser()
        value = _data_dir_of(config_path) if config_path.is_file() else None
        if value:
            return found(value, f"{CONFIG_ENV} ({config_path})")
        looked.append(f"{CONFIG_ENV} ({config_path}): no data_dir")
    if project is not None:
        value = _data_dir_of(project)
        return found(value or "data", f"{PROJECT_FILE} ({project})", base=project.parent)
    looked.append(f"{PROJECT_FILE}: none in {cwd} or above")
    default = DEFAULT_DATA_DIR
    if default_config is not None and default_config.is_file():
        default = _data_dir_of(default_config) or DEFAULT_DATA_DIR
    return found(default, "./data" if default == DEFAULT_DATA_DIR else str(default_config))


def sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite URL (None: not SQLite, or in memory)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def _sqlite_initialised(path: Path) -> bool:
    # Opened read-only through a URI, so looking never creates the file.
    try:
        connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        row = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
        ).fetchone()
        return row is not None
    except sqlite3.Error:
        return False
    finally:
        connection.close()


def data_problem(data_dir: Path, database_url: str) -> str | None:
    """What is missing for a command to use this data (None: nothing). On SQLite the database
    must exist and have been migrated once; elsewhere the data dir must exist."""
    if not data_dir.is_dir():
        return "the folder does not exist"
    database = sqlite_path(database_url)
    if database is None:
        return None
    if not database.is_file():
        return f"no database {database.name} in it"
    if not _sqlite_initialised(database):
        return f"{database.name} was never migrated"
    return None


def require_data(data_dir: Path, database_url: str, location: DataLocation | None) -> None:
    """Raise DataNotFound (one line: where, why, what to run) unless the data is usable."""
    problem = data_problem(data_dir, database_url)
    if problem is None:
        return
    looked = f"; looked at: {', '.join(location.looked_at)}" if location is not None else ""
    raise DataNotFound(
        f"no Cairn data at {data_dir.absolute()} ({problem}{looked}); run `cairn serve` or "
        f"`cairn migrate` first to create it there, or point --data-dir or {DATA_DIR_ENV} "
        "at your data"
    )
