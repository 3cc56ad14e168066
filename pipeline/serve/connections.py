"""How uvicorn treats connections: how long one may wait for a request's headers or sit idle, and how many are served.

uvicorn closes a keep-alive connection idle for ``timeout_keep_alive`` seconds, but arms that timer
only after a response, and any byte received cancels it: a client that connects and sends nothing,
or trickles its headers a byte at a time, is kept forever, and with ``limit_concurrency`` a few
hundred of them would make the server answer 503 to everyone. The protocol below closes a
connection on which no request has begun within ``timeout_keep_alive`` seconds of connecting or of
the last response. The body then has the guard's ``body_timeout`` (see guard.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may already start a pipelined request: _arm sees that cycle
        self._arm()

    def _arm(self) -> None:
        self.loop.call_later(self.timeout_keep_alive, self._close_if_no_request_since, self.cycle)

    def _close_if_no_request_since(self, cycle: Any) -> None:
        # A new request makes a new cycle; the same, finished (or no) cycle means none began in time.
        if self.cycle is cycle and (cycle is None or cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()


def uvicorn_options(idle_timeout: float, limit_concurrency: int) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` beyond the app, host and port."""
    return {
        "log_level": "warning",
        "http": HeaderDeadlineProtocol,
        "timeout_keep_alive": idle_timeout,
        # Connections plus running requests; past it uvicorn answers 503 instead of queueing without bound.
        "limit_concurrency": limit_concurrency,
    }
