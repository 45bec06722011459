"""The one error format every endpoint answers with.

    {"error": {"status": 422, "code": "invalid_value", "message": "...",
               "field": "payload.amount.low", "rule": "positive", "details": [...]}}
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.events_v1 import EventType
from services.shared.allowed_methods import allowed_methods

log = logging.getLogger("dealreg.http")

# What a client gets for an error no handler knew: the service could not do it, retry later.
UNEXPECTED_STATUS = 503


class ApiError(Exception):
    """An error with its HTTP status, raised anywhere below a route."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        rule: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.rule = rule
        self.extra = extra
        # Headers the answer carries besides the body (Retry-After), set by whoever raises.
        self.headers: dict[str, str] | None = None

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.code, self.message, field=self.field,
                          rule=self.rule, **self.extra)


class ErrorDetail(BaseModel):
    field: str
    rule: str
    message: str


class Error(BaseModel):
    # Some refusals add what the client needs to act on (actual_version, position, ...).
    model_config = ConfigDict(extra="allow")

    status: int = Field(ge=400, le=599)
    code: str = Field(description="Stable machine-readable name of the refusal")
    message: str
    field: str | None = Field(default=None, description="Where in the request: a body path, "
                              "a query parameter or a header")
    rule: str | None = Field(default=None, description="The rule the field broke")
    details: list[ErrorDetail] | None = None


class ErrorBody(BaseModel):
    """What every refusal answers, whatever the endpoint."""

    error: Error


# What each status means wherever it is answered; routes list the ones they can answer.
STATUS_MEANINGS: dict[int, str] = {
    400: "The request is not HTTP the service can read (bad encoding)",
    401: "No API key, or an unknown one",
    403: "The key's role may not do this",
    404: "What the path or body names does not exist",
    409: "A conflict: stale expected_version, reused event_id, a state conflict, or not yet "
         "visible (retry)",
    413: "The body is larger than the service accepts",
    415: "The body is not JSON (send Content-Type: application/json)",
    422: "The request breaks a rule; the body names the field and the rule",
    429: "Too many failed authentications from this address; retry after Retry-After seconds",
    431: "The request's headers are too large, or too many",
    503: "A dependency (database, broker) is unavailable; retry later",
}


RETRY_AFTER = {"Retry-After": {"description": "Seconds until the address may try a key again",
                               "schema": {"type": "integer", "minimum": 1}}}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these statuses, each with the one error body. Wherever a key
    is checked (401), an address that failed too often is refused first (429)."""
    if 401 in statuses:
        statuses = (*statuses, 429)
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorBody, "description": STATUS_MEANINGS[status]}
        for status in statuses}
    if 429 in responses:
        responses[429]["headers"] = RETRY_AFTER
    return responses


def error_body(
    status: int, code: str, message: str, field: str | None = None, rule: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    error: dict[str, Any] = {"status": status, "code": code, "message": message}
    if field is not None:
        error["field"] = field
    if rule is not None:
        error["rule"] = rule
    error.update(extra)
    return {"error": error}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **kw: Any
) -> JSONResponse:
    body = error_body(status, code, message, **kw)
    return JSONResponse(body, status_code=status, headers=headers)


# Where FastAPI says a parameter was: our errors name the parameter alone ("limit", "deal_id").
_PLACES = {"body", "query", "path", "header", "cookie"}
# The discriminator tag pydantic inserts in a submission's path ("pledge_made").
_TAGS = {event_type.value for event_type in EventType}


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = list(loc[1:] if loc and loc[0] in _PLACES else loc)
    return ".".join(str(p) for p in parts if p not in _TAGS) or "body"


def validation_details(errors: Any) -> list[dict[str, Any]]:
    """pydantic's errors as {field, rule, message}, fields as paths within the body."""
    return [
        {"field": _location(e.get("loc", ())), "rule": e.get("type", "invalid"),
         "message": e.get("msg", "")}
        for e in errors
    ] or [{"field": "body", "rule": "invalid", "message": "invalid body"}]


def validation_error(errors: Any) -> ApiError:
    """The 422 for a body pydantic refused, led by its first error."""
    details = validation_details(errors)
    first = details[0]
    return ApiError(422, "invalid_request", f"{first['field']}: {first['message']}",
                    field=first["field"], rule=first["rule"], details=details)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        error = validation_error(exc.errors())
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            # Starlette names only the first matching route's methods.
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return error_response(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug or an outage below us: log it whole, tell the client only what it can act on.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(UNEXPECTED_STATUS, "unavailable",
                              "the service could not complete the request")
