"""A real `cairn serve` process on a temporary data dir, answering through an OpenAI-compatible
stand-in (a few lines of Starlette on a thread), so the browser tests need no model."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.bench.processes import free_port, start_api, stop, wait_healthy

ADMIN_PASSWORD = "web-admin-password-for-tests"
# What the stand-in model answers, citing the first passage of its prompt.
ANSWER = "The pelican migration starts in early spring along the river delta [1]."


def _model_app() -> Starlette:
    async def completions(request: Request) -> Response:
        body = await request.json()
        if not body.get("stream"):
            return JSONResponse(
                {
                    "choices": [
                        {
                            "message": {"role": "assistant", "content": ANSWER},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1},
                }
            )

        # A question that says "slowly" streams a word a second (a Stop button test).
        slow = any("slowly" in str(m.get("content", "")).lower() for m in body.get("messages", []))

        async def events() -> AsyncIterator[str]:
            for word in ANSWER.split(" "):
                if slow:
                    await asyncio.sleep(1.0)
                chunk = {"choices": [{"delta": {"content": word + " "}, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


@contextmanager
def model_stand_in() -> Iterator[str]:
    """An OpenAI-compatible endpoint on a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(_model_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="model-stand-in", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the model stand-in did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class Served:
    url: str
    data_dir: Path
    log: Path


@contextmanager
def cairn_serve(data_dir: Path, model_url: str) -> Iterator[Served]:
    """`cairn serve` in its own process; stopped (SIGTERM, then SIGKILL) afterwards."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "CAIRN_DATA_DIR": str(data_dir),
        "CAIRN_ADMIN_PASSWORD": ADMIN_PASSWORD,
        # The cheapest argon2id RFC 9106 allows: the walk-through signs in a dozen times.
        "CAIRN_ARGON2_TIME_COST": "1",
        "CAIRN_ARGON2_MEMORY_KIB": "1024",
        "CAIRN_GENERATOR__BACKEND": "openai",
        "CAIRN_GENERATOR__OPENAI__BASE_URL": model_url,
        "CAIRN_GENERATOR__OPENAI__MODEL": "stand-in",
    }
    for name in ("CAIRN_DATABASE_URL", "CAIRN_REDIS_URL", "CAIRN_BROKER_URL"):
        env.pop(name, None)
    api = start_api(env, data_dir.parent / "cairn-serve.log")
    try:
        wait_healthy(api)
        yield Served(api.url, data_dir, api.log)
    finally:
        stop(api.process, timeout=30)
