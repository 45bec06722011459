"""The write API: partners record one event per request, or a batch of them."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Request, Response
from prometheus_client import Counter, Gauge
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from contracts.submissions_v1 import Receipt, Submission
from services.registry.api.errors import as_api_error
from services.registry.application.commands import RecordPartnerEvent
from services.registry.application.handlers import RecordingService
from services.registry.audit.routes import install_audit_api
from services.shared.api_keys import ApiKeyStore, Writer
from services.shared.errors import ApiError, validation_error
from services.shared.http_basics import HttpMetrics

MAX_BATCH_ITEMS = 1000
SUBMISSION = TypeAdapter(Submission)

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
    principal: Writer,
    submission: Annotated[Submission, Body()],
) -> Response:
    """Record one event. `type` selects the payload. A retry with the same `event_id` and body
    returns the original receipt (with `replayed: true`); the same id with another body is 409."""
    service: RecordingService = request.app.state.recording_service
    try:
        receipt = service.record(RecordPartnerEvent(principal.name, submission))
    except Exception as exc:  # noqa: BLE001 - translated or re-raised by as_api_error
        raise as_api_error(exc) from exc
    headers = {"X-Log-Position": str(receipt.position)}
    if receipt.replayed:
        headers["Idempotent-Replayed"] = "true"
    else:
        request.app.state.events_recorded(receipt)
    # The receipt is built and valid: answering with its JSON spares validating it again.
    return Response(receipt.model_dump_json(), 201, headers, media_type="application/json")


@router.post(
    "/events/batch", responses=ERROR_RESPONSES, summary="Record many partner events",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "array", "maxItems": MAX_BATCH_ITEMS,
                                        "items": {"type": "object", "description":
                                                  "one event, as POST /v1/events takes it"}}},
        "application/x-ndjson": {"schema": {"type": "string"}},
    }}},
)
async def record_events(request: Request, principal: Writer) -> dict[str, Any]:
    """Record up to 1,000 events, in order, from a JSON array or NDJSON (one event per line).
    Each item is answered on its own, exactly as `POST /v1/events` would answer it: a bad item
    never stops the others, and a retried batch replays the items already recorded."""
    items = _batch_items(await request.body(), request.headers.get("content-type", ""))
    answers: dict[int, dict[str, Any]] = {}
    valid: dict[int, Any] = {}
    for index, item in enumerate(items):
        try:
            valid[index] = SUBMISSION.validate_python(item)
        except ValidationError as exc:
            answers[index] = {"status": 422, **validation_error(exc.errors()).body()}
    service: RecordingService = request.app.state.recording_service
    outcomes = await run_in_threadpool(service.record_many, principal.name, list(valid.values()))
    recorded = 0
    for index, outcome in zip(valid, outcomes, strict=True):
        if isinstance(outcome, Receipt):
            answers[index] = {"status": 201, "receipt": outcome.model_dump(mode="json")}
            if not outcome.replayed:
                recorded += 1
                request.app.state.events_recorded(outcome)
            continue
        error = as_api_error(outcome)
        if not isinstance(error, ApiError):
            raise outcome
        answers[index] = {"status": error.status, **error.body()}
    ordered = [{"index": index, **answers[index]} for index in range(len(items))]
    failed = sum(1 for answer in ordered if answer["status"] >= 400)
    return {"items": ordered, "recorded": recorded, "failed": failed}


def _batch_items(body: bytes, content_type: str) -> list[Any]:
    if "ndjson" in content_type:
        lines = [line for line in body.splitlines() if line.strip()]
        items: list[Any] = []
        for number, line in enumerate(lines, start=1):
            try:
                items.append(json.loads(line))
            except ValueError:
                raise ApiError(422, "invalid_request", f"line {number} is not JSON",
                               field=f"line {number}", rule="json") from None
    else:
        try:
            items = json.loads(body)
        except ValueError:
            raise ApiError(422, "invalid_request", "the body is not JSON", field="body",
                           rule="json") from None
        if not isinstance(items, list):
            raise ApiError(422, "invalid_request", "send a JSON array of events (or NDJSON)",
                           field="body", rule="array")
    if not items:
        raise ApiError(422, "invalid_request", "the batch is empty", field="body",
                       rule="min_items")
    if len(items) > MAX_BATCH_ITEMS:
        raise ApiError(422, "invalid_request", f"at most {MAX_BATCH_ITEMS} events per batch",
                       field="body", rule="max_items")
    return items


def install_write_api(
    app: FastAPI,
    service: RecordingService,
    keys: ApiKeyStore,
    metrics: HttpMetrics,
    on_recorded: Callable[[], object] | None = None,
) -> None:
    """Mount the write routes with what they need, and their metrics. `on_recorded` runs after
    every new event (embedded mode wakes its projection feed)."""
    appended = Counter("dealreg_events_appended", "Events recorded", ["type"],
                       registry=metrics.registry)
    Gauge("dealreg_log_head_position", "Last position in the event log",
          registry=metrics.registry).set_function(service.store.head_position)

    def events_recorded(receipt: Receipt) -> None:
        appended.labels(receipt.type).inc()
        if on_recorded is not None:
            on_recorded()

    app.state.api_keys = keys
    app.state.recording_service = service
    app.state.events_recorded = events_recorded
    app.include_router(router)
    install_audit_api(app, service.store)
