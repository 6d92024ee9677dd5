"""PostgreSQL's own dump and restore tools, found and version-checked before use.

Backups of PostgreSQL are `pg_dump` archives (custom format) taken inside the backup's
exported snapshot (`--snapshot`), restored with `pg_restore`: PostgreSQL's maintained tools,
which know every object type and every server version's catalog, where a hand-written COPY
of each table would have to learn about sequences, constraints and any extension by itself.

Their version rules are checked first, each refusal one line: pg_dump must be at least the
server's major version (an older one cannot read a newer catalog), and pg_restore at least
the major version of the pg_dump that wrote the archive (older ones cannot read newer
archives). Where several client versions are installed, `backup.pg_bin_dir` chooses one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from app.kit.errors import CairnError

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


class PostgresToolError(CairnError):
    status_code = 500
    code = "postgres_tool"
    message = "A PostgreSQL client tool failed"


@dataclass(frozen=True)
class ToolVersion:
    path: str
    major: int
    text: str


def tool(name: str, bin_dir: Path | None) -> str:
    """The path of a client tool (in `bin_dir` when given, else on PATH)."""
    found = shutil.which(name, path=str(bin_dir) if bin_dir is not None else None)
    if found is None:
        where = f"in {bin_dir}" if bin_dir is not None else "on PATH"
        raise PostgresToolError(
            f"{name} not found {where}: install the PostgreSQL client matching the server "
            "(e.g. postgresql-client-15) or set backup.pg_bin_dir"
        )
    return found


def version_of(path: str) -> ToolVersion:
    """The tool's major version, from `--version`."""
    try:
        out = subprocess.run(
            [path, "--version"], check=True, capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise PostgresToolError(f"{path} --version failed: {exc}") from exc
    match = _VERSION.search(out)
    if match is None:
        raise PostgresToolError(f"cannot tell the version of {path} from {out!r}")
    return ToolVersion(path, int(match.group(1)), out)


def check_dump_version(client: ToolVersion, server_major: int) -> None:
    """pg_dump reads the server's catalog: it must be at least the server's major version."""
    if client.major < server_major:
        raise PostgresToolError(
            f"pg_dump {client.major} cannot back up a PostgreSQL {server_major} server: "
            f"install postgresql-client-{server_major} (or newer) or point backup.pg_bin_dir "
            "at its bin folder"
        )


def check_restore_version(client: ToolVersion, dumped_by: int) -> None:
    """pg_restore reads the archive: it must be at least the major version that wrote it."""
    if client.major < dumped_by:
        raise PostgresToolError(
            f"pg_restore {client.major} cannot read an archive written by pg_dump {dumped_by}: "
            f"install postgresql-client-{dumped_by} (or newer) or point backup.pg_bin_dir "
            "at its bin folder"
        )


def connection_env(database_url: str) -> dict[str, str]:
    """libpq's environment for the URL (the password never on a command line)."""
    url = make_url(database_url)
    env = dict(os.environ)
    values = {
        "PGHOST": url.host,
        "PGPORT": str(url.port) if url.port else None,
        "PGUSER": url.username,
        "PGPASSWORD": url.password,
        "PGDATABASE": url.database,
    }
    sslmode = url.query.get("sslmode") or url.query.get("ssl")
    if isinstance(sslmode, str):
        values["PGSSLMODE"] = "require" if sslmode in ("true", "1") else sslmode
    for name, value in values.items():
        if value:
            env[name] = str(value)
    return env


def run(args: list[str], *, env: dict[str, str], what: str) -> None:
    """Run a tool; its failure becomes one line (the tool's last line of stderr)."""
    try:
        result = subprocess.run(args, env=env, capture_output=True, text=True)
    except OSError as exc:
        raise PostgresToolError(f"{what}: {exc}") from exc
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit status {result.returncode}"
        raise PostgresToolError(f"{what} failed: {detail}")
