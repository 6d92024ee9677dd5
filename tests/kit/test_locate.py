"""One resolution order for the data dir: --data-dir > CAIRN_DATA_DIR > CAIRN_CONFIG's data_dir
> a cairn.toml found upward > ./data; and what counts as data a command may use."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.kit.locate import (
    ConfigFileError,
    DataNotFound,
    data_problem,
    find_project_file,
    locate_data_dir,
    require_data,
)
from app.kit.migrate import upgrade
from app.kit.settings import DEFAULT_CONFIG_FILE, Settings


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """project/cairn.toml (data_dir = "store") and a working folder two levels below it."""
    project = tmp_path / "project"
    (project / "a" / "b").mkdir(parents=True)
    (project / "cairn.toml").write_text('data_dir = "store"\nport = 9123\n')
    return project


def located(cwd: Path, flag: Path | None = None, **environ: str) -> Path:
    return locate_data_dir(
        flag=flag, cwd=cwd, environ=environ, default_config=DEFAULT_CONFIG_FILE
    ).data_dir


def test_the_order_flag_env_config_project_then_dot_data(tree: Path, tmp_path: Path) -> None:
    cwd = tree / "a" / "b"
    other = tmp_path / "extra.toml"
    other.write_text(f'data_dir = "{tmp_path / "from-config"}"\n')
    env = {"CAIRN_DATA_DIR": str(tmp_path / "from-env"), "CAIRN_CONFIG": str(other)}
    assert located(cwd, tmp_path / "flag", **env) == tmp_path / "flag"
    assert located(cwd, **env) == tmp_path / "from-env"
    assert located(cwd, CAIRN_CONFIG=str(other)) == tmp_path / "from-config"
    # The project file's data_dir is relative to the folder holding it, not to the cwd.
    assert located(cwd) == tree / "store"
    # Nothing above: ./data of the working folder.
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    assert located(lonely) == lonely / "data"


def test_a_relative_flag_or_env_is_taken_from_the_working_folder(tmp_path: Path) -> None:
    assert located(tmp_path, Path("here")) == tmp_path / "here"
    assert located(tmp_path, CAIRN_DATA_DIR="there") == tmp_path / "there"


def test_a_project_file_without_data_dir_means_data_beside_it(tmp_path: Path) -> None:
    (tmp_path / "cairn.toml").write_text("port = 9000\n")
    (tmp_path / "deep").mkdir()
    assert find_project_file(tmp_path / "deep") == tmp_path / "cairn.toml"
    assert located(tmp_path / "deep") == tmp_path / "data"


def test_what_was_looked_at_is_told(tmp_path: Path) -> None:
    location = locate_data_dir(flag=None, cwd=tmp_path, environ={})
    assert location.source == "./data"
    assert location.looked_at == (
        "--data-dir: not given",
        "CAIRN_DATA_DIR: not set",
        f"cairn.toml: none in {tmp_path} or above",
        "./data",
    )


def test_a_broken_project_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "cairn.toml").write_text("data_dir = [unclosed\n")
    with pytest.raises(ConfigFileError, match="cairn.toml is not valid TOML"):
        located(tmp_path)
    (tmp_path / "cairn.toml").write_text("data_dir = 3\n")
    with pytest.raises(ConfigFileError, match="data_dir must be a string"):
        located(tmp_path)


def test_settings_follow_the_same_order_and_load_the_project_file(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CAIRN_DATA_DIR", "CAIRN_CONFIG", "CAIRN_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tree / "a" / "b")
    settings = Settings()
    assert settings.data_dir == tree / "store"
    assert settings.port == 9123  # cairn.toml is a settings file too
    monkeypatch.setenv("CAIRN_DATA_DIR", str(tmp_path / "from-env"))
    assert Settings().data_dir == tmp_path / "from-env"
    # Explicit arguments (tests, the app factory's callers) still win over everything.
    assert Settings(data_dir=tmp_path / "given").data_dir == tmp_path / "given"


def test_data_must_exist_and_be_migrated(tmp_path: Path) -> None:
    data = tmp_path / "data"
    url = f"sqlite+aiosqlite:///{data / 'cairn.db'}"
    assert data_problem(data, url) == "the folder does not exist"
    data.mkdir()
    assert data_problem(data, url) == "no database cairn.db in it"
    sqlite3.connect(data / "cairn.db").close()
    assert data_problem(data, url) == "cairn.db was never migrated"
    upgrade(url)
    assert data_problem(data, url) is None
    # Elsewhere than SQLite only the folder is needed here (the database is migrated once
    # per deploy with `cairn migrate`).
    assert data_problem(data, "postgresql+asyncpg://cairn@db/cairn") is None


def test_looking_creates_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    location = locate_data_dir(flag=None, cwd=tmp_path, environ={})
    with pytest.raises(DataNotFound) as raised:
        require_data(data, f"sqlite+aiosqlite:///{data / 'cairn.db'}", location)
    message = str(raised.value)
    assert "\n" not in message
    assert f"no Cairn data at {data}" in message
    assert "cairn migrate" in message
    assert "CAIRN_DATA_DIR: not set" in message
    assert list(data.iterdir()) == []
