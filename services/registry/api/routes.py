"""The write API: partners record one event per request."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request, Response

from contracts.submissions_v1 import Receipt, Submission
from services.registry.api.errors import as_api_error
from services.registry.application.commands import RecordPartnerEvent
from services.registry.application.handlers import RecordingService
from services.shared.api_keys import Writer

router = APIRouter(prefix="/v1", tags=["write"])

ERROR_RESPONSES: dict[int | str, dict[str, str]] = {
    401: {"description": "No key, or an unknown key"},
    403: {"description": "The key's role may not write"},
    404: {"description": "The deal named by payload.deal_id does not exist"},
    409: {"description": "Stale expected_version, reused event_id, or a state conflict"},
    413: {"description": "Body too large"},
    422: {"description": "Malformed body or a broken rule; the body names field and rule"},
}


@router.post(
    "/events", status_code=201, response_model=Receipt, responses=ERROR_RESPONSES,
    summary="Record a partner event",
)
def record_event(
    request: Request,
    response: Response,
    principal: Writer,
    submission: Annotated[Submission, Body()],
) -> Receipt:
    """Record one event. `type` selects the payload. A retry with the same `event_id` and body
    returns the original receipt (with `replayed: true`); the same id with another body is 409."""
    service: RecordingService = request.app.state.recording_service
    try:
        receipt = service.record(RecordPartnerEvent(principal.name, submission))
    except Exception as exc:  # noqa: BLE001 - translated or re-raised by as_api_error
        raise as_api_error(exc) from exc
    if receipt.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        request.app.state.events_recorded(receipt)
    response.headers["X-Log-Position"] = str(receipt.position)
    return receipt
