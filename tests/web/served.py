"""A real `cairn serve` process on a temporary data dir, answering through an OpenAI-compatible
stand-in (a few lines of Starlette on a thread), so the browser tests need no model."""

from __future__ import annotations

import asyncio
import json
import os
import re
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


# A question about paternity leave gets a fabricated number (the documents say 15 days), a
# piece at a time with pauses, so that a page that showed a draft would show it.
FABRICATED = {
    "en": ["Male employees ", "get 25 days ", "of paternity ", "leave [1]."],
    "zh": ["男性员工", "的陪产假", "为25天", "[1]。"],
}
_QUESTION = re.compile(r"<question>\n(.*?)\n</question>", re.DOTALL)


_PASSAGE = re.compile(r'<passage number="(\d+)"[^>]*>\n(.*?)\n</passage>', re.DOTALL)


def _last(body: dict[str, object]) -> str:
    messages = body.get("messages")
    return str(messages[-1].get("content", "")) if isinstance(messages, list) and messages else ""


def _asked(body: dict[str, object]) -> str:
    """The question of Cairn's prompt (its last message), not the passages around it."""
    found = _QUESTION.search(_last(body))
    return str(found.group(1)) if found else ""


def _ref(body: dict[str, object], needle: str) -> str:
    """The number of the prompt's passage holding `needle` (what a good model would cite)."""
    for number, text in _PASSAGE.findall(_last(body)):
        if needle in text:
            return str(number)
    return "1"


def _pieces(body: dict[str, object]) -> list[str]:
    asked = _asked(body)
    if "陪产假" in asked:
        return [p.replace("[1]", f"[{_ref(body, '陪产假')}]") for p in FABRICATED["zh"]]
    if "paternity" in asked.lower():
        return [p.replace("[1]", f"[{_ref(body, 'aternity')}]") for p in FABRICATED["en"]]
    answer = ANSWER.replace("[1]", f"[{_ref(body, 'early spring')}]")
    return [word + " " for word in answer.split(" ")]


def _model_app() -> Starlette:
    async def completions(request: Request) -> Response:
        body = await request.json()
        asked = _asked(body)
        pieces = _pieces(body)
        fabricated = "陪产假" in asked or "paternity" in asked.lower()
        if not body.get("stream"):
            return JSONResponse(
                {
                    "choices": [
                        {
                            "message": {"role": "assistant", "content": "".join(pieces)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1},
                }
            )

        # A question that says "slowly" streams a word a second (a Stop button test); a
        # fabricated answer a piece every 0.4 s.
        pause = 1.0 if "slowly" in asked.lower() else 0.4 if fabricated else 0.0

        async def events() -> AsyncIterator[str]:
            for piece in pieces:
                await asyncio.sleep(pause)
                chunk = {"choices": [{"delta": {"content": piece}, "finish_reason": None}]}
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
