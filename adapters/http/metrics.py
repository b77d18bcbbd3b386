"""Prometheus for the API: a request duration histogram by method, route template and status, and GET /metrics.

The middleware runs outside Litestar's per-route exception handling, so it sees the status of the problem
response an error became. Requests that match no route (404 from the router) never reach it: the route label
stays bounded by the routes that exist.
"""

from __future__ import annotations

import time
from typing import Final

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest

REQUEST_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class RequestTimer:
    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what a client sees if the app dies before it answers

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            route = str(scope.get("path_template") or "unmatched")
            self.histogram.labels(scope["method"], route, str(status)).observe(time.perf_counter() - started)


def request_timer(registry: CollectorRegistry) -> DefineMiddleware:
    histogram = Histogram("gnomon_http_request_duration_seconds", "Duration of API requests",
                          ["method", "route", "status"], buckets=REQUEST_BUCKETS, registry=registry)
    return DefineMiddleware(RequestTimer, histogram=histogram)


def metrics_endpoint(registry: CollectorRegistry) -> HTTPRouteHandler:
    """GET /metrics: the registry in Prometheus text format, open like the probes."""

    @get("/metrics", tags=["health"], security=[{}], include_in_schema=False, sync_to_thread=False)
    def metrics() -> Response[bytes]:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
