"""An event keeps the hash it was written with, whatever its class has become since: read
through an upcaster, or stored before an optional field was added. The chain, the Merkle
leaves and `audit verify` all rest on this."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent
from eventsourcing.utils import register_topic

from services.registry.adapters.event_store import stored_state_transcoder
from services.registry.domain.recorded import GENESIS_HASH, RecordedEvent, event_hash


class Noted(RecordedEvent):
    TOPIC = "test:Noted.v1"
    note: str


register_topic(Noted.TOPIC, Noted)


def written(event_class: type[RecordedEvent], **fields: Any) -> tuple[StoredEvent, str]:
    """A stored event as the class wrote it, and the hash it was written with."""
    event = event_class(originator_id=uuid4(), originator_version=1,
                        timestamp=datetime.now(UTC), occurred_at=datetime.now(UTC),
                        recorded_by="partner-a", partner_event_id="e-1",
                        previous_hash=GENESIS_HASH, **fields)
    return mapper().to_stored_event(event), event.hash()


def mapper() -> Mapper[Any]:
    transcoder: JSONTranscoder = stored_state_transcoder()
    return Mapper(transcoder=transcoder)


def test_an_upcast_event_keeps_the_hash_it_was_written_with(monkeypatch: Any) -> None:
    stored, hash_as_written = written(Noted, note="met at the embassy")

    # The class moves to version 2, gaining a field its stored events lack.
    @classmethod  # type: ignore[misc]
    def upcast_v1_v2(cls: type[RecordedEvent], state: dict[str, Any]) -> None:
        cls.remember_written_state(state, 1)
        state["venue"] = "unknown"

    monkeypatch.setattr(Noted, "class_version", 2, raising=False)
    monkeypatch.setattr(Noted, "upcast_v1_v2", upcast_v1_v2, raising=False)
    read = mapper().to_domain_event(stored)
    assert read.venue == "unknown"  # type: ignore[attr-defined]
    assert read.hash() == hash_as_written  # type: ignore[attr-defined]


class Grown(RecordedEvent):
    """A class that gained an optional field after events of it were stored."""

    TOPIC = "test:Grown.v1"
    note: str
    venue: str = "unknown"


register_topic(Grown.TOPIC, Grown)


def test_an_event_stored_before_an_optional_field_hashes_as_written() -> None:
    before, _ = written(Noted, note="met at the embassy")
    stored = StoredEvent(before.originator_id, 1, Grown.TOPIC, before.state)
    read = mapper().to_domain_event(stored)
    assert read.venue == "unknown"  # type: ignore[attr-defined]  # the class default
    as_written = {k: v for k, v in read.__dict__.items()}
    assert "venue" not in as_written
    assert read.hash() == event_hash(Grown.TOPIC, as_written)  # type: ignore[attr-defined]
    with_default = {f.name: getattr(read, f.name) for f in fields(read)}  # type: ignore[arg-type]
    assert read.hash() != event_hash(Grown.TOPIC, with_default)  # type: ignore[attr-defined]
