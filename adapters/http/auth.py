"""Bearer-token authentication for everything under /v1 (SPEC §4)."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="gnomon"'}


def bearer_guard(tokens: Sequence[str]) -> Guard:
    """A guard admitting `Authorization: Bearer <token>` for one of `tokens`; 401 otherwise."""
    known = [t.encode() for t in tokens if t]

    def require_token(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        scheme, _sep, credentials = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise NotAuthorizedException(detail="send Authorization: Bearer <token>", headers=CHALLENGE)
        offered = credentials.strip().encode()
        # Compare against every token, without stopping at a match: the time taken says nothing about which.
        matches = [hmac.compare_digest(offered, token) for token in known]
        if not any(matches):
            raise NotAuthorizedException(detail="the bearer token is not valid",
                                         headers={"WWW-Authenticate": 'Bearer realm="gnomon", error="invalid_token"'})

    return require_token
