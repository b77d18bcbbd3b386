"""The dashboard at /ui: server-rendered pages (Jinja2 templates, one CSS file, a few lines of script for live
refresh) over the same use cases and tokens as the API. Every page works with JavaScript off."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from litestar import Router
from litestar.datastructures import CacheControlHeader, ResponseHeader
from litestar.di import Provide
from litestar.static_files import create_static_files_router

from adapters.http.ui.bulk import BulkPages
from adapters.http.ui.jobs import JobPages
from adapters.http.ui.login import LoginController, logout
from adapters.http.ui.overview import overview
from adapters.http.ui.render import HANDLERS
from adapters.http.ui.schedules import SchedulePages
from adapters.http.ui.session import PREFIX, guard
from adapters.http.ui.templating import STATIC, ui_templates

__all__ = ["ui_router", "ui_templates"]

# No frames (the buttons cannot be clickjacked), nothing loaded from elsewhere, no inline script or style.
HEADERS: Final = [
    ResponseHeader(name="Content-Security-Policy", value=(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'")),
    ResponseHeader(name="X-Frame-Options", value="DENY"),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="Referrer-Policy", value="same-origin"),
]


def ui_router(tokens: Sequence[str], dependencies: Mapping[str, Provide]) -> Router:
    """The /ui router: `tokens` as for the API, `dependencies` the API's use-case providers."""
    static = create_static_files_router(path="/static", directories=[STATIC], opt={"public": True},
                                        cache_control=CacheControlHeader(max_age=3600), include_in_schema=False)
    accepted = tuple(t for t in tokens if t)
    return Router(
        path=PREFIX,
        route_handlers=[overview, LoginController, logout, JobPages, BulkPages, SchedulePages, static],
        dependencies={**dependencies, "ui_tokens": Provide(lambda: accepted, sync_to_thread=False)},
        before_request=guard(accepted),
        exception_handlers=HANDLERS,
        response_headers=HEADERS,
        cache_control=CacheControlHeader(no_store=True),  # pages show live data, and only to a logged-in user
        include_in_schema=False,
        security=[{}],
    )
