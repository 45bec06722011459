"""The contracts hold together: generated files are current, every event type has a model,
a schema file and an AsyncAPI message, and the models round-trip and refuse what they should."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from pydantic import TypeAdapter, ValidationError

from contracts import schema_export
from contracts.events_v1 import (
    PAYLOAD_MODELS,
    SCHEMA_VERSION,
    EventEnvelope,
    EventType,
    Payload,
)
from contracts.events_v2 import schema_version_of
from contracts.submissions_v1 import Receipt, Submission

CONTRACTS = schema_export.CONTRACTS_DIR

MONEY = {"low": "100000000", "high": "400000000", "currency": "USD"}
USD = {"low": "100000000", "high": "400000000", "units_per_usd": "1", "rate_source": "identity"}
INR = {"low": "8600000000", "high": "35000000000", "currency": "INR"}
INR_USD = {"low": "103000000.5", "high": "419000000.25", "units_per_usd": "83.5",
           "rate_source": "RBI reference rate 2025-08-29"}

EXAMPLES: dict[EventType, dict[str, Any]] = {
    EventType.FIRM_REGISTERED: {
        "code": "tata-motors", "name": "Tata Motors", "country": "IN", "kind": "automaker",
    },
    EventType.MEETING_HELD: {
        "title": "India-Japan economic forum", "location": "Tokyo", "closed_door": True,
        "attendees": ["tata-motors", "toyota"], "government_bodies": ["METI"],
        "sectors": ["recycling"], "summary": "Critical minerals",
    },
    EventType.DEAL_PROPOSED: {
        "title": "EV recycling JV", "format": "joint_venture", "sector": "recycling",
        "parties": ["tata-motors", "toyota"], "description": "End-of-life EV parts",
    },
    EventType.PLEDGE_MADE: {
        "pledge_id": "p-1", "firm": "toyota", "firm_country": "JP", "amount": MONEY, "usd": USD,
    },
    EventType.PLEDGE_REVISED: {
        "pledge_id": "p-1", "amount": INR, "usd": INR_USD, "reason": "Second phase",
    },
    EventType.PLEDGE_WITHDRAWN: {"pledge_id": "p-1", "reason": "Board decision"},
    EventType.TECH_TRANSFER_SIGNED: {
        "technology": "Li-ion cell chemistry", "licensor": "toyota", "licensee": "tata-motors",
    },
    EventType.JOINT_VENTURE_FORMED: {
        "venture_name": "Green Metals", "equity": {"toyota": "51.5", "tata-motors": "48.5"},
    },
    EventType.FACILITY_ANNOUNCED: {
        "facility": "Pune recycling plant", "location": "Pune", "capacity": "20 kt/yr",
        "materials": ["platinum", "palladium"],
    },
    EventType.DEAL_CANCELLED: {"reason": "Regulatory refusal"},
}


def example_payload(event_type: EventType) -> Payload:
    """The example as a model, keeping only the fields the model declares (an example may
    carry a field a model does not have yet)."""
    model = PAYLOAD_MODELS[event_type]
    data = {k: v for k, v in EXAMPLES[event_type].items() if k in model.model_fields}
    return model.model_validate(data)


def envelope_data(event_type: EventType, payload: dict[str, Any]) -> dict[str, Any]:
    at = datetime(2025, 8, 29, 9, 0, tzinfo=UTC)
    return {
        "event_id": "evt-1", "type": event_type.value, "schema_version": SCHEMA_VERSION,
        "aggregate_id": str(uuid4()), "aggregate_version": 1, "position": 7,
        "occurred_at": at.isoformat(), "recorded_at": at.isoformat(),
        "recorded_by": "partner-test", "previous_hash": "0" * 64, "hash": "a" * 64,
        "payload": payload,
    }


# --- Generated files ------------------------------------------------------------------------


def test_committed_generated_files_match_the_models() -> None:
    problems = schema_export.stale_files()
    assert problems == [], (
        "contracts/schemas or contracts/asyncapi.yaml are out of date with the models: "
        f"{problems}. Run `python -m contracts.schema_export` and commit the result."
    )


def test_check_reports_stale_missing_and_unexpected_files(tmp_path: Path) -> None:
    assert schema_export.main(["--root", str(tmp_path)]) == 0
    assert schema_export.main(["--check", "--root", str(tmp_path)]) == 0
    (tmp_path / schema_export.ENVELOPE_FILE).write_text("{}\n", encoding="utf-8")
    (tmp_path / schema_export.payload_file(EventType.DEAL_CANCELLED)).unlink()
    (tmp_path / schema_export.VERSION_DIR / "payloads" / "gone.json").write_text("{}")
    assert schema_export.stale_files(tmp_path) == [
        f"stale: {schema_export.ENVELOPE_FILE}",
        f"missing: {schema_export.payload_file(EventType.DEAL_CANCELLED)}",
        f"unexpected: {schema_export.VERSION_DIR}/payloads/gone.json",
    ]
    assert schema_export.main(["--check", "--root", str(tmp_path)]) == 1
    assert schema_export.main(["--root", str(tmp_path)]) == 0
    assert schema_export.stale_files(tmp_path) == []


def test_generation_is_deterministic() -> None:
    first, second = schema_export.generated_files(), schema_export.generated_files()
    assert first == second
    for path, text in first.items():
        assert text.endswith("\n") and not text.endswith("\n\n"), path
        if path.endswith(".json"):
            assert text == json.dumps(json.loads(text), indent=2, sort_keys=True,
                                      ensure_ascii=False) + "\n", path


# --- Event types, models, schema files ------------------------------------------------------


def test_every_event_type_has_a_payload_model_and_schema_file() -> None:
    assert set(PAYLOAD_MODELS) == set(EventType)
    for event_type, model in PAYLOAD_MODELS.items():
        path = CONTRACTS / schema_export.payload_file(event_type)
        assert path.is_file(), f"no schema file for {event_type.value}"
        assert json.loads(path.read_text(encoding="utf-8"))["title"] == model.__name__


def test_every_event_type_has_an_example() -> None:
    assert set(EXAMPLES) == set(EventType)


def test_other_schema_files_describe_their_models() -> None:
    def load(path: str) -> dict[str, Any]:
        return json.loads((CONTRACTS / path).read_text(encoding="utf-8"))

    assert load(schema_export.ENVELOPE_FILE)["title"] == "EventEnvelope"
    assert load(schema_export.RECEIPT_FILE)["title"] == "Receipt"
    submission = load(schema_export.SUBMISSION_FILE)
    mapping = submission["discriminator"]["mapping"]
    assert set(mapping) == {t.value for t in EventType}


# --- Round trips and refusals ---------------------------------------------------------------


@pytest.mark.parametrize("event_type", list(EventType), ids=lambda t: t.value)
def test_payload_round_trips_through_json(event_type: EventType) -> None:
    model = PAYLOAD_MODELS[event_type]
    payload = example_payload(event_type)
    assert model.model_validate_json(payload.model_dump_json()) == payload


@pytest.mark.parametrize("event_type", list(EventType), ids=lambda t: t.value)
def test_envelope_round_trips_and_types_its_payload(event_type: EventType) -> None:
    payload = example_payload(event_type)
    envelope = EventEnvelope.model_validate(
        envelope_data(event_type, payload.model_dump(mode="json"))
    )
    wire = envelope.model_dump_json()
    again = EventEnvelope.model_validate_json(wire)
    assert again == envelope
    assert again.typed_payload() == payload
    assert isinstance(again.typed_payload(), PAYLOAD_MODELS[event_type])


def test_envelope_with_an_unknown_type_is_rejected() -> None:
    data = envelope_data(EventType.DEAL_CANCELLED, {"reason": "x"})
    data["type"] = "deal_teleported"
    with pytest.raises(ValidationError):
        EventEnvelope.model_validate(data)


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [
        (EventType.DEAL_CANCELLED, {}),
        (EventType.DEAL_CANCELLED, {"reason": 12}),
        (EventType.PLEDGE_MADE, {**EXAMPLES[EventType.PLEDGE_MADE],
                                 "amount": {**MONEY, "currency": "DOLLARS"}}),
        (EventType.JOINT_VENTURE_FORMED, {"venture_name": "V", "equity": {"a": "lots"}}),
    ],
    ids=["missing-field", "wrong-type", "bad-currency", "bad-decimal"],
)
def test_typed_payload_rejects_an_invalid_payload(
    event_type: EventType, payload: dict[str, Any]
) -> None:
    envelope = EventEnvelope.model_validate(envelope_data(event_type, payload))
    with pytest.raises(ValidationError):
        envelope.typed_payload()


def test_payload_fields_added_later_are_ignored_by_older_readers() -> None:
    envelope = EventEnvelope.model_validate(envelope_data(
        EventType.PLEDGE_WITHDRAWN, {"pledge_id": "p-1", "added_in_a_later_release": True}))
    assert envelope.typed_payload().model_dump() == {"pledge_id": "p-1", "reason": ""}


def test_a_submission_is_selected_by_its_type() -> None:
    adapter = TypeAdapter(Submission)
    submission = adapter.validate_python({
        "type": "deal_cancelled", "event_id": "evt-1", "occurred_at": "2025-08-29T09:00:00Z",
        "payload": {"deal_id": str(uuid4()), "reason": "Regulatory refusal"},
    })
    assert type(submission).__name__ == "DealCancelledSubmission"
    assert adapter.validate_json(adapter.dump_json(submission)) == submission
    with pytest.raises(ValidationError):
        adapter.validate_python({"type": "deal_teleported", "event_id": "evt-1",
                                 "occurred_at": "2025-08-29T09:00:00Z", "payload": {}})


def test_receipt_round_trips() -> None:
    receipt = Receipt(event_id="evt-1", type="deal_cancelled", aggregate_id=uuid4(),
                      aggregate_version=2, position=9, recorded_at="2025-08-29T09:00:01Z",
                      recorded_by="partner-test")
    assert Receipt.model_validate_json(receipt.model_dump_json()) == receipt


# --- AsyncAPI -------------------------------------------------------------------------------


def load_asyncapi() -> dict[str, Any]:
    text = (CONTRACTS / schema_export.ASYNCAPI_FILE).read_text(encoding="utf-8")
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:  # the file is JSON after its comment header, which is valid YAML
        body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
        return json.loads(body)
    return yaml.safe_load(text)


def refs_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [ref for key, value in node.items()
                for ref in ([value] if key == "$ref" else refs_in(value))]
    if isinstance(node, list):
        return [ref for item in node for ref in refs_in(item)]
    return []


def resolve(document: dict[str, Any], pointer: str) -> Any:
    node: Any = document
    for part in pointer.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_asyncapi_describes_the_topics() -> None:
    doc = load_asyncapi()
    assert doc["asyncapi"].startswith("3.")
    channels = {channel["address"]: channel for channel in doc["channels"].values()}
    assert set(channels) == {"dealregistry.events.v1", "dealregistry.events.v1.dlq"}
    for message in doc["components"]["messages"].values():
        assert message["bindings"]["kafka"]["key"]["format"] == "uuid"
    dead_letter = doc["components"]["messages"]["dead_letter"]
    assert "dlq_reason" in dead_letter["headers"]["required"]


def test_asyncapi_has_a_message_per_event_type_with_its_schemas() -> None:
    doc = load_asyncapi()
    messages = doc["components"]["messages"]
    events_channel = doc["channels"]["events"]
    for event_type in EventType:
        # Each type at the version the relay publishes it at; the types v2 changed also at 1
        # (published before it, still on the topic).
        versions = {schema_version_of(event_type), 1}
        for version in versions:
            name = schema_export.event_message_name(event_type, version)
            message = messages[name]
            assert name in events_channel["messages"]
            assert set(message["headers"]["required"]) == {
                "event_id", "event_type", "schema_version", "position", "epoch", "seq"}
            assert message["headers"]["properties"]["event_type"]["const"] == event_type.value
            assert message["headers"]["properties"]["schema_version"]["const"] == str(version)
            refs = refs_in(message["payload"])
            assert schema_export.envelope_file(version) in refs
            assert schema_export.payload_file(event_type, version) in refs


def test_asyncapi_references_resolve() -> None:
    doc = load_asyncapi()
    for ref in refs_in(doc):
        if ref.startswith("#/"):
            resolve(doc, ref)
        else:
            assert (CONTRACTS / ref).is_file(), ref
