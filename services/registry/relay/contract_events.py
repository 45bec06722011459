"""Translation of stored domain events into the contract envelope that leaves the registry.

Each envelope is at its type's newest schema version (`contracts.events_v2.schema_version_of`):
pledge events at 2, with the pledge's instrument and tranches (a pledge event stored before
v2 is read through its upcaster: instrument null, no tranches), every other type at 1.

Receipts are bookkeeping of the write side and never leave it (they are kept beside the log;
logs written before hold them as events, which are skipped). A stored event that cannot be
translated (its state does not decode, or does not fit the contract) is reported as
`Untranslatable` by `translated`, so that no follower of the log stalls on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper, Notification
from eventsourcing.utils import resolve_topic
from pydantic import ValidationError

from contracts.events_v1 import EventType
from contracts.events_v2 import EventEnvelope, schema_version_of
from contracts.untranslatable_v1 import UntranslatableEvent
from services.registry.domain.deal import Deal, PledgeAmountEvent
from services.registry.domain.firm import Firm
from services.registry.domain.meeting import Meeting
from services.registry.domain.recorded import RecordedEvent, canonical_value


def _amount_payload(e: PledgeAmountEvent) -> dict[str, Any]:
    return {
        "pledge_id": e.pledge_id,
        "amount": {"low": e.amount_low, "high": e.amount_high, "currency": e.currency},
        "usd": {
            "low": e.usd_low,
            "high": e.usd_high,
            "units_per_usd": e.units_per_usd,
            "rate_source": e.rate_source,
        },
        # The terms (v2), as the event states them: ISO due dates, exact amounts.
        "instrument": e.instrument,
        "tranches": [{"due_date": t["due_date"], "amount": t["amount"]} for t in e.tranches],
    }


PayloadOf = Callable[[Any], dict[str, Any]]

TRANSLATIONS: dict[type[RecordedEvent], tuple[EventType, PayloadOf]] = {
    Firm.Registered: (
        EventType.FIRM_REGISTERED,
        lambda e: {"code": e.code, "name": e.name, "country": e.country, "kind": e.kind},
    ),
    Meeting.Held: (
        EventType.MEETING_HELD,
        lambda e: {
            "title": e.title, "location": e.location, "closed_door": e.closed_door,
            "attendees": list(e.attendees), "government_bodies": list(e.government_bodies),
            "sectors": list(e.sectors), "summary": e.summary,
        },
    ),
    Deal.Proposed: (
        EventType.DEAL_PROPOSED,
        lambda e: {
            "title": e.title, "format": e.format, "sector": e.sector,
            "parties": list(e.parties), "description": e.description,
        },
    ),
    Deal.PledgeMade: (
        EventType.PLEDGE_MADE,
        lambda e: {**_amount_payload(e), "firm": e.firm, "firm_country": e.firm_country},
    ),
    Deal.PledgeRevised: (
        EventType.PLEDGE_REVISED, lambda e: {**_amount_payload(e), "reason": e.reason}
    ),
    Deal.PledgeWithdrawn: (
        EventType.PLEDGE_WITHDRAWN, lambda e: {"pledge_id": e.pledge_id, "reason": e.reason}
    ),
    Deal.TechTransferSigned: (
        EventType.TECH_TRANSFER_SIGNED,
        lambda e: {"technology": e.technology, "licensor": e.licensor, "licensee": e.licensee},
    ),
    Deal.JointVentureFormed: (
        EventType.JOINT_VENTURE_FORMED,
        lambda e: {"venture_name": e.venture_name, "equity": dict(e.equity)},
    ),
    Deal.FacilityAnnounced: (
        EventType.FACILITY_ANNOUNCED,
        lambda e: {
            "facility": e.facility, "location": e.location, "capacity": e.capacity,
            "materials": list(e.materials),
        },
    ),
    Deal.Cancelled: (EventType.DEAL_CANCELLED, lambda e: {"reason": e.reason}),
}


def to_envelope(event: Any, position: int, chained_hash: str | None = None
                ) -> EventEnvelope | None:
    """The contract form of a domain event, or None for events that stay inside the registry.

    `chained_hash`: the event's hash as its successor in the aggregate names it (its
    `previous_hash`), which is what the hash recomputed from the event gives while the log is
    untouched; recomputing it costs more than the rest of the translation."""
    translation = TRANSLATIONS.get(type(event))
    if translation is None:
        return None
    event_type, payload_of = translation
    return EventEnvelope(
        event_id=event.partner_event_id,
        type=event_type,
        schema_version=schema_version_of(event_type),
        aggregate_id=event.originator_id,
        aggregate_version=event.originator_version,
        position=position,
        occurred_at=event.occurred_at,
        recorded_at=event.timestamp,
        recorded_by=event.recorded_by,
        previous_hash=event.previous_hash,
        hash=event.hash() if chained_hash is None else chained_hash,
        payload=canonical_value(payload_of(event)),
    )


log = logging.getLogger("dealreg.relay.translation")


@dataclass(frozen=True)
class Untranslatable:
    """A stored event that has no contract envelope, and why."""

    position: int
    aggregate_id: UUID
    aggregate_version: int
    stored_type: str
    reason: str
    stored_state: str  # as stored, for the operator who parks it

    def as_record(self) -> UntranslatableEvent:
        """The record the relay publishes in the event's place."""
        return UntranslatableEvent(
            position=self.position, aggregate_id=self.aggregate_id,
            aggregate_version=self.aggregate_version, stored_type=self.stored_type,
            reason=self.reason,
        )


def _event_of(notification: Notification, mapper: Mapper[Any]) -> Any | None:
    # A receipt in a log written before receipts were kept beside it: its class, resolved
    # from the topic as the mapper would, says it stays inside, so its state is never decoded.
    if resolve_topic(notification.topic) not in TRANSLATIONS:
        return None
    return mapper.to_domain_event(notification)


def _envelope_of(notification: Notification, mapper: Mapper[Any]) -> EventEnvelope | None:
    event = _event_of(notification, mapper)
    return None if event is None else to_envelope(event, notification.id)


def envelopes_from(notifications: list[Notification], mapper: Mapper[Any]) -> list[EventEnvelope]:
    """The contract envelopes of the notifications' events, in log order; raises on an event
    that cannot be translated (followers that must not stall use `translated`)."""
    envelopes = []
    for notification in notifications:
        envelope = _envelope_of(notification, mapper)
        if envelope is not None:
            envelopes.append(envelope)
    return envelopes


def translated(notifications: list[Notification], mapper: Mapper[Any],
               chained_hashes: bool = False) -> list[EventEnvelope | Untranslatable]:
    """Like `envelopes_from`, but an event that cannot be translated is reported in its
    place as `Untranslatable` instead of raising.

    With `chained_hashes`, an event whose successor in its aggregate is among the
    notifications takes its hash from that successor's `previous_hash` (`to_envelope`):
    the hash the chain recorded, not one recomputed from the event as it is stored now. For
    the read model, whose chain check compares the two (`chain_check`); the relay publishes
    recomputed hashes."""
    decoded: list[tuple[Notification, Any]] = []
    for notification in notifications:
        try:
            decoded.append((notification, _event_of(notification, mapper)))
        except Exception as exc:  # noqa: BLE001 - whatever the cause, the event is the problem
            decoded.append((notification, exc))
    chained: dict[tuple[Any, int], str] = {}
    if chained_hashes:
        for _, event in decoded:
            previous = getattr(event, "previous_hash", None)
            if isinstance(event, RecordedEvent) and isinstance(previous, str):
                chained[(event.originator_id, event.originator_version - 1)] = previous
    items: list[EventEnvelope | Untranslatable] = []
    for notification, event in decoded:
        if event is None:
            continue
        if isinstance(event, Exception):
            items.append(untranslatable(notification, event))
            continue
        try:
            envelope = to_envelope(event, notification.id,
                                   chained.get((event.originator_id, event.originator_version)))
        except Exception as exc:  # noqa: BLE001 - as above
            items.append(untranslatable(notification, exc))
            continue
        if envelope is not None:
            items.append(envelope)
    return items


def untranslatable(notification: Notification, exc: BaseException) -> Untranslatable:
    """What is known of a stored event that failed to translate with `exc`."""
    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "value"
        message = [f"{where}: {first.get('msg', '')}"]
    else:
        message = str(exc).strip().splitlines()
    reason = f"cannot translate: {type(exc).__name__}" + (f": {message[0]}" if message else "")
    state = notification.state
    stored = state.decode("utf-8", "replace") if isinstance(state, bytes) else str(state)
    log.error("event at position %s (aggregate %s version %s, %s) %s", notification.id,
              notification.originator_id, notification.originator_version,
              notification.topic, reason)
    return Untranslatable(
        position=notification.id, aggregate_id=UUID(str(notification.originator_id)),
        aggregate_version=notification.originator_version, stored_type=notification.topic,
        reason=reason[:2000], stored_state=stored,
    )
