"""What every HTTP request passes before the app sees it: the API key, then a body that is small and arrives in time.

The body's bytes are counted as they arrive, not taken from its headers: ``Content-Length`` may
understate the body, and ``Transfer-Encoding: chunked`` carries no length at all. A chunked body
without ``Content-Length`` is therefore accepted like any other, and refused with 413 as soon as
more than ``max_body_bytes`` have arrived. A body that has not arrived whole within
``body_timeout`` seconds gets 408, so a client cannot hold a connection by never finishing it.
Every refusal here closes the connection: the rest of the body is never read.
"""

from __future__ import annotations

import asyncio
import hmac
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rnnzoo.pipeline.serve.parse import show


def api_key_bytes(api_key: str | None) -> bytes | None:
    """The key as the bytes a request must send; refuses a key that would turn authentication off or could never match."""
    if api_key is None:
        return None
    if not api_key.strip():
        raise ValueError(
            "--api-key is empty: that would serve without authentication; pass a non-empty key "
            "(or leave --api-key and RNNZOO_API_KEY unset to serve without one)"
        )
    for position, character in enumerate(api_key):
        if not (character.isascii() and character.isprintable()):
            # The key is a secret: say where the bad character is, not what it is.
            raise ValueError(
                f"--api-key has a non-ASCII or control character at position {position}: HTTP clients cannot send it "
                "reliably in the X-API-Key header; use printable ASCII, e.g. from "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
    if api_key != api_key.strip():
        raise ValueError("--api-key starts or ends with a space, which HTTP strips from header values: no request could match it")
    return api_key.encode("ascii")


class BodyTooLarge(Exception):
    """More bytes arrived than the limit allows."""


class ClientGone(Exception):
    """The client disconnected before its body was complete."""


async def refuse(send: Send, status: int, detail: str) -> None:
    """A JSON error that also closes the connection (whatever is left of the body stays unread)."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: API key, body size counted in bytes received, and a deadline for the body."""

    def __init__(self, app: ASGIApp, api_key: bytes | None, max_body_bytes: int, body_timeout: float) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])  # ASGI gives names lower-cased, values as raw bytes
        # Compared as bytes: a header with a non-ASCII byte is just a wrong key.
        if self.api_key is not None and not hmac.compare_digest(headers.get(b"x-api-key", b""), self.api_key):
            await refuse(send, 401, "missing or wrong X-API-Key header")
            return
        declared = headers.get(b"content-length")
        if declared is not None and not declared.isdigit():
            await refuse(send, 400, f"Content-Length {show(declared.decode('latin-1'))} is not a byte count")
            return
        if declared is not None and int(declared) > self.max_body_bytes:  # refused before reading any of it
            await refuse(send, 413, f"body of {int(declared)} bytes is over the limit of {self.max_body_bytes} bytes")
            return
        try:
            body = await asyncio.wait_for(self._read(receive), self.body_timeout)
        except asyncio.TimeoutError:
            await refuse(send, 408, f"the request body did not arrive within {self.body_timeout:g} s (--body-timeout)")
            return
        except BodyTooLarge:
            limit = self.max_body_bytes
            await refuse(send, 413, f"body is over the limit of {limit} bytes (more arrived, whatever the headers said)")
            return
        except ClientGone:
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body only the disconnect is left to hear

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
