"""RFC 9457 problem details: every error the API returns, whatever raised it, is `application/problem+json`.

One handler per family: domain errors (the core's verdict), Litestar's HTTP exceptions (routing, auth, body
size, parameter validation) and a catch-all that logs and answers 500 - a bug, never an expected outcome.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, Final

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.types import ExceptionHandlersMap

from domain.errors import Conflict, DomainError, InvalidInput, NotFound, Unavailable

PROBLEM_JSON: Final = "application/problem+json"
log = logging.getLogger("gnomon.http")

_DOMAIN: Final[tuple[tuple[type[DomainError], int, str], ...]] = (
    (InvalidInput, 422, "urn:gnomon:problem:invalid-input"),
    (NotFound, 404, "urn:gnomon:problem:not-found"),
    (Conflict, 409, "urn:gnomon:problem:conflict"),
    (Unavailable, 503, "urn:gnomon:problem:unavailable"),
)


class FieldError(msgspec.Struct):
    field: str  # a path into the request: "jobs[3].priority", "limit"
    message: str


class Problem(msgspec.Struct):
    """RFC 9457 problem details; `errors` lists the fields at fault in a 422."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[FieldError] | None = None


_MEANING: Final = {400: "The body is not JSON", 401: "No valid bearer token", 404: "No such resource",
                   409: "Conflicts with the stored state", 413: "The body is too large",
                   415: "The body is not application/json", 422: "Invalid input: see `errors`",
                   503: "Storage is unavailable; retry"}


def documented(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problems a route can answer (replacing Litestar's own 400 shape)."""
    return {status: ResponseSpec(Problem, description=_MEANING[status], media_type=PROBLEM_JSON,
                                 generate_examples=False) for status in (*statuses, 401, 503)}


READS: Final = documented(404, 422)
WRITES: Final = documented(400, 404, 409, 413, 415, 422)


def problem(request: Request[Any, Any, Any], status: int, detail: str, *, type_: str = "about:blank",
            errors: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None) -> Response[Any]:
    body: dict[str, Any] = {"type": type_, "title": HTTPStatus(status).phrase, "status": status,
                            "detail": detail, "instance": request.url.path}
    if errors is not None:
        body["errors"] = errors
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def field_errors(errors: dict[str, str]) -> list[dict[str, str]]:
    return [{"field": field, "message": message} for field, message in errors.items()]


def on_domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    status, type_ = next(((status, type_) for kind, status, type_ in _DOMAIN if isinstance(exc, kind)),
                         (400, "urn:gnomon:problem:bad-request"))
    if isinstance(exc, InvalidInput):
        return problem(request, status, _summary(exc.errors), type_=type_, errors=field_errors(exc.errors))
    if status == 503:  # the driver's message may name hosts: it goes to the log, not to the client
        log.warning("storage unavailable on %s %s: %s", request.method, request.url.path, exc)
        return problem(request, status, "storage is unavailable right now; retry shortly", type_=type_,
                       headers={"Retry-After": "1"})
    return problem(request, status, str(exc), type_=type_)


def on_validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Litestar's own parameter validation (query, path, headers): 422 with the parameter named."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    errors = [{"field": _public_name(request, str(e.get("key") or e.get("source") or "request")),
               "message": str(e.get("message", "")).replace("`", "")}
              for e in extra if isinstance(e, dict)]
    errors = errors or [{"field": "request", "message": exc.detail}]
    return problem(request, 422, _summary({e["field"]: e["message"] for e in errors}),
                   type_="urn:gnomon:problem:invalid-input", errors=errors)


def _summary(errors: dict[str, str], shown: int = 5) -> str:
    """The first few field errors in a sentence; `errors` has them all (a batch may have thousands)."""
    parts = [f"{field}: {message}" for field, message in list(errors.items())[:shown]]
    more = f"; and {len(errors) - shown} more" if len(errors) > shown else ""
    return "the request is not valid: " + "; ".join(parts) + more


def _public_name(request: Request[Any, Any, Any], key: str) -> str:
    """The name the client used: a parameter may be renamed (`state` is reserved in Litestar)."""
    try:
        definition = request.route_handler.parsed_fn_signature.parameters.get(key)
    except Exception:  # no handler was matched: keep the key as it is
        return key
    return getattr(getattr(definition, "kwarg_definition", None), "name", None) or key


def on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.detail, exc_info=exc)
    detail = exc.detail
    if detail == HTTPStatus(exc.status_code).phrase:  # Litestar's bare phrase: say what it means here
        detail = {404: f"nothing at {request.url.path}",
                  405: f"{request.method} is not allowed on {request.url.path}",
                  413: "the request body is larger than this API accepts"}.get(exc.status_code, detail)
    return problem(request, exc.status_code, detail, headers=exc.headers)


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(request, 500, "an unexpected error occurred; it has been logged")


HANDLERS: Final[ExceptionHandlersMap] = {
    DomainError: on_domain_error,
    ValidationException: on_validation_error,
    HTTPException: on_http_error,
    Exception: on_unexpected,
}
