"""What every recorded event carries, and the per-aggregate hash chain.

Each event stores the hash of the event before it in the same aggregate. The hash is SHA-256
over a canonical JSON encoding of the event's topic and fields, so an auditor can recompute
the chain from the stored events alone and any edit of a stored event breaks it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.domain import Snapshot as LibrarySnapshot
from eventsourcing.utils import get_topic, register_topic

GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class Provenance:
    """Who says an event happened, and when it happened in the world."""

    occurred_at: datetime
    recorded_by: str
    partner_event_id: str

    def as_event_fields(self) -> dict[str, Any]:
        return {
            "occurred_at": self.occurred_at,
            "recorded_by": self.recorded_by,
            "partner_event_id": self.partner_event_id,
        }


def canonical_value(value: Any) -> Any:
    """Turn an event field into plain JSON that encodes the same way on every machine."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): canonical_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical_value(v) for v in value]
    return value


def event_hash(topic: str, event_fields: dict[str, Any]) -> str:
    """SHA-256 of an event's topic and fields, keys sorted, no whitespace."""
    document = {"topic": topic, "fields": canonical_value(event_fields)}
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


class RecordedEvent(Aggregate.Event):
    """Base of every domain event: provenance plus the previous event's hash."""

    occurred_at: datetime
    recorded_by: str
    partner_event_id: str
    previous_hash: str

    def apply(self, aggregate: Any) -> None:
        self.evolve(aggregate)
        # Hashing every event while an aggregate is replayed would cost more than the replay;
        # only the last event's hash is ever needed, so it is computed on first use.
        aggregate.last_event = self

    def evolve(self, aggregate: Any) -> None:
        """Change the aggregate's state; subclasses override."""

    def __deepcopy__(self, memo: dict[int, Any]) -> RecordedEvent:
        # Events are frozen: an aggregate copied for a decision may share its last event,
        # and copying it deeply was the largest cost of loading a cached aggregate.
        return self

    def hash(self) -> str:
        values = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        return event_hash(get_topic(type(self)), values)


class RecordedAggregate(Aggregate):
    """Aggregate whose events form a hash chain starting at GENESIS_HASH."""

    last_event = None  # the newest event applied; set by RecordedEvent.apply
    # The chain's head where the aggregate was restored from: the genesis hash when it was
    # built from its first event, the snapshot's hash when restored from a snapshot.
    restored_hash = GENESIS_HASH

    class Snapshot(LibrarySnapshot):
        """The aggregate's state at a version, holding the chain's head as a hash: the event
        object it would otherwise hold is not part of the state, and hashing it here keeps
        loading from a snapshot free of any event before it."""

        TOPIC = "dealregistry:RecordedSnapshot.v1"

        @classmethod
        def take(cls, aggregate: Any) -> Any:
            snapshot = super().take(aggregate)
            snapshot.state.pop("last_event", None)
            snapshot.state["restored_hash"] = aggregate.last_hash
            return snapshot

    @property
    def last_hash(self) -> str:
        return self.restored_hash if self.last_event is None else self.last_event.hash()

    def record(self, event_class: type[RecordedEvent], provenance: Provenance, **kw: Any) -> None:
        self.trigger_event(
            event_class, previous_hash=self.last_hash, **provenance.as_event_fields(), **kw
        )


# Snapshots name their class by this topic, so moving the module does not orphan them.
register_topic(RecordedAggregate.Snapshot.TOPIC, RecordedAggregate.Snapshot)
