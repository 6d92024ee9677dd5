"""The openai backend against a small OpenAI-compatible server run here on 127.0.0.1 (uvicorn
in a thread): the test double for vLLM / SGLang / Ollama / DeepSeek's API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.generation.base import (
    ChatMessage,
    GenerationLimits,
    GenerationTimeout,
    GeneratorBusy,
    GeneratorError,
    GeneratorUnavailable,
)
from app.generation.openai_backend import OpenAIGenerator
from app.kit.settings import GeneratorSettings, OpenAIEndpointSettings
from tests.generation.helpers import drain

API_KEY = "sk-test-key"
WORDS = ["Paris", " is", " the", " capital", "."]
MESSAGES = [ChatMessage("system", "Answer briefly."), ChatMessage("user", "Capital of France?")]


@dataclass
class FakeServer:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    # Set when a streaming response's generator is closed before it finished (the client left).
    abandoned: threading.Event = field(default_factory=threading.Event)


def _app(server: FakeServer) -> Starlette:
    async def completions(request: Request) -> Response:
        body = await request.json()
        server.requests.append(body)
        server.headers.append(dict(request.headers))
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        model = body["model"]
        if model == "broken":
            return JSONResponse({"error": {"message": "internal host db7 down"}}, status_code=500)
        if model == "busy":
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429)
        if not body.get("stream"):
            if model == "slow":
                await asyncio.sleep(2)
            return JSONResponse(
                {
                    "id": "cmpl-1",
                    "object": "chat.completion",
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(WORDS)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
                }
            )

        async def events() -> AsyncIterator[str]:
            finished = False
            try:
                yield ": keep-alive comment\n\n"
                first = {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}
                yield f"data: {json.dumps(first)}\n\n"
                words = WORDS if model != "slow" else (f" w{i}" for i in range(10_000))
                for word in words:
                    chunk = {"choices": [{"index": 0, "delta": {"content": word}}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                    await asyncio.sleep(0.05 if model == "slow" else 0)
                last = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                yield f"data: {json.dumps(last)}\n\n"
                yield "data: [DONE]\n\n"
                finished = True
            finally:
                if not finished:
                    server.abandoned.set()

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeServer]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = FakeServer(url=f"http://127.0.0.1:{port}/v1")
    config = uvicorn.Config(_app(server), log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the fake OpenAI server did not start")
        time.sleep(0.02)
    yield server
    uv.should_exit = True
    thread.join(10)
    sock.close()


def _generator(
    server: FakeServer, model: str = "deepseek-chat", key: str = API_KEY
) -> OpenAIGenerator:
    endpoint = OpenAIEndpointSettings(base_url=server.url + "/", api_key=key, model=model)
    return OpenAIGenerator(GeneratorSettings(backend="openai", openai=endpoint))


LIMITS = GenerationLimits(max_new_tokens=32, timeout_seconds=10, temperature=0.0)


class TestNonStreaming:
    def test_answer_usage_and_request(self, fake_server: FakeServer) -> None:
        completion = _generator(fake_server).complete(MESSAGES, LIMITS)
        assert completion.text == "Paris is the capital."
        assert completion.finish_reason == "stop"
        assert (completion.prompt_tokens, completion.completion_tokens) == (12, 5)

        sent = fake_server.requests[-1]
        assert sent["model"] == "deepseek-chat"
        assert sent["messages"] == [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Capital of France?"},
        ]
        assert (sent["max_tokens"], sent["temperature"], sent["stream"]) == (32, 0.0, False)
        assert fake_server.headers[-1]["authorization"] == f"Bearer {API_KEY}"

    def test_http_errors_do_not_leak_the_endpoints_words(self, fake_server: FakeServer) -> None:
        with pytest.raises(GeneratorError) as failed:
            _generator(fake_server, model="broken").complete(MESSAGES, LIMITS)
        assert "500" in failed.value.message
        assert "db7" not in failed.value.message
        with pytest.raises(GeneratorError, match="401"):
            _generator(fake_server, key="wrong").complete(MESSAGES, LIMITS)
        with pytest.raises(GeneratorBusy):
            _generator(fake_server, model="busy").complete(MESSAGES, LIMITS)

    def test_timeout(self, fake_server: FakeServer) -> None:
        limits = GenerationLimits(max_new_tokens=8, timeout_seconds=0.3)
        with pytest.raises(GenerationTimeout):
            _generator(fake_server, model="slow").complete(MESSAGES, limits)

    def test_unreachable_endpoint(self) -> None:
        with socket.socket() as sock:  # a port nobody listens on
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        endpoint = OpenAIEndpointSettings(base_url=f"http://127.0.0.1:{port}/v1", model="m")
        generator = OpenAIGenerator(GeneratorSettings(backend="openai", openai=endpoint))
        with pytest.raises(GeneratorUnavailable):
            generator.complete(MESSAGES, LIMITS)


class TestStreaming:
    async def test_deltas_in_order(self, fake_server: FakeServer) -> None:
        deltas = [d async for d in _generator(fake_server).stream(MESSAGES, LIMITS)]
        assert deltas == WORDS
        assert fake_server.requests[-1]["stream"] is True

    async def test_closing_the_stream_disconnects_from_the_server(
        self, fake_server: FakeServer
    ) -> None:
        fake_server.abandoned.clear()
        stream = _generator(fake_server, model="slow").stream(MESSAGES, LIMITS)
        async with contextlib.aclosing(stream):
            assert await anext(stream) == " w0"
        # The server sees the connection go and stops producing.
        assert await asyncio.to_thread(fake_server.abandoned.wait, 5)

    async def test_cancel_event_ends_the_stream(self, fake_server: FakeServer) -> None:
        cancel = threading.Event()
        deltas = []
        async for delta in _generator(fake_server, model="slow").stream(MESSAGES, LIMITS, cancel):
            deltas.append(delta)
            if len(deltas) == 2:
                cancel.set()
        assert deltas == [" w0", " w1"]

    async def test_timeout_raises_after_the_partial_answer(self, fake_server: FakeServer) -> None:
        limits = GenerationLimits(max_new_tokens=8, timeout_seconds=0.4)
        deltas: list[str] = []
        with pytest.raises(GenerationTimeout) as raised:
            await drain(_generator(fake_server, model="slow").stream(MESSAGES, limits), deltas)
        assert deltas
        assert raised.value.partial == "".join(deltas)

    async def test_refused_stream(self, fake_server: FakeServer) -> None:
        with pytest.raises(GeneratorError, match="500"):
            await drain(_generator(fake_server, model="broken").stream(MESSAGES, LIMITS), [])
