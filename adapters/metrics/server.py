"""A tiny HTTP/1.1 responder for the processes without the API (scheduler, worker): GET /metrics, /healthz and
/readyz, one request per connection.

prometheus-client's own `start_http_server` serves only metrics, from a thread; this one runs on the process's
event loop, so /readyz can await the same readiness checks as the API's, and it needs no other dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Final

from prometheus_client import CollectorRegistry

from adapters.metrics.prometheus import exposition

Readiness = Callable[[], Awaitable[dict[str, bool]]]
JSON: Final = "application/json"
READ_TIMEOUT: Final = 5.0
log = logging.getLogger("gnomon.metrics")


class ProbeServer:
    def __init__(self, registry: CollectorRegistry, readiness: Readiness) -> None:
        self.registry = registry
        self.readiness = readiness
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen (port 0: any free port); return the port listened on."""
        self._server = await asyncio.start_server(self._serve, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            method, _, target = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = target.split(" ", 1)[0].split("?", 1)[0]
            status, content_type, body = await self.answer(method, path)
            writer.write(_response(status, content_type, b"" if method == "HEAD" else body, len(body)))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a client that sends nothing sensible, or goes away, gets nothing
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a request."""
        if method not in ("GET", "HEAD"):
            return 405, JSON, _json({"status": 405, "detail": f"{method} is not allowed"})
        if path == "/metrics":
            body, content_type = exposition(self.registry)
            return 200, content_type, body
        if path == "/healthz":
            return 200, JSON, _json({"status": "ok"})
        if path == "/readyz":
            checks = await self._checks()
            ready = all(checks.values())
            return (200 if ready else 503), JSON, _json({"status": "ready" if ready else "unavailable",
                                                         "checks": checks})
        return 404, JSON, _json({"status": 404, "detail": f"nothing at {path} (try /metrics, /healthz, /readyz)"})

    async def _checks(self) -> dict[str, bool]:
        try:
            return await self.readiness()
        except Exception:  # a probe must answer, whatever the check did
            log.exception("readiness check raised")
            return {"readiness": False}


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _response(status: int, content_type: str, body: bytes, length: int) -> bytes:
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + body
