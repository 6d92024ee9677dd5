"""A real HTTP server (uvicorn on a free port, in a thread) for clients that must talk over a
socket: the `openai` package, and clients that hang up mid-answer. It runs the uvicorn Config
`cairn serve` runs (app/kit/serving.py), with the app's own settings."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from app.kit.serving import server_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def live_server(app: FastAPI, *, start_timeout: float = 60.0) -> Iterator[str]:
    """Serve `app` (its lifespan included) and yield its base URL."""
    port = _free_port()
    config = server_config(
        app, app.state.settings, host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the live server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
