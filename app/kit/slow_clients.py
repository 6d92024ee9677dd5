"""Bounds on slow clients, so a few hundred connections that trickle bytes cannot hold the
server: the time to send a request's headers, the time to send its body, and how many
connections are open at once.

uvicorn bounds none of the first two: its keep-alive timer is cancelled by any byte received,
and ASGI middleware only runs once the headers are complete. So the HTTP protocol
(`BoundedH11Protocol`, the one `cairn serve` runs) watches each connection:

- headers: from the moment a connection waits for a request (accepted, or its previous response
  done) the request line and headers must be complete within `header_timeout_seconds`;
  otherwise the connection is closed. The deadline is absolute: bytes arriving do not extend it.
- a body nobody reads: once the response is sent, the rest of the request body must arrive
  within `body_timeout_seconds`, or the connection is closed (uvicorn would otherwise read
  and drop a trickle for ever).
- connections: beyond `max_connections` open connections a request is answered 503 at once
  (uvicorn's `limit_concurrency`); beyond twice that a new connection is closed unanswered, so
  the number held has a ceiling, whatever the rate of new ones.

The body the application reads is bounded by the ASGI middleware `BodyReadTimeout`, after
Apache's mod_reqtimeout: the time the application spends waiting for body bytes may not exceed
`body_timeout_seconds` plus one second per `body_min_bytes_per_second` bytes received, so an
upload at any usable speed passes and a byte-a-second trickle is cut with 408 (and the
connection closed). Once the body is complete nothing is timed: a streamed answer (SSE) runs as
long as it runs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import h11
from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from app.kit.errors import send_closing_error
from app.kit.settings import ServerSettings

logger = logging.getLogger(__name__)

Phase = Literal["header", "drain"]

SLOW_CONNECTIONS_CLOSED = Counter(
    "cairn_slow_connections_closed_total",
    "Connections closed for sending a request too slowly (header: request line and headers; "
    "drain: an unread body after the response; refused: over the connection ceiling)",
    ["phase"],
)


@dataclass(frozen=True)
class ConnectionLimits:
    """The `[server]` bounds the protocol applies."""

    header_timeout: float
    body_timeout: float
    max_connections: int

    @classmethod
    def from_settings(cls, server: ServerSettings) -> ConnectionLimits:
        return cls(
            header_timeout=server.header_timeout_seconds,
            body_timeout=server.body_timeout_seconds,
            max_connections=server.max_connections,
        )

    @property
    def connection_ceiling(self) -> int:
        """Open connections past which a new one is closed unanswered."""
        return 2 * self.max_connections


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and unread-body deadlines and a connection ceiling.

    One timer per connection, for the phase the connection is in (`_phase_now`); it is re-armed
    only when the phase changes, so a trickle of bytes never pushes a deadline back.
    """

    limits: ClassVar[ConnectionLimits]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._phase: Phase | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.limits.connection_ceiling:
            SLOW_CONNECTIONS_CLOSED.labels("refused").inc()
            transport.close()
            return
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _phase_now(self) -> Phase | None:
        # Closing, or handed over to a WebSocket protocol: nothing of ours to time.
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return None
        state = self.conn.their_state
        if state is h11.IDLE:
            return "header"
        if state is h11.SEND_BODY and self.cycle is not None and self.cycle.response_complete:
            return "drain"
        # A request is being served: the application (and BodyReadTimeout) decides.
        return None

    def _watch(self) -> None:
        phase = self._phase_now()
        if phase == self._phase:
            return
        self._cancel()
        self._phase = phase
        if phase is not None:
            seconds = self.limits.header_timeout if phase == "header" else self.limits.body_timeout
            self._timer = self.loop.call_later(seconds, self._expire, phase)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._phase = None

    def _expire(self, phase: Phase) -> None:
        self._timer = None
        if self._phase_now() != phase:
            self._watch()
            return
        SLOW_CONNECTIONS_CLOSED.labels(phase).inc()
        logger.debug("closing a connection that sent its request too slowly (%s)", phase)
        self.transport.close()


def bounded_protocol(bounds: ConnectionLimits) -> type[BoundedH11Protocol]:
    """The protocol class for uvicorn's `http` option, bound to `bounds` (uvicorn builds each
    connection's protocol from the class and its own arguments only)."""

    class Bounded(BoundedH11Protocol):
        limits = bounds

    return Bounded


class _BodyTooSlow(Exception):
    pass


class BodyReadTimeout:
    """Answer 408 (and close the connection) when a request body arrives too slowly.

    Only the time the application spends waiting in `receive` counts, so a slow application
    is never blamed on the client. Raised into the application like the body-size limit's
    error; whatever the application answers then is replaced by the 408.
    """

    def __init__(self, app: ASGIApp, *, timeout: float, min_bytes_per_second: int) -> None:
        self.app = app
        self.timeout = timeout
        self.min_rate = min_bytes_per_second

    async def _reject(self, send: Send) -> None:
        await send_closing_error(
            send, 408, "request_timeout", "The request body arrived too slowly"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        received = 0
        waited = 0.0
        complete = False
        too_slow = False
        started = False
        rejected = False

        async def timed_receive() -> Message:
            nonlocal received, waited, complete, too_slow
            if complete:
                # The body is in: a streamed response waits here for the disconnect.
                return await receive()
            budget = self.timeout + received / self.min_rate - waited
            began = loop.time()
            try:
                if budget <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), budget)
            except TimeoutError:
                too_slow = True
                raise _BodyTooSlow from None
            finally:
                waited += loop.time() - began
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, rejected
            if too_slow and (rejected or not started):
                # Body parsers turn our exception into their own 400: answer 408 instead.
                if not rejected:
                    rejected = True
                    await self._reject(send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except _BodyTooSlow:
            if not started and not rejected:
                rejected = True
                await self._reject(send)
