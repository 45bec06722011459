"""Builds event envelopes the way the registry would: consecutive positions, per-aggregate
versions. Hashes are placeholders; the read model stores them but does not check them."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from contracts.events_v1 import EventType
from contracts.events_v2 import EventEnvelope  # either schema version, as consumers read them

START = datetime(2025, 8, 29, 9, 0, tzinfo=UTC)


def envelope(
    type: EventType,
    aggregate_id: UUID,
    payload: dict[str, Any],
    position: int,
    aggregate_version: int = 1,
    occurred_at: datetime = START,
) -> EventEnvelope:
    """One envelope with placeholder hashes."""
    return EventEnvelope(
        event_id=f"evt-{position}",
        type=type,
        aggregate_id=aggregate_id,
        aggregate_version=aggregate_version,
        position=position,
        occurred_at=occurred_at,
        recorded_at=occurred_at + timedelta(seconds=1),
        recorded_by="partner-test",
        previous_hash="0" * 64,
        hash="x" * 64,
        payload=payload,
    )


def money(low: str, high: str, currency: str) -> dict[str, str]:
    return {"low": low, "high": high, "currency": currency}


def usd(
    low: str, high: str, units_per_usd: str = "1", source: str = "test-rates"
) -> dict[str, str]:
    return {"low": low, "high": high, "units_per_usd": units_per_usd, "rate_source": source}


class EventLog:
    """An in-memory log that hands out positions and aggregate versions."""

    def __init__(self) -> None:
        self.envelopes: list[EventEnvelope] = []
        self._versions: dict[UUID, int] = defaultdict(int)
        self._countries: dict[str, str] = {}

    def record(self, type: EventType, aggregate_id: UUID, payload: dict[str, Any]) -> EventEnvelope:
        self._versions[aggregate_id] += 1
        position = len(self.envelopes) + 1
        event = envelope(
            type, aggregate_id, payload, position, self._versions[aggregate_id],
            occurred_at=START + timedelta(minutes=position),
        )
        self.envelopes.append(event)
        return event

    def firm(self, code: str, country: str, kind: str = "manufacturer") -> UUID:
        firm_id = uuid4()
        self._countries[code] = country
        self.record(EventType.FIRM_REGISTERED, firm_id, {
            "code": code, "name": code.replace("-", " ").title(), "country": country, "kind": kind,
        })
        return firm_id

    def meeting(self, title: str, sectors: list[str]) -> UUID:
        meeting_id = uuid4()
        self.record(EventType.MEETING_HELD, meeting_id, {
            "title": title, "location": "Tokyo", "closed_door": True,
            "attendees": ["toyota", "tata-motors"], "government_bodies": ["METI"],
            "sectors": sectors,
        })
        return meeting_id

    def deal(self, sector: str, format: str, parties: list[str], title: str = "A deal") -> UUID:
        deal_id = uuid4()
        self.record(EventType.DEAL_PROPOSED, deal_id, {
            "title": title, "format": format, "sector": sector, "parties": parties,
        })
        return deal_id

    def pledge(
        self, deal_id: UUID, pledge_id: str, firm: str, amount: dict[str, str],
        in_usd: dict[str, str],
    ) -> None:
        self.record(EventType.PLEDGE_MADE, deal_id, {
            "pledge_id": pledge_id, "firm": firm, "firm_country": self._countries[firm],
            "amount": amount, "usd": in_usd,
        })

    def revise(
        self, deal_id: UUID, pledge_id: str, amount: dict[str, str], in_usd: dict[str, str]
    ) -> None:
        self.record(EventType.PLEDGE_REVISED, deal_id, {
            "pledge_id": pledge_id, "amount": amount, "usd": in_usd, "reason": "board approval",
        })

    def withdraw(self, deal_id: UUID, pledge_id: str) -> None:
        self.record(EventType.PLEDGE_WITHDRAWN, deal_id, {"pledge_id": pledge_id,
                                                          "reason": "funding fell through"})

    def cancel(self, deal_id: UUID) -> None:
        self.record(EventType.DEAL_CANCELLED, deal_id, {"reason": "parties withdrew"})

    def form_joint_venture(self, deal_id: UUID, name: str, equity: dict[str, str]) -> None:
        self.record(EventType.JOINT_VENTURE_FORMED, deal_id,
                    {"venture_name": name, "equity": equity})

    def announce_facility(self, deal_id: UUID, facility: str) -> None:
        self.record(EventType.FACILITY_ANNOUNCED, deal_id, {
            "facility": facility, "location": "Gujarat", "capacity": "20 GWh",
            "materials": ["lithium"],
        })

    def sign_tech_transfer(self, deal_id: UUID, technology: str) -> None:
        self.record(EventType.TECH_TRANSFER_SIGNED, deal_id, {
            "technology": technology, "licensor": "toyota", "licensee": "tata-motors",
        })
