"""Calls an ASGI app in-process, as a server would, with no socket and no HTTP client library.

The body goes as the chunks given, so a test controls what headers claim and what bytes arrive:
a chunked body, a lying Content-Length, or a body that stalls and never ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    chunks_read: int = 0  # how many body chunks the app pulled: a refusal should stop early
    seconds: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def detail(self) -> str:
        return str(self.json()["detail"])


@dataclass
class Request:
    method: str
    path: str
    chunks: Iterable[bytes] = ()
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    stall: bool = False  # after the chunks, send nothing more (the body never ends)


async def _call(app: Any, request: Request) -> Reply:
    chunks = iter(request.chunks)
    pending = next(chunks, None)
    answered = asyncio.Event()
    reply = Reply(0, {}, b"")

    async def receive() -> dict[str, Any]:
        nonlocal pending
        if pending is not None:
            chunk, pending = pending, next(chunks, None)
            reply.chunks_read += 1
            return {"type": "http.request", "body": chunk, "more_body": pending is not None or request.stall}
        if request.stall:
            await asyncio.Event().wait()  # the client went quiet: only a deadline ends this
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            reply.status = message["status"]
            reply.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            reply.body += message.get("body", b"")
            if not message.get("more_body", False):
                answered.set()

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": request.method, "scheme": "http",
        "path": request.path, "raw_path": request.path.encode(), "query_string": b"", "root_path": "",
        "headers": request.headers, "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
    }
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(app(scope, receive, send), timeout=20)  # a test must not hang on a bug
    reply.seconds = asyncio.get_running_loop().time() - started
    return reply


def call(app: Any, method: str, path: str, body: Any = None, *, raw: bytes | None = None, key: str | bytes | None = None,
         chunks: Iterable[bytes] | None = None, headers: list[tuple[bytes, bytes]] | None = None, stall: bool = False) -> Reply:
    """One request. ``body`` is sent as JSON (``raw`` as given) in one chunk with a true Content-Length;
    ``chunks`` are sent as they are, with only the ``headers`` given (no Content-Length unless there)."""
    extra = list(headers or [])
    if key is not None:
        extra.append((b"x-api-key", key if isinstance(key, bytes) else key.encode()))
    if chunks is None:
        data = raw if raw is not None else b"" if body is None else json.dumps(body).encode()
        chunks = [data]
        extra += [(b"content-length", str(len(data)).encode())]
    extra.append((b"content-type", b"application/json"))
    return asyncio.run(_call(app, Request(method, path, chunks, extra, stall)))
