"""What every recorded event carries, and the per-aggregate hash chain.

Each event stores the hash of the event before it in the same aggregate. The hash is SHA-256
over a canonical JSON encoding of the event's topic and fields *as they were written*, so an
auditor can recompute the chain from the stored events alone, any edit of a stored event
breaks it, and reading an old event through an upcaster (which changes its fields in memory,
never in the store) does not change its hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
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


# Values JSON encodes as they are: most fields of an event or a submission, so a canonical
# form answers them before any other test.
PLAIN_JSON_TYPES = frozenset({str, int, bool, type(None)})


def canonical_value(value: Any) -> Any:
    """Turn an event field into plain JSON that encodes the same way on every machine."""
    if type(value) in PLAIN_JSON_TYPES:
        return value
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


def event_hash(topic: str, event_fields: dict[str, Any], class_version: int = 1) -> str:
    """SHA-256 of an event's topic, fields and (from 2 on) class version, keys sorted, no
    whitespace. Version 1 is left out, so events written before classes had versions keep
    the hashes they were chained with."""
    document: dict[str, Any] = {"topic": topic, "fields": canonical_value(event_fields)}
    if class_version > 1:
        document["class_version"] = class_version
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


# Where an upcast event keeps its state as it was stored, and the hash of that once asked:
# not fields, so neither hashed nor written again.
WRITTEN_STATE = "_written_state"
WRITTEN_HASH = "_written_hash"


class RecordedEvent(Aggregate.Event):
    """Base of every domain event: provenance plus the previous event's hash.

    A class that changes shape sets `class_version` and defines the library's
    `upcast_vN_vN+1(state)` classmethods; each starts with `cls.remember_written_state(state,
    N)`, so the event read back keeps the hash it was chained with. Upcasters add or replace
    values; they never change one in place (the remembered state shares them)."""

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
        # The instance's own state, not its class's fields: an event stored before an
        # optional field was added has no value for it and must hash as it was written.
        state = self.__dict__
        written = state.get(WRITTEN_HASH)
        if written is not None:
            return str(written)
        topic = get_topic(type(self))
        as_written = state.get(WRITTEN_STATE)
        if as_written is None:
            return event_hash(topic, state, getattr(type(self), "class_version", 1))
        # Hashed on first use, not while upcasting: replaying a deal reads many events and
        # needs only its last one's hash.
        values, version = as_written
        written = event_hash(topic, values, version)
        state[WRITTEN_HASH] = written
        return written

    @classmethod
    def remember_written_state(cls, state: dict[str, Any], written_version: int) -> None:
        """Called by each upcaster before it changes `state`; the first one keeps it."""
        if WRITTEN_STATE not in state:
            state[WRITTEN_STATE] = (dict(state), written_version)


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
