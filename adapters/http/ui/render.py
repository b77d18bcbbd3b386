"""Pages, redirects and one-time notices (flash) of the dashboard, and what an error looks like in it.

A POST answers with a 303 redirect to a page (post/redirect/get), carrying its outcome in a short-lived flash
cookie that the next page shows once and clears. Errors render as HTML pages here (the API's problem+json is
for /v1): a refused action goes back to the page it came from with the reason as its notice.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any, Final

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.response import Redirect, Template
from litestar.types import ExceptionHandlersMap

from adapters.http.ui.session import PREFIX, LoginRequired, cookie, ended, login_url
from domain.errors import Conflict, DomainError, InvalidInput, NotFound, Unavailable

FLASH_COOKIE: Final = "gnomon_ui_flash"
log = logging.getLogger("gnomon.http")


def page(request: Request[Any, Any, Any], template: str, *, status: int = 200, **context: Any) -> Template:
    """A page of the dashboard, with the flash notice waiting for it (cleared by this response)."""
    notice = _read_flash(request)
    session = getattr(request.state, "ui_session", None)
    csrf = session.csrf if session is not None else context.pop("csrf", "")
    base = {"csrf": csrf, "notice": notice, "path": request.url.path, "logged_in": session is not None}
    cookies = [ended(FLASH_COOKIE, request)] if FLASH_COOKIE in request.cookies else []
    return Template(template_name=template, context=base | context, status_code=status, cookies=cookies)


def redirect(request: Request[Any, Any, Any], to: str, message: str | None = None, *, ok: bool = True) -> Redirect:
    """303 to `to`, with a notice for the next page."""
    cookies = []
    if message:
        raw = json.dumps({"ok": ok, "text": message[:500]}).encode()
        cookies.append(cookie(FLASH_COOKIE, base64.urlsafe_b64encode(raw).decode(), request, max_age=60))
    return Redirect(path=to, status_code=303, cookies=cookies)


def _read_flash(request: Request[Any, Any, Any]) -> dict[str, Any] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return None
    return {"ok": bool(value.get("ok")), "text": value["text"]}


def _status(exc: Exception) -> int:
    if isinstance(exc, HTTPException):
        return exc.status_code
    kinds = ((InvalidInput, 422), (NotFound, 404), (Conflict, 409), (Unavailable, 503))
    return next((status for kind, status in kinds if isinstance(exc, kind)), 400)


def _message(exc: Exception) -> str:
    if isinstance(exc, Unavailable):  # the driver's text may name hosts: it goes to the log only
        return "storage is unavailable right now; try again shortly"
    if isinstance(exc, InvalidInput):
        return "; ".join(f"{field}: {text}" for field, text in exc.errors.items())
    if isinstance(exc, ValidationException):
        return "a value in the address is not valid"
    return str(exc.detail) if isinstance(exc, HTTPException) else str(exc)


def on_login_required(request: Request[Any, Any, Any], exc: LoginRequired) -> Response[Any]:
    return Redirect(path=login_url(exc.back), status_code=303)


def on_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A refused action goes back where it came from with the reason; a page that cannot be shown says why."""
    status = _status(exc)
    if isinstance(exc, Unavailable):
        log.warning("storage unavailable on %s %s: %s", request.method, request.url.path, exc)
    if request.method == "POST" and isinstance(exc, DomainError) and status != 503:
        return redirect(request, request.url.path.rsplit("/", 1)[0] or PREFIX, _message(exc), ok=False)
    return page(request, "error.html", status=status, status_code=status, message=_message(exc))


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return page(request, "error.html", status=500, status_code=500,
                message="an unexpected error occurred; it has been logged")


HANDLERS: Final[ExceptionHandlersMap] = {
    LoginRequired: on_login_required,
    DomainError: on_error,
    HTTPException: on_error,
    Exception: on_unexpected,
}
