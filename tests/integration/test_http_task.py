"""The http task against a real HTTP server on 127.0.0.1 (private addresses allowed for the test)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from adapters.tasks import WebhookError, make_http_task
from domain.errors import PermanentFailure

RELEASE = threading.Event()  # lets the slow endpoint return at teardown


class Handler(BaseHTTPRequestHandler):
    """/status/N answers N; /slow waits until released; anything else echoes the request as JSON."""

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path.startswith("/status/"):
            self._send(int(self.path.removeprefix("/status/")), b"status page")
        elif self.path == "/slow":
            RELEASE.wait(30)
            self._send(200, b"late")
        else:
            echo = {"method": self.command, "path": self.path, "json": json.loads(body) if body else None,
                    "x_test": self.headers.get("X-Test")}
            self._send(200, json.dumps(echo).encode())

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def base_url() -> Iterator[str]:
    RELEASE.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        RELEASE.set()
        server.shutdown()
        server.server_close()
        thread.join()


class Context:
    job_id, attempt, lateness_seconds = "job-1", 1, 0.0
    deadline = datetime(2030, 1, 1, tzinfo=UTC)
    scheduled_for = None
    cancelled = False

    def heartbeat(self) -> None:
        pass

    def fail_permanently(self, reason: str) -> None:
        raise PermanentFailure(reason)


HTTP = make_http_task(("127.0.0.1",), allow_private=True)


async def test_success_returns_status_and_body(base_url: str) -> None:
    payload = {"url": f"{base_url}/hook?x=1", "json": {"hello": "world"}, "headers": {"X-Test": "yes"}}
    result = await HTTP(payload, Context())
    assert result["status"] == 200
    assert json.loads(result["body"]) == {"method": "POST", "path": "/hook?x=1", "json": {"hello": "world"},
                                          "x_test": "yes"}


async def test_an_expected_status_other_than_2xx_is_a_success(base_url: str) -> None:
    result = await HTTP({"url": f"{base_url}/status/404", "method": "GET", "expect_status": [404]}, Context())
    assert result == {"status": 404, "body": "status page"}


async def test_a_status_not_expected_is_a_retryable_error(base_url: str) -> None:
    with pytest.raises(WebhookError, match="returned 200") as caught:
        await HTTP({"url": f"{base_url}/echo", "expect_status": 201}, Context())
    assert not isinstance(caught.value, PermanentFailure)


async def test_404_fails_permanently(base_url: str) -> None:
    with pytest.raises(PermanentFailure, match="returned 404"):
        await HTTP({"url": f"{base_url}/status/404"}, Context())


async def test_503_is_retryable(base_url: str) -> None:
    with pytest.raises(WebhookError, match="returned 503"):
        await HTTP({"url": f"{base_url}/status/503"}, Context())


async def test_a_slow_server_times_out_as_a_retryable_error(base_url: str) -> None:
    with pytest.raises(WebhookError, match="timed out"):
        await HTTP({"url": f"{base_url}/slow", "method": "GET", "timeout_seconds": 0.2}, Context())


async def test_a_refused_connection_is_retryable() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(WebhookError, match="failed"):
        await HTTP({"url": f"http://127.0.0.1:{port}/"}, Context())


async def test_loopback_is_refused_unless_private_addresses_are_allowed(base_url: str) -> None:
    strict = make_http_task(("*",), allow_private=False)
    with pytest.raises(PermanentFailure, match="non-public address"):
        await strict({"url": f"{base_url}/hook"}, Context())
    with pytest.raises(PermanentFailure, match="non-public address"):
        await strict({"url": base_url.replace("127.0.0.1", "localhost")}, Context())
