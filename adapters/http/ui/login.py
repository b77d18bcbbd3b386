"""/ui/login and /ui/logout: trade an API token for a session cookie, and give it back."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.response import Redirect, Template

from adapters.http.ui.render import page, redirect
from adapters.http.ui.session import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    CsrfRefused,
    cookie,
    current,
    ended,
    known,
    local_path,
    new_session,
    same,
    session_cookie,
)

LOGIN_SECONDS = 3600


class LoginController(Controller):
    path = "/login"
    opt = {"public": True}

    @get("/")
    async def form(self, request: Request[Any, Any, Any],
                   ui_tokens: NamedDependency[Sequence[str]]) -> Response[Any]:
        """The login form; a logged-in visitor goes straight on."""
        target = local_path(request.query_params.get("next"))
        if current(request, ui_tokens) is not None:
            return Redirect(path=target, status_code=303)
        return _form(request, target)

    @post("/", status_code=303)
    async def login(self, request: Request[Any, Any, Any],
                    ui_tokens: NamedDependency[Sequence[str]]) -> Response[Any]:
        form = await request.form()
        offered, target = str(form.get("token") or "").strip(), local_path(str(form.get("next") or ""))
        if not same(str(form.get("csrf") or ""), request.cookies.get(LOGIN_COOKIE, "")):
            raise CsrfRefused()
        if not known(offered, ui_tokens):
            return _form(request, target, error="That token is not valid.", status=401,
                         nonce=request.cookies[LOGIN_COOKIE])
        response = Redirect(path=target, status_code=303)
        response.cookies.extend([session_cookie(new_session(offered), request), ended(LOGIN_COOKIE, request)])
        return response


def _form(request: Request[Any, Any, Any], target: str, *, error: str | None = None, status: int = 200,
          nonce: str | None = None) -> Template:
    # Double-submit: the form's hidden field must match this cookie, which another site can neither read nor set.
    nonce = nonce or secrets.token_urlsafe(16)
    response = page(request, "login.html", status=status, csrf=nonce, target=target, error=error)
    response.cookies.append(cookie(LOGIN_COOKIE, nonce, request, max_age=LOGIN_SECONDS))
    return response


@post("/logout", status_code=303)
async def logout(request: Request[Any, Any, Any]) -> Redirect:
    """End the session (the POST carries the session's CSRF token, checked by the router's guard)."""
    response = redirect(request, "/ui/login", "You are logged out.")
    response.cookies.append(ended(SESSION_COOKIE, request))
    return response
