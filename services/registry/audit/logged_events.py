"""The stored events as an auditor sees them: position, aggregate, version, hashes, leaf.

Everything here is computed from the stored record as it was written, never from the
domain object the library would build from it: an upcaster changes that object, and the
evidence must not change with it. The Merkle leaf binds the stored record itself (position,
aggregate, version, topic and SHA-256 of the stored bytes), so any edit of a stored byte
changes it, and it is computed without decoding anything. The event hash, which chains an
aggregate's events, is the domain's hash of the written state, decoded but not upcast.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification, StoredEvent

from services.registry.adapters.event_store import DealRegistryStore
from services.registry.audit.merkle import leaf_hash
from services.registry.domain.recorded import canonical_value, event_hash

# How a leaf is computed. 1: checkpoints taken before leaves bound the stored bytes (the
# position, aggregate, version and event hash); 2: position, aggregate, version, topic and
# the digest of the stored bytes.
LEGACY_LEAF_FORMAT = 1
LEAF_FORMAT = 2


def leaf_format_at(position: int, legacy_until: int) -> int:
    """The format of the leaf at `position`, where checkpoints taken before leaves bound the
    stored bytes covered positions up to `legacy_until` (CheckpointStore.legacy_leaves_until)."""
    return LEGACY_LEAF_FORMAT if position <= legacy_until else LEAF_FORMAT


@dataclass(frozen=True)
class LoggedEvent:
    """One stored event, recomputed. `problem` says why it could not be decoded, if so."""

    position: int
    aggregate_id: str
    version: int
    topic: str
    class_version: int
    fields: dict[str, Any]  # canonical JSON values, as written
    event_hash: str
    state_digest: str  # SHA-256 (hex) of the stored state bytes
    previous_hash: str | None  # None for events outside a hash chain (receipts)
    problem: str | None = None
    state: bytes = b""  # the stored bytes, when decoded

    def leaf(self, leaf_format: int = LEAF_FORMAT) -> bytes:
        if leaf_format >= LEAF_FORMAT:
            return stored_event_leaf(self.position, self.aggregate_id, self.version, self.topic,
                                     self.state_digest)
        if self.decoded:
            return event_leaf(self.position, self.aggregate_id, self.version, self.event_hash)
        raise ValueError("a format-1 leaf needs the decoded event (decode=True)")

    @property
    def decoded(self) -> bool:
        return bool(self.event_hash)


def event_leaf(position: int, aggregate_id: str, version: int, hash_hex: str) -> bytes:
    """Leaf format 1: the event's place in the log bound to its content's hash."""
    data = json.dumps([position, aggregate_id, version, hash_hex], separators=(",", ":"))
    return leaf_hash(data.encode("utf-8"))


def stored_event_leaf(position: int, aggregate_id: str, version: int, topic: str,
                      state_digest: str) -> bytes:
    """Leaf format 2: the stored record, bytes and all."""
    data = json.dumps([position, aggregate_id, version, topic, state_digest],
                      separators=(",", ":"))
    return leaf_hash(data.encode("utf-8"))


def written_state(store: DealRegistryStore, stored: StoredEvent) -> tuple[dict[str, Any], int]:
    """The event's state as it was written, decoded but not upcast, and its class version."""
    mapper: Any = store.mapper
    state_bytes = bytes(stored.state)
    if mapper.cipher:
        state_bytes = mapper.cipher.decrypt(state_bytes)
    if mapper.compressor:
        state_bytes = mapper.compressor.decompress(state_bytes)
    return decoded_state(mapper.transcoder, state_bytes, stored.originator_id,
                         stored.originator_version)


def decoded_state(transcoder: Any, state_bytes: bytes, originator_id: Any,
                  originator_version: int) -> tuple[dict[str, Any], int]:
    state: dict[str, Any] = transcoder.decode(state_bytes)
    if not isinstance(state, dict):
        raise TypeError("the stored state is not an object")
    class_version = state.pop("class_version", 1)
    if not isinstance(class_version, int) or class_version < 1:
        raise ValueError(f"class_version {class_version!r} is not a version")
    state["originator_id"] = UUID(str(originator_id))
    state["originator_version"] = originator_version
    return state, class_version


def logged_event(store: DealRegistryStore, notification: Notification,
                 decode: bool = True) -> LoggedEvent:
    """The stored event recomputed; without `decode`, only what its format-2 leaf needs."""
    position = notification.id
    aggregate_id = str(notification.originator_id)
    version = notification.originator_version
    digest = hashlib.sha256(bytes(notification.state)).hexdigest()
    if not decode:
        return LoggedEvent(position, aggregate_id, version, notification.topic, 1, {}, "",
                           digest, None)
    try:
        state, class_version = written_state(store, notification)
        aggregate_id = str(state["originator_id"])
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a finding, not a crash
        # Whatever the stored bytes are, they get a hash, so a format-1 leaf still differs
        # from the covered one and the event is reported at its own position.
        return LoggedEvent(position, aggregate_id, version, notification.topic, 1, {}, digest,
                           digest, None,
                           problem=f"cannot be decoded: {type(exc).__name__}: {exc}"[:300])
    previous_hash = state.get("previous_hash")
    return LoggedEvent(
        position=position,
        aggregate_id=aggregate_id,
        version=version,
        topic=notification.topic,
        class_version=class_version,
        fields=canonical_value(state),
        event_hash=event_hash(notification.topic, state, class_version),
        state_digest=digest,
        previous_hash=previous_hash if isinstance(previous_hash, str) else None,
        state=bytes(notification.state),
    )


def read_logged_events(
    store: DealRegistryStore, after: int = 0, until: int | None = None, page_size: int = 1000,
    decode: bool | Callable[[int], bool] = True,
) -> Iterator[LoggedEvent]:
    """The stored events with positions in (after, until], in log order, a page at a time;
    `decode` may say, by position, which ones to decode."""
    while True:
        page = store.read_log(after, page_size)
        for notification in page:
            if until is not None and notification.id > until:
                return
            yield logged_event(store, notification,
                               decode(notification.id) if callable(decode) else decode)
            after = notification.id
        if len(page) < page_size:
            return


def read_logged_events_by_aggregate(
    store: DealRegistryStore, page_size: int = 1000
) -> Iterator[LoggedEvent]:
    """Every stored event ordered by aggregate, then version: a chain at a time, so checking
    chains holds one aggregate in memory, not one entry per aggregate."""
    after: tuple[UUID, int] | None = None
    while True:
        page = store.read_by_aggregate(after, page_size)
        for notification in page:
            yield logged_event(store, notification)
        if len(page) < page_size:
            return
        last = page[-1]
        after = (UUID(str(last.originator_id)), last.originator_version)
