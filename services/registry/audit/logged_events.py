"""The stored events as an auditor sees them: position, aggregate, version, hash, leaf.

Each stored event is decoded through the store's own mapper and hashed exactly as the
domain hashes it for the chain (`event_hash` of its topic and fields), so one recomputation
serves both the chain check and the Merkle leaf.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from services.registry.adapters.event_store import DealRegistryStore
from services.registry.audit.merkle import leaf_hash
from services.registry.domain.recorded import canonical_value, event_hash


@dataclass(frozen=True)
class LoggedEvent:
    """One stored event, recomputed. `problem` says why it could not be decoded, if so."""

    position: int
    aggregate_id: str
    version: int
    topic: str
    fields: dict[str, Any]  # canonical JSON values
    event_hash: str
    previous_hash: str | None  # None for events outside a hash chain (receipts)
    problem: str | None = None

    def leaf(self) -> bytes:
        return event_leaf(self.position, self.aggregate_id, self.version, self.event_hash)


def event_leaf(position: int, aggregate_id: str, version: int, hash_hex: str) -> bytes:
    """The Merkle leaf of one event: its place in the log bound to its content's hash."""
    data = json.dumps([position, aggregate_id, version, hash_hex], separators=(",", ":"))
    return leaf_hash(data.encode("utf-8"))


def logged_event(store: DealRegistryStore, notification: Notification) -> LoggedEvent:
    position = notification.id
    aggregate_id = str(notification.originator_id)
    version = notification.originator_version
    try:
        event: Any = store.mapper.to_domain_event(notification)
        values = {f.name: getattr(event, f.name) for f in fields(event)}
        topic = get_topic(type(event))
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a finding, not a crash
        # Whatever the stored bytes are, they get a hash, so the leaf still differs from the
        # checkpointed one and the event is reported at its own position.
        raw = hashlib.sha256(bytes(notification.state)).hexdigest()
        return LoggedEvent(position, aggregate_id, version, notification.topic, {}, raw, None,
                           problem=f"cannot be decoded: {type(exc).__name__}: {exc}"[:300])
    return LoggedEvent(
        position=position,
        aggregate_id=str(event.originator_id),
        version=event.originator_version,
        topic=topic,
        fields=canonical_value(values),
        event_hash=event_hash(topic, values),
        previous_hash=values.get("previous_hash"),
    )


def read_logged_events(
    store: DealRegistryStore, after: int = 0, until: int | None = None, page_size: int = 1000
) -> Iterator[LoggedEvent]:
    """The stored events with positions in (after, until], in log order, a page at a time."""
    while True:
        page = store.read_log(after, page_size)
        for notification in page:
            if until is not None and notification.id > until:
                return
            yield logged_event(store, notification)
            after = notification.id
        if len(page) < page_size:
            return
