"""How the write side's refusals read over HTTP."""

from __future__ import annotations

from services.registry.application.errors import (
    AlreadyExists,
    IdempotencyConflict,
    NotAuthorized,
    NotFound,
    VersionConflict,
)
from services.registry.domain.errors import DomainError, InvalidValue, UnknownReference
from services.shared.errors import ApiError


def as_api_error(exc: Exception) -> Exception:
    """The ApiError a refusal maps to; anything unexpected comes back unchanged."""
    if isinstance(exc, DomainError):
        status = 422 if isinstance(exc, InvalidValue | UnknownReference) else 409
        return ApiError(status, exc.code, exc.message, field=_body_field(exc.field), rule=exc.rule)
    if isinstance(exc, VersionConflict):
        return ApiError(409, "version_conflict", str(exc), field="expected_version",
                        rule="current_version", expected_version=exc.expected,
                        actual_version=exc.actual)
    if isinstance(exc, IdempotencyConflict):
        return ApiError(409, "event_id_reused", str(exc), field="event_id", rule="same_body")
    if isinstance(exc, AlreadyExists):
        return ApiError(409, "already_exists", str(exc), field=exc.field, rule="new_aggregate")
    if isinstance(exc, NotAuthorized):
        return ApiError(403, "forbidden", exc.message, field=exc.field, rule=exc.rule,
                        firms=exc.firms, acts_for=exc.acts_for)
    if isinstance(exc, NotFound):
        return ApiError(404, "not_found", str(exc), field=exc.field, rule="exists")
    return exc


def _body_field(field: str) -> str:
    """Domain rules name payload fields; the partner needs the path within the request body."""
    if field == "type" or field.startswith("payload"):
        return field
    return f"payload.{field}"
