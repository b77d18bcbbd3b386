"""Who may see /ui: the API's bearer tokens, carried by a cookie, and a CSRF check on every POST.

The login form puts `<nonce>.<base64 of the token>` in an HttpOnly, SameSite=Strict cookie scoped to /ui. Every
form of a logged-in page carries HMAC(token, nonce) as its CSRF token; a POST without the right one is refused.
Nothing is kept server-side, so any number of API processes accept each other's sessions, and a token removed
from GNOMON_API_TOKENS ends its sessions at once. The login form itself is guarded by a double-submit cookie.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import quote

from attrs import frozen
from litestar import Request
from litestar.datastructures import Cookie
from litestar.exceptions import HTTPException

SESSION_COOKIE: Final = "gnomon_ui"
LOGIN_COOKIE: Final = "gnomon_ui_login"
SESSION_SECONDS: Final = 12 * 3600
PREFIX: Final = "/ui"


class LoginRequired(HTTPException):
    status_code = 401

    def __init__(self, back: str) -> None:
        super().__init__(detail="log in to see the dashboard")
        self.back = back


class CsrfRefused(HTTPException):
    status_code = 403

    def __init__(self) -> None:
        super().__init__(detail="the form was stale or did not come from this dashboard: reload the page and try again")


@frozen
class Session:
    nonce: str
    token: str

    @property
    def csrf(self) -> str:
        return hmac.new(self.token.encode(), f"gnomon-ui-csrf:{self.nonce}".encode(), hashlib.sha256).hexdigest()

    @property
    def cookie_value(self) -> str:
        # base64 keeps a token's ';', spaces or quotes from breaking the cookie header
        return f"{self.nonce}.{base64.urlsafe_b64encode(self.token.encode()).decode()}"


def known(offered: str, tokens: Sequence[str]) -> bool:
    """Constant-time check against every token, without stopping at a match (as the bearer guard does)."""
    matches = [hmac.compare_digest(offered.encode(), t.encode()) for t in tokens if t]
    return any(matches)


def new_session(token: str) -> Session:
    return Session(secrets.token_urlsafe(16), token)


def current(request: Request[Any, Any, Any], tokens: Sequence[str]) -> Session | None:
    """The session the request's cookie names, if its token is (still) one of `tokens`."""
    nonce, _, encoded = request.cookies.get(SESSION_COOKIE, "").partition(".")
    try:
        token = base64.urlsafe_b64decode(encoded.encode()).decode()
    except (binascii.Error, ValueError):
        return None
    if not nonce or not token or not known(token, tokens):
        return None
    return Session(nonce, token)


def cookie(key: str, value: str, request: Request[Any, Any, Any], *, max_age: int) -> Cookie:
    return Cookie(key=key, value=value, path=PREFIX, httponly=True, samesite="strict", max_age=max_age,
                  secure=request.url.scheme == "https")


def session_cookie(session: Session, request: Request[Any, Any, Any]) -> Cookie:
    return cookie(SESSION_COOKIE, session.cookie_value, request, max_age=SESSION_SECONDS)


def ended(key: str, request: Request[Any, Any, Any]) -> Cookie:
    return cookie(key, "", request, max_age=0)


async def form_csrf(request: Request[Any, Any, Any]) -> str:
    form = await request.form()
    value = form.get("csrf")
    return value if isinstance(value, str) else ""


def same(offered: str, expected: str) -> bool:
    return bool(offered) and bool(expected) and hmac.compare_digest(offered.encode(), expected.encode())


def local_path(target: str | None) -> str:
    """`target` if it is a path of this dashboard (an open redirect otherwise), else the overview."""
    if not target or not target.startswith(PREFIX) or target.startswith("//") or "\\" in target:
        return PREFIX
    rest = target[len(PREFIX):]
    return target if rest == "" or rest[0] in "/?" else PREFIX


def login_url(back: str) -> str:
    return f"{PREFIX}/login" if back in (PREFIX, PREFIX + "/") else f"{PREFIX}/login?next={quote(back, safe='')}"


def guard(tokens: Sequence[str]) -> Any:
    """The /ui router's before_request hook: a session for every page but the public ones (login, static),
    and the session's CSRF token in every POST. Stores the session in request.state.ui_session."""

    async def require_session(request: Request[Any, Any, Any]) -> None:
        if request.route_handler.opt.get("public"):
            return None
        session = current(request, tokens)
        if session is None:
            path_qs = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise LoginRequired(local_path(path_qs) if request.method == "GET" else PREFIX)
        if request.method == "POST" and not same(await form_csrf(request), session.csrf):
            raise CsrfRefused()
        request.state.ui_session = session
        return None

    return require_session
