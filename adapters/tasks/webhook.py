"""The built-in `http` task: a webhook call, limited to allowed hosts and (by default) public addresses.

Payload: {"url": ..., "method": "POST", "headers": {}, "json": null, "expect_status": 200..299 (an int or a
list), "timeout_seconds": 10}. Returns {"status": code, "body": the first 64 KiB of the body as text}.
A bad payload, a refused host and a 4xx other than 408/429 fail the job permanently; anything else that goes
wrong (network, timeout, 5xx, another unexpected status) raises WebhookError, which the worker retries.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import httpx
from attrs import frozen

from domain.errors import PermanentFailure

MAX_BODY_BYTES: Final = 64 * 1024
METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
RETRYABLE_4XX: Final = frozenset({408, 429})
DEFAULT_EXPECT: Final = frozenset(range(200, 300))

Resolver = Callable[[str, int], Awaitable[list[str]]]


class WebhookError(Exception):
    """The call failed in a way that may pass on a later attempt."""


async def resolve(host: str, port: int) -> list[str]:
    """Every address the host resolves to, with the event loop's resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _canonical_host(host: str) -> str:
    host = host.lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """'*' allows any host, '*.example.com' any subdomain of example.com (not itself), else exact match."""
    host = _canonical_host(host)
    for pattern in patterns:
        pattern = _canonical_host(pattern)
        if pattern in ("*", host) or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


def is_public(address: str) -> bool:
    """False for private, loopback, link-local, shared, reserved, unspecified and multicast addresses."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@frozen(kw_only=True)
class WebhookRequest:
    method: str
    url: httpx.URL
    headers: dict[str, str]
    body: Any
    expect: frozenset[int]
    timeout: float

    @property
    def where(self) -> str:
        """The URL without credentials or query, fit for an error message."""
        return f"{self.method} {self.url.scheme}://{self.url.netloc.decode()}{self.url.path}"


def _expect(value: object) -> frozenset[int]:
    codes = value if isinstance(value, list) else [value]
    if not codes or not all(type(c) is int and 100 <= c <= 599 for c in codes):
        raise PermanentFailure(f"http task: expect_status must be a status or a list of them, got {value!r}")
    return frozenset(codes)


def _timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise PermanentFailure(f"http task: timeout_seconds must be a positive number, got {value!r}")
    return float(value)


def _url(value: object) -> httpx.URL:
    try:
        url = httpx.URL(value) if isinstance(value, str) else None
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise PermanentFailure(f"http task: url must be an http(s) URL with a host, got {value!r}")
    return url


def parse_request(payload: Mapping[str, Any]) -> WebhookRequest:
    """The request a payload describes; PermanentFailure if it is malformed (a retry would not help)."""
    method = payload.get("method", "POST")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise PermanentFailure(f"http task: method must be one of {sorted(METHODS)}, got {method!r}")
    headers = payload.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise PermanentFailure("http task: headers must be an object of strings")
    expect = payload.get("expect_status")
    return WebhookRequest(method=method.upper(), url=_url(payload.get("url")), headers=dict(headers),
                          body=payload.get("json"), timeout=_timeout(payload.get("timeout_seconds", 10)),
                          expect=DEFAULT_EXPECT if expect is None else _expect(expect))


async def _read_text(response: httpx.Response) -> str:
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_BODY_BYTES:
            break
    raw = b"".join(chunks)[:MAX_BODY_BYTES]
    try:
        return raw.decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return raw.decode("utf-8", errors="replace")


def judge(request: WebhookRequest, status: int, body: str) -> dict[str, Any]:
    """The task's result for an expected status; otherwise the error the worker should see."""
    if status in request.expect:
        return {"status": status, "body": body}
    message = f"{request.where} returned {status}, not an expected status: {body[:500]}"
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        raise PermanentFailure(message)
    raise WebhookError(message)


class HttpTask:
    """The `http` task under one host policy. `resolver` and `transport` are seams for tests."""

    def __init__(self, allow: tuple[str, ...], allow_private: bool, *, resolver: Resolver = resolve,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.allow, self.allow_private = allow, allow_private
        self._resolve, self._transport = resolver, transport

    async def __call__(self, payload: dict[str, Any], ctx: Any) -> dict[str, Any]:
        request = parse_request(payload)
        url, headers, extensions = await self._route(request)
        async with httpx.AsyncClient(transport=self._transport, timeout=request.timeout,
                                     follow_redirects=False, trust_env=False) as client:
            try:
                async with client.stream(request.method, url, headers=headers, json=request.body,
                                         extensions=extensions) as response:
                    body = await _read_text(response)
            except httpx.TimeoutException as error:
                raise WebhookError(f"{request.where} timed out after {request.timeout:g} s") from error
            except httpx.HTTPError as error:
                raise WebhookError(f"{request.where} failed: {error!r}") from error
        return judge(request, response.status_code, body)

    async def _route(self, request: WebhookRequest) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
        """Check the host; unless private addresses are allowed, pin the connection to a checked address
        (so a second DNS answer cannot point it elsewhere) while Host and TLS SNI keep the name."""
        host = request.url.host
        if not host_allowed(host, self.allow):
            raise PermanentFailure(f"http task: host {host!r} is not allowed by GNOMON_HTTP_ALLOW")
        if self.allow_private:
            return request.url, request.headers, {}
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        try:
            addresses = await self._resolve(host, port)
        except OSError as error:
            raise WebhookError(f"http task: cannot resolve {host!r}: {error}") from error
        refused = [address for address in addresses if not is_public(address)]
        if refused or not addresses:
            raise PermanentFailure(f"http task: {host!r} resolves to a non-public address {refused or '-'}; "
                                   "set GNOMON_HTTP_ALLOW_PRIVATE to allow it")
        pinned = addresses[0].split("%", 1)[0]
        if pinned == _canonical_host(host):
            return request.url, request.headers, {}
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        headers["Host"] = request.url.netloc.decode()
        return request.url.copy_with(host=pinned), headers, {"sni_hostname": host}


def make_http_task(allow: tuple[str, ...], allow_private: bool) -> HttpTask:
    """The `http` task allowed to call hosts matching `allow` (empty: none), public addresses only
    unless `allow_private`."""
    return HttpTask(tuple(allow), allow_private)
