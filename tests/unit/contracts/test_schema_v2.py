"""Schema version 2 of the contracts beside version 1: pledge payloads with the pledge's
terms, envelopes of either version read in the newest shape, submissions of either version
selected by `schema_version`, and the relay's translation at the right version."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from contracts import events_v1, events_v2, schema_export, submissions_v1, submissions_v2
from contracts.events_v1 import EventType
from services.registry.adapters.event_store import DealRegistryStore
from services.registry.application.idempotency import fingerprint
from services.registry.domain import values as domain
from services.registry.domain.deal import Deal
from services.registry.domain.values import PledgeTerms
from services.registry.relay.contract_events import to_envelope
from services.shared.errors import validation_details
from tests.unit.contracts.test_contracts import CONTRACTS, EXAMPLES, envelope_data
from tests.unit.registry.support import amount, new_deal, pledge, provenance, usd_of

TERMS = {"instrument": "debt", "tranches": [{"due_date": "2026-03-31", "amount": "50000000"},
                                            {"due_date": "2027-03-31", "amount": "150000000"}]}
DEAL = "6f1c1a7e-4c1b-4e1a-9b7e-2d3c4b5a6f70"


def test_instruments_are_the_domain_instruments() -> None:
    for ours in (events_v2.Instrument, submissions_v2.Instrument):
        assert [m.value for m in ours] == [m.value for m in domain.Instrument]
    assert submissions_v2.MAX_TRANCHES == domain.MAX_TRANCHES


# Payloads and envelopes.


@pytest.mark.parametrize("event_type", sorted(events_v2.CHANGED_IN_V2), ids=str)
def test_a_v2_pledge_payload_round_trips(event_type: EventType) -> None:
    model = events_v2.PAYLOAD_MODELS[event_type]
    payload = model.model_validate({**EXAMPLES[event_type], **TERMS})
    assert payload.instrument is events_v2.Instrument.DEBT  # type: ignore[attr-defined]
    assert model.model_validate_json(payload.model_dump_json()) == payload
    assert json.loads(payload.model_dump_json())["tranches"][0] == {
        "due_date": "2026-03-31", "amount": "50000000"}


@pytest.mark.parametrize("event_type", sorted(events_v2.CHANGED_IN_V2), ids=str)
def test_a_v2_pledge_payload_states_its_terms(event_type: EventType) -> None:
    model = events_v2.PAYLOAD_MODELS[event_type]
    with pytest.raises(ValidationError) as caught:
        model.model_validate(EXAMPLES[event_type])
    assert {e["loc"] for e in caught.value.errors()} == {("instrument",), ("tranches",)}
    unstated = model.model_validate({**EXAMPLES[event_type], "instrument": None,
                                     "tranches": []})
    assert unstated.instrument is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("event_type", list(EventType), ids=lambda t: t.value)
def test_a_v1_envelope_is_read_in_the_newest_shape(event_type: EventType) -> None:
    wire = events_v1.EventEnvelope.model_validate(
        envelope_data(event_type, EXAMPLES[event_type])).model_dump_json()
    envelope = events_v2.EventEnvelope.model_validate_json(wire)
    assert envelope.schema_version == 1
    payload = envelope.typed_payload()
    assert type(payload) is events_v2.PAYLOAD_MODELS[event_type]
    if event_type in events_v2.CHANGED_IN_V2:
        assert (payload.instrument, payload.tranches) == (None, [])  # type: ignore[attr-defined]
    # The same through latest_payload, for envelopes of the v1 class.
    v1 = events_v1.EventEnvelope.model_validate_json(wire)
    assert events_v2.latest_payload(v1.type, v1.schema_version, v1.payload) == payload


def test_a_v2_envelope_round_trips_and_types_its_payload() -> None:
    data = {**envelope_data(EventType.PLEDGE_MADE, {**EXAMPLES[EventType.PLEDGE_MADE],
                                                    **TERMS}), "schema_version": 2}
    envelope = events_v2.EventEnvelope.model_validate(data)
    again = events_v2.EventEnvelope.model_validate_json(envelope.model_dump_json())
    assert again == envelope
    payload = again.typed_payload()
    assert payload.tranches[1].amount == Decimal("150000000")  # type: ignore[attr-defined]
    assert isinstance(again, events_v1.EventEnvelope)  # the relay's isinstance checks hold


def test_a_v2_envelope_is_refused_by_a_v1_reader_and_an_unknown_version_by_both() -> None:
    data = {**envelope_data(EventType.PLEDGE_MADE, {**EXAMPLES[EventType.PLEDGE_MADE],
                                                    **TERMS}), "schema_version": 2}
    with pytest.raises(ValidationError):
        events_v1.EventEnvelope.model_validate(data)
    for model in (events_v1.EventEnvelope, events_v2.EventEnvelope):
        with pytest.raises(ValidationError):
            model.model_validate({**data, "schema_version": 3})
    with pytest.raises(ValueError, match="unknown schema_version"):
        events_v2.upcast_payload(EventType.PLEDGE_MADE, 3, {})


def test_a_v2_pledge_envelope_without_its_terms_does_not_type() -> None:
    envelope = events_v2.EventEnvelope.model_validate(
        {**envelope_data(EventType.PLEDGE_MADE, EXAMPLES[EventType.PLEDGE_MADE]),
         "schema_version": 2})
    with pytest.raises(ValidationError):
        envelope.typed_payload()


def test_upcasting_keeps_what_a_payload_states() -> None:
    stated = {**EXAMPLES[EventType.PLEDGE_MADE], **TERMS}
    assert events_v2.upcast_payload(EventType.PLEDGE_MADE, 1, stated) == stated
    assert events_v2.upcast_payload(EventType.PLEDGE_MADE, 2, stated) == stated
    withdrawn = EXAMPLES[EventType.PLEDGE_WITHDRAWN]
    assert events_v2.upcast_payload(EventType.PLEDGE_WITHDRAWN, 1, withdrawn) == withdrawn


def test_published_versions() -> None:
    assert {t for t in EventType if events_v2.schema_version_of(t) == 2} == {
        EventType.PLEDGE_MADE, EventType.PLEDGE_REVISED}


# Generated files.


def test_v2_schema_files_describe_the_v2_models() -> None:
    def load(path: str) -> dict[str, Any]:
        return json.loads((CONTRACTS / path).read_text(encoding="utf-8"))

    envelope = load(schema_export.ENVELOPE_V2_FILE)
    assert envelope["properties"]["schema_version"]["enum"] == [1, 2]
    v1_envelope = load(schema_export.ENVELOPE_FILE)
    assert v1_envelope["properties"]["schema_version"]["const"] == 1
    for event_type in events_v2.CHANGED_IN_V2:
        schema = load(schema_export.payload_file(event_type, 2))
        assert {"instrument", "tranches"} <= set(schema["required"])
        assert "instrument" not in load(schema_export.payload_file(event_type))["properties"]
    assert schema_export.payload_file(EventType.DEAL_CANCELLED, 2) == \
        schema_export.payload_file(EventType.DEAL_CANCELLED)
    submission = load(schema_export.SUBMISSION_V2_FILE)
    assert set(submission["discriminator"]["mapping"]) == {t.value for t in EventType}
    v2_pledge = submission["$defs"]["PledgeMadeInV2"]
    assert "instrument" in v2_pledge["required"]
    assert v2_pledge["properties"]["tranches"]["maxItems"] == submissions_v2.MAX_TRANCHES
    assert "schema_version" in submission["$defs"]["FirmRegisteredSubmissionV2"]["required"]
    receipt = load(schema_export.RECEIPT_FILE)
    assert receipt["properties"]["tree_size"]["anyOf"][0]["minimum"] == 1


# Submissions of either version.


def pledge_body(version: int | None = None, **payload: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": "p-1", "type": "pledge_made", "occurred_at": "2025-05-20T10:00:00+05:30",
        "payload": {"deal_id": DEAL, "firm": "tata-motors",
                    "amount": {"low": "100000000", "high": "400000000", "currency": "USD"},
                    **payload},
    }
    if version is not None:
        body["schema_version"] = version
    return body


def refusal(body: Any) -> tuple[str, str]:
    with pytest.raises(ValidationError) as caught:
        submissions_v2.validate_submission(body)
    first = validation_details(caught.value.errors())[0]
    return first["field"], first["rule"]


def test_submissions_are_selected_by_schema_version() -> None:
    v1 = submissions_v2.validate_submission(pledge_body())
    assert type(v1) is submissions_v1.PledgeMadeSubmission
    assert type(submissions_v2.validate_submission(pledge_body(1))) is \
        submissions_v1.PledgeMadeSubmission
    v2 = submissions_v2.validate_submission(pledge_body(2, **TERMS))
    assert type(v2) is submissions_v2.PledgeMadeSubmissionV2
    assert v2.payload.instrument is events_v2.Instrument.DEBT
    assert [t.due_date for t in v2.payload.tranches] == ["2026-03-31", "2027-03-31"]
    assert submissions_v2.is_deprecated(v1) and not submissions_v2.is_deprecated(v2)
    firm = {"event_id": "f-1", "type": "firm_registered", "schema_version": 2,
            "occurred_at": "2025-05-20T10:00:00Z",
            "payload": {"code": "tata-motors", "name": "Tata", "country": "IN",
                        "kind": "automaker"}}
    registered = submissions_v2.validate_submission(firm)
    assert type(registered) is submissions_v2.FirmRegisteredSubmissionV2
    assert not submissions_v2.is_deprecated(registered)
    assert not submissions_v2.is_deprecated({**firm, "schema_version": 1})
    assert submissions_v2.is_deprecated({"type": "pledge_revised"})


@pytest.mark.parametrize(("body", "field", "rule"), [
    (pledge_body(2), "payload.instrument", "missing"),
    (pledge_body(2, instrument="loan"), "payload.instrument", "enum"),
    (pledge_body(1, **TERMS), "payload.instrument", "extra_forbidden"),
    (pledge_body(None, instrument="debt"), "payload.instrument", "extra_forbidden"),
    (pledge_body(3, **TERMS), "schema_version", "literal_error"),
    (pledge_body(True, **TERMS), "schema_version", "literal_error"),  # type: ignore[arg-type]
    (pledge_body("2", **TERMS), "schema_version", "literal_error"),  # type: ignore[arg-type]
    (pledge_body(2, instrument="debt", tranches=[{"due_date": "2026-03-31"}]),
     "payload.tranches.0.amount", "missing"),
    (pledge_body(2, instrument="debt", tranches=[{"due_date": "2026-03-31", "amount": 5}]),
     "payload.tranches.0.amount", "decimal_string"),
    (pledge_body(2, instrument="debt", tranches=[{"due_date": "2026-03-31", "amount": "1",
                                                   "currency": "USD"}]),
     "payload.tranches.0.currency", "extra_forbidden"),
    (pledge_body(2, instrument="debt",
                 tranches=[{"due_date": f"2026-01-{d:02d}", "amount": "1"} for d in range(1, 29)]
                 * 5), "payload.tranches", "too_long"),
], ids=["v2-no-instrument", "unknown-instrument", "v1-with-terms", "unversioned-with-terms",
        "version-3", "version-true", "version-text", "tranche-no-amount", "tranche-number",
        "tranche-currency", "too-many-tranches"])
def test_a_submission_breaking_its_version_is_refused_naming_field_and_rule(
        body: dict[str, Any], field: str, rule: str) -> None:
    assert refusal(body) == (field, rule)


# Due dates: the range and calendar every date of a submission has (contracts.moments).
@pytest.mark.parametrize(("day", "taken"), [
    ("1900-01-01", True), ("2199-12-31", True), ("2000-02-29", True), ("2028-02-29", True),
    ("1899-12-31", False), ("2200-01-01", False), ("2100-02-29", False), ("1900-02-29", False),
    ("2027-02-29", False), ("2026-04-31", False), ("2026-3-31", False), ("20260331", False),
    ("2026-03-31T00:00:00Z", False), ("9999-12-31", False), ("0001-01-01", False),
])
def test_due_dates_are_taken_within_the_registry_s_date_range(day: str, taken: bool) -> None:
    body = pledge_body(2, instrument="grant", tranches=[{"due_date": day, "amount": "1"}])
    if taken:
        assert submissions_v2.validate_submission(body).payload.tranches[0].due_date == day
    else:
        assert refusal(body) == ("payload.tranches.0.due_date", "date_format")


def test_a_due_date_must_be_text() -> None:
    body = pledge_body(2, instrument="grant", tranches=[{"due_date": 20260331, "amount": "1"}])
    assert refusal(body) == ("payload.tranches.0.due_date", "date_format")


def test_a_v1_submission_keeps_its_fingerprint() -> None:
    """Receipts recorded before schema_version existed keep matching their retries."""
    implicit = submissions_v2.validate_submission(pledge_body())
    explicit = submissions_v2.validate_submission(pledge_body(1))
    assert "schema_version" not in implicit.model_dump()
    assert "schema_version" not in implicit.model_dump(mode="json")
    assert fingerprint(implicit) == fingerprint(explicit)
    v2 = submissions_v2.validate_submission(pledge_body(2, **TERMS))
    assert fingerprint(v2) != fingerprint(implicit)


def test_either_version_is_one_documented_body() -> None:
    adapter: TypeAdapter[Any] = submissions_v2.ANY_VERSION_SUBMISSION
    assert type(adapter.validate_python(pledge_body())) is submissions_v1.PledgeMadeSubmission
    assert type(adapter.validate_python(pledge_body(2, **TERMS))) is \
        submissions_v2.PledgeMadeSubmissionV2
    schema = adapter.json_schema()
    assert len(schema["oneOf"]) == 2
    assert schema["$defs"]["PledgeMadeSubmission"]["properties"]["schema_version"]["const"] == 1
    assert "schema_version" not in schema["$defs"]["PledgeMadeSubmission"].get("required", [])


def test_the_deprecation_header_is_rfc_9745() -> None:
    header = submissions_v2.deprecation_header()["Deprecation"]
    assert header == f"@{int(submissions_v2.V1_PLEDGES_DEPRECATED_AT.timestamp())}"
    assert submissions_v2.V1_PLEDGES_DEPRECATED_AT == datetime(2026, 12, 1, tzinfo=UTC)


# The relay's translation.


def test_the_relay_publishes_pledge_events_at_v2_with_their_terms() -> None:
    deal = new_deal()
    value = amount("100", "200")
    stated = PledgeTerms.of("equity", [(datetime(2026, 3, 31).date(), Decimal("50.5"))], value)
    deal.make_pledge("pl-1", "tata-motors", "IN", value, usd_of(value), provenance("p"), stated)
    proposed, made = deal.pending_events
    envelope = to_envelope(made, 7)
    assert envelope is not None and envelope.schema_version == 2
    assert envelope.payload["instrument"] == "equity"
    assert envelope.payload["tranches"] == [{"due_date": "2026-03-31", "amount": "50.5"}]
    assert envelope.hash == made.hash()
    again = events_v2.EventEnvelope.model_validate_json(envelope.model_dump_json())
    assert again.typed_payload().tranches[0].amount == Decimal("50.5")  # type: ignore[attr-defined]
    deal_envelope = to_envelope(proposed, 6)
    assert deal_envelope is not None and deal_envelope.schema_version == 1


def test_the_relay_publishes_a_v1_stored_pledge_at_v2_with_no_terms() -> None:
    store = DealRegistryStore(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    deal = new_deal()
    pledge(deal)
    made = deal.pending_events[-1]
    stored = store.mapper.to_stored_event(made)
    fields = json.loads(stored.state)
    for name in ("instrument", "tranches", "class_version"):
        fields.pop(name)
    v1 = type(stored)(stored.originator_id, stored.originator_version, stored.topic,
                      json.dumps(fields).encode())
    read = store.mapper.to_domain_event(v1)
    assert isinstance(read, Deal.PledgeMade)
    envelope = to_envelope(read, 3)
    assert envelope is not None and envelope.schema_version == 2
    assert (envelope.payload["instrument"], envelope.payload["tranches"]) == (None, [])
    assert envelope.hash == read.hash() != made.hash()

