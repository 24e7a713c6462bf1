"""How the HTTP API is served: uvicorn over h11 with header and keep-alive timeouts.

uvicorn times out only idle keep-alive connections (``timeout_keep_alive``, after a response).
A client that connects and then sends nothing, or sends its request headers a byte at a time,
would hold its connection open forever. ``TimedH11Protocol`` adds a header timeout: from the
moment a connection opens, and again after every response, the client has
``header_timeout`` seconds to deliver a complete request head; otherwise the connection is
closed without a response. Settings: ``ZKMETER_HTTP_HEADER_TIMEOUT_SECONDS`` and
``ZKMETER_HTTP_KEEP_ALIVE_SECONDS`` (docs/operations.md).

Malformed HTTP (a bad request line, a bad header) is answered by uvicorn itself, before any
application code runs: ``400`` with ``Content-Type: text/plain`` and the body
``Invalid HTTP request received.``, then the connection closes. That is the one response that
does not have the JSON error shape (docs/api.md).
"""

import asyncio
from functools import partial
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0
DEFAULT_KEEP_ALIVE_SECONDS = 5


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head (module docstring)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECONDS

    def __init__(self, *args: Any, header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECONDS,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Past IDLE, h11 has parsed a whole request head: the application has it now.
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()  # waiting for the next request head on this connection


def uvicorn_config(app: Any, *, host: str, port: int,
                   header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECONDS,
                   keep_alive: int = DEFAULT_KEEP_ALIVE_SECONDS) -> uvicorn.Config:
    """The uvicorn configuration every zkmeter HTTP listener uses (module docstring)."""
    protocol: Any = partial(TimedH11Protocol, header_timeout=header_timeout)
    return uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                          access_log=False, http=protocol, timeout_keep_alive=keep_alive)
