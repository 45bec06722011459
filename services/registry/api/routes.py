"""The write API: partners record one event per request, or a batch of them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, Field, ValidationError

from contracts.submissions_v1 import Receipt
from contracts.submissions_v2 import (
    ANY_VERSION_SUBMISSION,
    V1_PLEDGES_DEPRECATED_AT,
    deprecation_header,
    is_deprecated,
    validate_submission,
)
from services.registry.api.errors import as_api_error
from services.registry.api.json_body import JSON, NDJSON, media_type, parse_json
from services.registry.api.request_schemas import install_request_schemas, json_request_body
from services.registry.application.authority import Authority
from services.registry.application.commands import RecordPartnerEvent
from services.registry.application.handlers import RecordingService
from services.registry.application.recording_queue import Outcome, RecordingQueue
from services.registry.audit.proofs import tree_sizes_covering
from services.registry.audit.routes import install_audit_api
from services.shared.api_keys import ApiKeyStore, Principal
from services.shared.direct_route import install_direct_route
from services.shared.errors import ApiError, Error, ErrorBody, error_responses, validation_error
from services.shared.http_basics import HttpMetrics
from services.shared.key_auth import Writer, writer_principal

MAX_BATCH_ITEMS = 1000

router = APIRouter(prefix="/v1", tags=["write"])

class BatchItemAnswer(BaseModel):
    """What `POST /v1/events` would have answered this item: a receipt, or an error."""

    index: int = Field(ge=0, description="The item's place in the batch, from 0")
    status: int = Field(description="201, or the status of the item's refusal")
    receipt: Receipt | None = None
    error: Error | None = None


class BatchAnswer(BaseModel):
    items: list[BatchItemAnswer]
    recorded: int = Field(ge=0, description="Items recorded now (not replays)")
    failed: int = Field(ge=0, description="Items refused")


WRITE_ERRORS = {
    **error_responses(400, 401, 403, 409, 413, 415, 422, 431, 503),
    403: {"model": ErrorBody, "description": "The key's role may not write, or a partner key "
          "does not act for the firms the event needs (code `forbidden`; `rule` acts_for_firm, "
          "party_to_deal, party_to_agreement, own_pledge or attended_meeting; `firms` names "
          "them, `acts_for` the key's own)"},
}


# v1 pledge submissions are deprecated (contracts.submissions_v2): their answers say so.
DEPRECATION_HEADER = {"Deprecation": {
    "description": "On answers to a v1 `pledge_made` or `pledge_revised` (no schema_version, or "
                   "1): that form is deprecated since this date (RFC 9745: `@` and Unix "
                   f"seconds, {V1_PLEDGES_DEPRECATED_AT.date()}); send schema_version 2",
    "schema": {"type": "string", "pattern": r"^@[0-9]+$",
               "examples": [deprecation_header()["Deprecation"]]},
}}


def submission_of(item: Any) -> Any:
    """The validated submission (v1 or v2) in a parsed JSON value, or the 422 naming what is
    wrong."""
    try:
        return validate_submission(item)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


def deprecated_form(item: Any) -> bool:
    """Whether a parsed JSON value is a v1 pledge submission, valid or not (a refusal of one
    is answered with the Deprecation header too)."""
    return isinstance(item, dict) and is_deprecated(item)


@router.post(
    "/events", status_code=201, response_model=Receipt,
    responses={201: {"headers": DEPRECATION_HEADER}, **WRITE_ERRORS, **error_responses(404)},
    summary="Record a partner event", openapi_extra=json_request_body("Submission"),
)
async def record_event(request: Request, principal: Writer) -> Response:
    """Record one event. `type` selects the payload. A retry with the same `event_id` and the
    same meaning returns the original receipt (201, `replayed: true`), even while the first
    attempt is in flight; the same id with another meaning is 409 `event_id_reused`.
    A partner key records only for the firms it is bound to: another firm's event is 403
    `forbidden`, naming the firms and the rule (`acts_for_firm`, `party_to_deal`,
    `party_to_agreement`, `own_pledge`, `attended_meeting`).

    `schema_version` 2 (contracts/submissions_v2) states a pledge's `instrument` and
    `tranches`; without it (or with 1) the event is v1. A v1 `pledge_made` or
    `pledge_revised` is deprecated: every answer to one carries a `Deprecation` header."""
    media_type(request, (JSON,))
    item = parse_json(await request.body())
    # What was refused, for the refusal log (services.shared.refusals), if it says.
    request.state.event_type = event_type_of(item)
    deprecated = deprecated_form(item)
    try:
        command = RecordPartnerEvent(principal.name, submission_of(item),
                                     authority_of(request, principal))
        (outcome,) = await _recorded(request, [command])
        if not isinstance(outcome, Receipt):
            raise as_api_error(outcome) from outcome
        receipt = outcome
    except ApiError as refusal:
        if deprecated:
            refusal.headers = {**(refusal.headers or {}), **deprecation_header()}
        raise
    headers = {"X-Log-Position": str(receipt.position)}
    if deprecated:
        headers.update(deprecation_header())
    if receipt.replayed:
        headers["Idempotent-Replayed"] = "true"
    # The receipt is built and valid: answering with its JSON spares validating it again.
    return Response(receipt.model_dump_json(), 201, headers, media_type="application/json")


@router.post(
    "/events/batch", response_model=BatchAnswer,
    responses={200: {"headers": DEPRECATION_HEADER}, **WRITE_ERRORS},
    summary="Record many partner events",
    openapi_extra=json_request_body("Submission", batch_of=MAX_BATCH_ITEMS),
)
async def record_events(request: Request, principal: Writer,
                        response: Response) -> dict[str, Any]:
    """Record up to 1,000 events, in order, from a JSON array or NDJSON (one event per line).
    Each item is answered on its own, exactly as `POST /v1/events` would answer it: a bad item
    never stops the others, and a retried batch replays the items already recorded. The
    answer carries the `Deprecation` header if any item is a v1 pledge submission."""
    kind = media_type(request, (JSON, NDJSON))
    items = _batch_items(await request.body(), kind)
    if any(deprecated_form(item) for item in items):
        response.headers.update(deprecation_header())
    answers: dict[int, dict[str, Any]] = {}
    valid: dict[int, Any] = {}
    for index, item in enumerate(items):
        try:
            valid[index] = submission_of(item)
        except ApiError as refusal:
            answers[index] = {"status": refusal.status, **refusal.body()}
    authority = authority_of(request, principal)
    outcomes = await _recorded(request, [RecordPartnerEvent(principal.name, submission, authority)
                                         for submission in valid.values()])
    recorded = 0
    for index, outcome in zip(valid, outcomes, strict=True):
        if isinstance(outcome, Receipt):
            answers[index] = {"status": 201, "receipt": outcome.model_dump(mode="json")}
            if not outcome.replayed:
                recorded += 1
            continue
        error = as_api_error(outcome)
        if not isinstance(error, ApiError):
            raise outcome
        answers[index] = {"status": error.status, **error.body()}
    ordered = [{"index": index, **answers[index]} for index in range(len(items))]
    refused = [answer for answer in ordered if answer["status"] >= 400]
    refusals = request.app.state.refusals
    for answer in refused:
        refusals.record(request.scope, answer["error"], index=answer["index"],
                        event_type=event_type_of(items[answer["index"]]))
    failed = len(refused)
    return {"items": ordered, "recorded": recorded, "failed": failed}


async def _recorded(request: Request, commands: list[RecordPartnerEvent]) -> list[Outcome]:
    """The commands' outcomes, from the recording queue; an error that stopped the whole
    pass (the store unreachable) is raised as its API error."""
    queue: RecordingQueue = request.app.state.recording_queue
    try:
        return await asyncio.wrap_future(queue.submit(commands))
    except Exception as exc:  # noqa: BLE001 - translated or re-raised by as_api_error
        raise as_api_error(exc) from exc


def authority_of(request: Request, principal: Principal) -> Authority:
    """The firms the request's key may record for."""
    return Authority.of_key(principal.name, principal.role, principal.firms,
                            request.app.state.settings.unbound_partner_keys)


def event_type_of(item: Any) -> Any:
    return item.get("type") if isinstance(item, dict) else None


def _batch_items(body: bytes, kind: str) -> list[Any]:
    if kind == NDJSON:
        lines = [line for line in body.split(b"\n") if line.strip()]
        if len(lines) > MAX_BATCH_ITEMS:
            raise ApiError(422, "invalid_request", f"at most {MAX_BATCH_ITEMS} events per batch",
                           field="body", rule="max_items")
        items = [parse_json(line, field=f"line {number}")
                 for number, line in enumerate(lines, start=1)]
    else:
        items = parse_json(body)
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
    every recording pass that recorded a new event (embedded mode wakes its projection
    feed)."""
    appended = Counter("dealreg_events_appended", "Events recorded", ["type"],
                       registry=metrics.registry)
    Gauge("dealreg_log_head_position", "Last position in the event log",
          registry=metrics.registry).set_function(service.store.head_position)

    def after_pass(outcomes: list[Outcome]) -> list[Outcome]:
        """Once per recording pass, in its thread: count the new events and wake what
        follows the log (once, not once per request), and name in each receipt the tree
        size that will cover its event (one read of the log's positions)."""
        receipts = [outcome for outcome in outcomes if isinstance(outcome, Receipt)]
        new = [receipt for receipt in receipts if not receipt.replayed]
        for receipt in new:
            appended.labels(receipt.type).inc()
        if new:
            follower.wake()
            if on_recorded is not None:
                on_recorded()
        sizes = iter(tree_sizes_covering(service.store, checkpoints,
                                         [r.position for r in receipts], follower.known_head))
        return [outcome.model_copy(update={"tree_size": next(sizes)})
                if isinstance(outcome, Receipt) else outcome for outcome in outcomes]

    app.state.api_keys = keys
    app.state.recording_service = service
    app.include_router(router)

    async def record_event_directly(request: Request) -> Response:
        return await record_event(request, await writer_principal(request, None))

    declared = next(r for r in router.routes
                    if isinstance(r, APIRoute) and r.endpoint is record_event)
    install_direct_route(app, declared, "POST", record_event_directly)
    install_request_schemas(app, {"Submission": ANY_VERSION_SUBMISSION})
    install_audit_api(app, service.store)
    checkpoints = app.state.audit_checkpoints
    follower = app.state.tree_head_follower
    app.state.recording_queue = RecordingQueue(service, after_pass)
