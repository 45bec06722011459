"""Writes events into the registry's log the way an older version could have: through the
domain objects and the store directly, past today's door, so that the read side meets them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID, uuid4

from eventsourcing.persistence import StoredEvent

from services.registry.adapters.event_store import DealRegistryStore
from services.registry.domain.deal import Deal
from services.registry.domain.firm import Firm
from services.registry.domain.recorded import Provenance
from services.registry.domain.values import AmountRange, UsdConversion

# .NET's DateTime.MinValue sent with India's offset: year 0 once moved to UTC.
YEAR_ONE_IN_INDIA = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=30)))
NOW = datetime(2025, 8, 29, 1, 30, tzinfo=UTC)


def provenance(when: datetime = NOW) -> Provenance:
    return Provenance(occurred_at=when, recorded_by="old-partner",
                      partner_event_id=f"old-{uuid4().hex[:12]}")


def register_firm(store: DealRegistryStore, code: str, when: datetime = NOW,
                  name: str | None = None) -> int:
    """Record a firm; returns its log position."""
    firm = Firm.register(code, name or code.title(), "IN", "automaker", provenance(when))
    store.save(firm)
    return _position(store, firm.id, 1)


def propose_deal_with_pledge(store: DealRegistryStore, deal_id: UUID, firm: str,
                             proposed_at: datetime = NOW) -> int:
    """A deal (proposed at `proposed_at`) and a pledge after it; returns the pledge's
    position."""
    deal = Deal.propose(deal_id, "Battery recycling venture", "joint_venture", "recycling",
                        [firm], "", provenance(proposed_at))
    amount = AmountRange.of(Decimal("100000000"), Decimal("400000000"), "USD")
    deal.make_pledge("p1", firm, "IN", amount, UsdConversion.of(amount, Decimal(1), "test"),
                     provenance())
    store.save(deal)
    return _position(store, deal_id, 2)


def store_untranslatable_deal(store: DealRegistryStore, deal_id: UUID, firm: str) -> int:
    """A deal whose first stored event lacks a field its translation needs (as written by a
    version whose event had no `title`), and a valid cancellation after it. Returns the
    position of the cancellation."""
    deal = Deal.propose(deal_id, "Lost title", "joint_venture", "recycling", [firm], "",
                        provenance())
    deal.cancel("parties withdrew", provenance())
    stored = [store.mapper.to_stored_event(event) for event in deal.collect_events()]
    state = store.mapper.transcoder.decode(stored[0].state)
    del state["title"]
    stored[0] = StoredEvent(stored[0].originator_id, stored[0].originator_version,
                            stored[0].topic, store.mapper.transcoder.encode(state))
    store.recorder.insert_events(stored)
    return _position(store, deal_id, 2)


def _position(store: DealRegistryStore, aggregate_id: UUID, version: int) -> int:
    position = store.log_position_of(aggregate_id, version)
    assert position is not None
    return position
