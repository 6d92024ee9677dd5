"""Real `cairn serve` and `cairn worker` processes for `cairn bench serve` and the scale-out
integration test: an environment that points every process at one database, broker and data
folder, and start/stop helpers that own each process's whole group (a Celery worker's pool
children included)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Deployment:
    """What several processes share: the database, the broker and Redis, the data folder,
    the secrets. `database_url` None: the embedded SQLite database in `data_dir`."""

    data_dir: Path
    jwt_secret: str
    audit_secret: str
    admin_password: str
    database_url: str | None = None
    broker_url: str | None = None
    redis_url: str | None = None

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of one process of this deployment (`extra`: more CAIRN_* keys)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
        env.update(
            {
                "CAIRN_ENVIRONMENT": "test",
                "CAIRN_DATA_DIR": str(self.data_dir),
                "CAIRN_JWT_SECRET": self.jwt_secret,
                "CAIRN_AUDIT_SECRET": self.audit_secret,
                "CAIRN_ADMIN_PASSWORD": self.admin_password,
                "CAIRN_LOG_FORMAT": "text",
                "CAIRN_LOG_LEVEL": "WARNING",
                "HF_HUB_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.database_url:
            env["CAIRN_DATABASE_URL"] = self.database_url
        if self.broker_url:
            env["CAIRN_BROKER_URL"] = self.broker_url
            # Scaled out: the API processes only queue jobs; `cairn worker` runs them.
            env["CAIRN_EMBEDDED_WORKERS"] = "false"
        if self.redis_url:
            env["CAIRN_REDIS_URL"] = self.redis_url
        env.update(extra)
        return env


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM when the bench process dies, however
    it dies (a bench killed from outside had left its server ingesting for minutes, beside
    the next run it was meant to leave alone)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`cairn ARGS` in its own process group, its output appended to `log`; it ends when the
    bench process does."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
        )


@dataclass
class ApiProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.url} exited: {self.log.read_text()[-4000:]}")


def start_api(
    env: dict[str, str], log: Path, *, preload: bool = False, migrate: bool = False
) -> ApiProcess:
    """`cairn serve` on a free port; returns at once (see `wait_healthy`)."""
    port = free_port()
    args = ["serve", "--port", str(port), "--preload" if preload else "--no-preload"]
    if migrate:
        args.append("--migrate")
    return ApiProcess(f"http://127.0.0.1:{port}", spawn(args, env, log), log)


def wait_healthy(api: ApiProcess, timeout: float = 180.0, path: str = "/readyz") -> None:
    """Until `path` answers 200 (/readyz: the database migrated, the broker reachable)."""
    deadline = time.monotonic() + timeout
    while True:
        api.alive()
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{api.url}{path}", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{api.url} not ready within {timeout}s: {api.log.read_text()}")
        time.sleep(0.2)


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`cairn worker`: Celery when the environment names a broker, else the in-process pool."""
    return spawn(["worker"], env, log)


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and everything it started, as a crashed machine would."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def stop(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """TERM, then KILL after `timeout`; children included."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill(process)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
