"""Slow clients (issue 21, item 8): headers trickled a byte a second, bodies trickled after
them, and more connections than the server holds. Over a real socket with the uvicorn Config
`cairn serve` runs, with the bounds set small; every loop has a bound of its own, so a server
that never closes fails the test instead of hanging it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from app.kit.settings import ServerSettings
from app.kit.slow_clients import BodyReadTimeout
from app.main import create_app
from tests.chat.live import live_server
from tests.conftest import DatabaseFactory, make_settings

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
MAX_CONNECTIONS = 12
# Closing is checked about once a second: allow that, and a loaded test box, on top.
SLACK = 3.0
# No loop waits longer than this for the server to close a connection.
GIVE_UP = HEADER_TIMEOUT + 3 * SLACK


@pytest.fixture
async def served(sqlite_factory: DatabaseFactory, tmp_path: Path) -> AsyncIterator[str]:
    """A live server with small bounds, and a streaming route that outlives them."""
    settings = make_settings(await sqlite_factory.new(), tmp_path / "data")
    settings = settings.model_copy(
        update={
            "server": ServerSettings(
                header_timeout_seconds=HEADER_TIMEOUT,
                body_timeout_seconds=BODY_TIMEOUT,
                body_min_bytes_per_second=500,
                max_connections=MAX_CONNECTIONS,
            )
        }
    )
    app = create_app(settings)
    add_slow_stream(app)
    with live_server(app) as url:
        yield url


def add_slow_stream(app: FastAPI) -> None:
    @app.post("/test/slow-stream")
    async def slow_stream(request: Request) -> StreamingResponse:
        size = len(await request.body())

        async def events() -> AsyncIterator[str]:
            for n in range(4):
                yield f"data: {n} {size}\n\n"
                await asyncio.sleep(1.0)

        return StreamingResponse(events(), media_type="text/event-stream")


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


async def read_until_closed(
    reader: asyncio.StreamReader, limit: float, *, every: float = 1.0
) -> tuple[bytes, bool]:
    """What the server sent, and whether it closed the connection within `limit` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    data = b""
    while loop.time() < deadline:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), every)
        except TimeoutError:
            continue
        except ConnectionError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


async def trickle(
    host: str, port: int, head: bytes, tail: bytes, *, every: float = 1.0
) -> tuple[float | None, bytes]:
    """Send `head` at once, then `tail` a byte each `every` seconds, reading all the while:
    seconds until the server closed the connection (None: still open after GIVE_UP), and what
    it answered."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(host, port)
    started = loop.time()
    answer = b""
    try:
        if head:
            writer.write(head)
            await writer.drain()
        for byte in tail:
            if loop.time() - started > GIVE_UP:
                return None, answer
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                return loop.time() - started, answer
            data, closed = await read_until_closed(reader, every, every=every)
            answer += data
            if closed:
                return loop.time() - started, answer
        return None, answer
    finally:
        writer.close()


SLOW_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200


async def test_slow_headers_are_closed_and_connections_past_the_limit_refused(
    served: str,
) -> None:
    host, port = address(served)
    slow = [asyncio.create_task(trickle(host, port, b"", SLOW_HEADERS)) for _ in range(20)]
    await asyncio.sleep(0.5)

    # 20 connections held open past the limit of 12: a request is refused at once, with 503.
    async with httpx.AsyncClient(base_url=served, timeout=10) as client:
        refused = await client.get("/healthz")
    assert refused.status_code == 503

    # Past twice the limit a new connection is closed before anything is read from it.
    extra = [await asyncio.open_connection(host, port) for _ in range(4)]
    try:
        reader, writer = await asyncio.open_connection(host, port)
        data, closed = await read_until_closed(reader, HEADER_TIMEOUT / 2, every=0.1)
        writer.close()
        assert closed
        assert data == b""
    finally:
        for _, held in extra:
            held.close()

    results = await asyncio.gather(*slow)
    for seconds, answer in results:
        assert seconds is not None, "a connection trickling its headers was never closed"
        assert seconds < HEADER_TIMEOUT + SLACK, seconds
        assert answer == b""

    # With the slow ones gone the server answers again.
    async with httpx.AsyncClient(base_url=served, timeout=10) as client:
        assert (await client.get("/healthz")).status_code == 200


async def test_a_trickled_body_is_cut_with_408(served: str) -> None:
    host, port = address(served)
    head = (
        b"POST /api/v1/auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\n"
    )
    seconds, answer = await trickle(host, port, head, b"username=admin&password=" + b"x" * 176)
    assert seconds is not None, "a trickled body was never cut"
    assert seconds < BODY_TIMEOUT + SLACK, seconds
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout", answer
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.lower()
    assert json.loads(body)["error"]["code"] == "request_timeout"


async def test_an_unread_body_trickled_after_the_answer_is_closed(served: str) -> None:
    host, port = address(served)
    # Answered at once (405) without the body being read; the client keeps trickling it.
    head = b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n"
    seconds, answer = await trickle(host, port, head, b"x" * 1000)
    assert answer.startswith(b"HTTP/1.1 405"), answer
    assert seconds is not None, "the connection stayed open for the trickled body"
    assert seconds < BODY_TIMEOUT + SLACK, seconds


async def test_a_streamed_answer_outlives_the_timeouts(served: str) -> None:
    async with (
        httpx.AsyncClient(base_url=served, timeout=30) as client,
        client.stream("POST", "/test/slow-stream", content=b"q" * 1000) as response,
    ):
        assert response.status_code == 200
        events = [line async for line in response.aiter_lines() if line]
    # Four seconds of events, longer than either timeout, all delivered.
    assert events == [f"data: {n} 1000" for n in range(4)]


async def test_keep_alive_connections_serve_one_request_after_another(served: str) -> None:
    async with httpx.AsyncClient(base_url=served, timeout=10) as client:
        for _ in range(3):
            assert (await client.get("/healthz")).status_code == 200
            # Idle between requests for less than the header timeout: still served.
            await asyncio.sleep(HEADER_TIMEOUT / 2)


# --- the body deadline in process ----------------------------------------------------------


def chunks(parts: list[bytes]) -> Iterator[Message]:
    for n, part in enumerate(parts):
        yield {"type": "http.request", "body": part, "more_body": n < len(parts) - 1}


async def call(
    app: BodyReadTimeout, parts: list[bytes], *, gap: float, forever: bool = False
) -> list[Message]:
    """Run one request through `app`, its body arriving in `parts`, `gap` seconds apart; the
    messages sent back."""
    sent: list[Message] = []
    pending = chunks(parts)
    done = asyncio.Event()

    async def receive() -> Message:
        for message in pending:
            await asyncio.sleep(gap)
            return message
        if forever:
            await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [],
        "query_string": b"",
    }
    try:
        await app(scope, receive, send)
    finally:
        done.set()
    return sent


async def read_body(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the whole body, then answers 200 with its length."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def status(sent: list[Message]) -> int:
    return int(next(m for m in sent if m["type"] == "http.response.start")["status"])


async def test_a_body_trickled_in_process_is_408_and_closes() -> None:
    app = BodyReadTimeout(read_body, timeout=0.3, min_bytes_per_second=1000)
    sent = await call(app, [b"a"] * 100, gap=0.05)
    assert status(sent) == 408
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert (b"connection", b"close") in start["headers"]


async def test_a_body_at_a_usable_rate_is_never_cut() -> None:
    # Longer in all than the timeout, but 20 kB/s against a minimum of 1 kB/s.
    app = BodyReadTimeout(read_body, timeout=0.3, min_bytes_per_second=1000)
    sent = await call(app, [b"a" * 1000] * 12, gap=0.05)
    assert status(sent) == 200
    assert sent[-1]["body"] == b"12000"


async def test_the_time_the_app_takes_is_not_counted_against_the_client() -> None:
    async def slow_reader(scope: Scope, receive: Receive, send: Send) -> None:
        for _ in range(3):
            await asyncio.sleep(0.4)  # busy elsewhere, longer than the whole timeout
            message = await receive()
        assert not message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = BodyReadTimeout(slow_reader, timeout=0.3, min_bytes_per_second=1000)
    assert status(await call(app, [b"a", b"b", b"c"], gap=0)) == 200


async def test_waiting_for_the_disconnect_after_the_body_is_not_timed() -> None:
    async def streams(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        listener = asyncio.create_task(receive())  # as a streaming response listens
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(3):
            await asyncio.sleep(0.2)
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        assert not listener.done()
        listener.cancel()

    app = BodyReadTimeout(streams, timeout=0.1, min_bytes_per_second=1000)
    sent = await call(app, [b""], gap=0, forever=True)
    assert status(sent) == 200
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"xxx"
