"""The event store behaves the same on SQLite and PostgreSQL.

One abstract set of store-level assertions, run once per backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError

from contracts.events_v1 import EventType
from contracts.submissions_v1 import Receipt
from services.registry.adapters.event_store import DealRegistryStore, open_event_store
from services.registry.application.errors import IdempotencyConflict, VersionConflict
from services.registry.application.handlers import RecordingService
from services.registry.domain.deal import Deal
from services.registry.domain.firm import Firm
from services.registry.domain.identities import firm_id
from services.registry.domain.recorded import GENESIS_HASH, Provenance
from services.registry.relay.contract_events import envelopes_from
from services.shared.settings import Settings
from tests.unit.registry.support import (
    DEAL_ID,
    IN_FIRM,
    JP_FIRM,
    THIRD_FIRM,
    amount,
    body,
    chain_is_intact,
    deal_body,
    pledge_body,
    record,
    record_firms_and_deal,
    usd_of,
)

pytestmark = pytest.mark.integration

D = Decimal
FACILITY_DEAL = UUID("3e4c8d1a-9b2f-4c6e-8a7d-5f1e2b3c4d5e")
MEETING = UUID("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")


def realistic_sequence(service: RecordingService) -> list[Receipt]:
    """Firms, a closed-door meeting, a JV deal through its life, and a facility deal."""
    receipts = record_firms_and_deal(service, by="mofa-japan")
    deal = str(DEAL_ID)
    more = [
        record(service, body("meet-1", "meeting_held", {
            "meeting_id": str(MEETING), "title": "Closed-door round table on battery recycling",
            "location": "New Delhi", "closed_door": True,
            "attendees": [JP_FIRM, IN_FIRM, THIRD_FIRM], "government_bodies": ["METI", "MeitY"],
            "sectors": ["recycling", "battery_manufacturing"]}), "invest-india"),
        record(service, pledge_body("p-inr", "pl-inr", low="8600000000", high="34400000000",
                                    currency="INR"), "invest-india"),
        record(service, pledge_body("p-jpy", "pl-jpy", firm=JP_FIRM, low="14500000000",
                                    high="29000000000", currency="JPY"), "mofa-japan"),
        record(service, body("r-inr", "pledge_revised", {
            "deal_id": deal, "pledge_id": "pl-inr", "reason": "second phase",
            "amount": {"low": "17200000000", "high": "34400000000", "currency": "INR"}}),
            "invest-india"),
        record(service, pledge_body("p-usd", "pl-usd", firm=THIRD_FIRM, low="1.50",
                                    high="2.5"), "invest-india"),
        record(service, body("w-usd", "pledge_withdrawn", {
            "deal_id": deal, "pledge_id": "pl-usd", "reason": "merged into pl-inr"}),
            "invest-india"),
        record(service, body("tt-1", "tech_transfer_signed", {
            "deal_id": deal, "technology": "Hydrometallurgical black-mass recovery",
            "licensor": JP_FIRM, "licensee": THIRD_FIRM}), "mofa-japan"),
        record(service, body("jv-1", "joint_venture_formed", {
            "deal_id": deal, "venture_name": "Green Cells India",
            "equity": {JP_FIRM: "50.50", IN_FIRM: "29.5", THIRD_FIRM: "20"}}), "mofa-japan"),
        record(service, deal_body("deal-fac", deal_id=FACILITY_DEAL,
                                  format="processing_facility", parties=(IN_FIRM,)),
               "invest-india"),
        record(service, body("fac-1", "facility_announced", {
            "deal_id": str(FACILITY_DEAL), "facility": "Black-mass plant", "location": "Pune",
            "capacity": "20 kt/yr", "materials": ["lithium", "cobalt", "nickel"]}),
            "invest-india"),
        record(service, body("cx-fac", "deal_cancelled", {
            "deal_id": str(FACILITY_DEAL), "reason": "site not approved"}), "invest-india"),
    ]
    return receipts + more


class EventStoreContract:
    """Store-level assertions every backend must pass. Subclasses provide `settings`."""

    @pytest.fixture
    def settings(self) -> Settings:
        raise NotImplementedError

    @pytest.fixture
    def stores(self, settings: Settings) -> Iterator[list[DealRegistryStore]]:
        opened: list[DealRegistryStore] = []
        yield opened
        for store in opened:
            store.close()

    @pytest.fixture
    def open_store(self, settings: Settings, stores: list[DealRegistryStore]) -> Any:
        def opener() -> DealRegistryStore:
            store = open_event_store(settings)
            stores.append(store)
            return store

        return opener

    @pytest.fixture
    def store(self, open_store: Any) -> DealRegistryStore:
        return open_store()  # type: ignore[no-any-return]

    @pytest.fixture
    def service(self, store: DealRegistryStore) -> RecordingService:
        return RecordingService(store)

    # Recording.

    def test_empty_store(self, store: DealRegistryStore) -> None:
        assert store.head_position() == 0
        assert list(store.read_log(0, 10)) == []
        assert store.log_position_of(uuid4(), 1) is None

    def test_realistic_sequence_is_recorded_in_order(
        self, service: RecordingService, store: DealRegistryStore
    ) -> None:
        receipts = realistic_sequence(service)
        assert len(receipts) == 15
        positions = [r.position for r in receipts]
        assert all(a < b for a, b in zip(positions, positions[1:], strict=False))
        assert store.head_position() == positions[-1]  # a write ends with its event
        for receipt in receipts:
            assert store.log_position_of(receipt.aggregate_id, receipt.aggregate_version) == (
                receipt.position)
        assert store.log_position_of(DEAL_ID, 99) is None
        assert store.log_position_of(uuid4(), 1) is None

        deal = store.repository.get(DEAL_ID)
        assert deal.version == 8
        assert deal.status == "agreed"
        assert [p.pledge_id for p in deal.active_pledges()] == ["pl-inr", "pl-jpy"]
        assert deal.pledges["pl-inr"].usd.low == D("200000000.00")
        assert deal.pledges["pl-jpy"].usd.high == D("200000000.00")
        assert deal.joint_venture["equity"] == {JP_FIRM: D("50.50"), IN_FIRM: D("29.5"),
                                                THIRD_FIRM: D("20")}
        facility = store.repository.get(FACILITY_DEAL)
        assert (facility.status, facility.version) == ("cancelled", 3)
        assert facility.facility["materials"] == ["lithium", "cobalt", "nickel"]
        meeting = store.repository.get(MEETING)
        assert meeting.closed_door is True
        assert meeting.government_bodies == ["METI", "MeitY"]

    def test_envelopes_match_receipts(self, service: RecordingService,
                                      store: DealRegistryStore) -> None:
        receipts = realistic_sequence(service)
        out = envelopes_from(list(store.read_log(0, 1000)), store.mapper)
        assert [(e.event_id, e.position, e.aggregate_version) for e in out] == [
            (r.event_id, r.position, r.aggregate_version) for r in receipts]
        assert [e.recorded_by for e in out] == [r.recorded_by for r in receipts]
        assert {e.type for e in out} == set(EventType)
        for envelope in out:
            envelope.typed_payload()
        by_deal = [e for e in out if e.aggregate_id == DEAL_ID]
        assert by_deal[0].previous_hash == GENESIS_HASH
        for before, after in zip(by_deal, by_deal[1:], strict=False):
            assert after.previous_hash == before.hash

    # Replay and conflicts.

    def test_replay_and_idempotency_conflict(self, service: RecordingService,
                                             store: DealRegistryStore) -> None:
        record_firms_and_deal(service)
        first = record(service, pledge_body("p-1", "pl-1"))
        head = store.head_position()
        again = record(service, pledge_body("p-1", "pl-1"))
        assert again == first.model_copy(update={"replayed": True})
        with pytest.raises(IdempotencyConflict):
            record(service, pledge_body("p-1", "pl-1", low="1"))
        assert store.head_position() == head

    def test_version_conflict(self, service: RecordingService,
                              store: DealRegistryStore) -> None:
        record_firms_and_deal(service)
        record(service, pledge_body("p-1", "pl-1", expected_version=1))
        head = store.head_position()
        with pytest.raises(VersionConflict) as caught:
            record(service, pledge_body("p-2", "pl-2", expected_version=1))
        assert (caught.value.expected, caught.value.actual) == (1, 2)
        assert store.head_position() == head

    def test_concurrent_save_of_the_same_version_is_refused(
        self, service: RecordingService, store: DealRegistryStore
    ) -> None:
        record_firms_and_deal(service)
        first = store.repository.get(DEAL_ID)
        second = store.repository.get(DEAL_ID)
        first.cancel("first writer", provenance())
        second.cancel("second writer", provenance())
        store.save(first)
        head = store.head_position()
        with pytest.raises(IntegrityError):
            store.save(second)
        assert store.head_position() == head
        assert store.repository.get(DEAL_ID).cancellation_reason == "first writer"
        duplicate = Firm.register(JP_FIRM, "Again", "JP", "other", provenance())
        with pytest.raises(IntegrityError):
            store.save(duplicate)
        assert store.head_position() == head
        assert store.repository.get(firm_id(JP_FIRM)).name != "Again"

    def test_positions_stay_gap_free_after_a_refused_save(
        self, service: RecordingService, store: DealRegistryStore
    ) -> None:
        record_firms_and_deal(service)
        duplicate = Firm.register(JP_FIRM, "Again", "JP", "other", provenance())
        with pytest.raises(IntegrityError):
            store.save(duplicate)
        record(service, pledge_body("p-1", "pl-1"))
        ids = [n.id for n in store.read_log(0, 1000)]
        assert ids == list(range(1, len(ids) + 1))

    # Durability.

    def test_reopened_store_has_the_same_state_log_and_chain(
        self, service: RecordingService, store: DealRegistryStore, open_store: Any
    ) -> None:
        receipts = realistic_sequence(service)
        before = {i: vars(store.repository.get(i)) for i in (DEAL_ID, FACILITY_DEAL, MEETING)}
        log_before = [(n.id, n.originator_id, n.originator_version, n.topic, n.state)
                      for n in store.read_log(0, 1000)]
        store.close()
        reopened: DealRegistryStore = open_store()
        after = {i: vars(reopened.repository.get(i)) for i in (DEAL_ID, FACILITY_DEAL, MEETING)}
        assert after == before
        assert [(n.id, n.originator_id, n.originator_version, n.topic, n.state)
                for n in reopened.read_log(0, 1000)] == log_before
        assert reopened.head_position() == receipts[-1].position
        for aggregate_id in (DEAL_ID, FACILITY_DEAL, MEETING, firm_id(JP_FIRM)):
            events = list(reopened.events.get(aggregate_id))
            assert chain_is_intact(events)
            assert events[-1].hash() == reopened.repository.get(aggregate_id).last_hash
        # And it keeps recording where it left off.
        next_receipt = record(RecordingService(reopened), pledge_body("p-new", "pl-new"))
        assert next_receipt.position == receipts[-1].position + 1
        assert next_receipt.aggregate_version == 9

    def test_storage_round_trip_keeps_every_hash(self, store: DealRegistryStore) -> None:
        prov = provenance()
        firms = [Firm.register(code, code, "JP", "other", prov)
                 for code in (JP_FIRM, IN_FIRM)]
        deal = Deal.propose(DEAL_ID, "t", "joint_venture", "recycling", [JP_FIRM, IN_FIRM],
                            "", prov)
        value = amount("1.50", "2.500", "INR")
        deal.make_pledge("pl-1", IN_FIRM, "IN", value, usd_of(value), prov)
        deal.form_joint_venture("V", {JP_FIRM: D("50.50"), IN_FIRM: D("49.5")}, prov)
        hashes = [e.hash() for e in deal.pending_events]
        store.save(*firms, deal)
        stored = list(store.events.get(DEAL_ID))
        assert [e.hash() for e in stored] == hashes
        assert str(stored[1].amount_high) == "2.500"
        assert stored[0].occurred_at == prov.occurred_at
        assert stored[0].occurred_at.tzinfo is not None

    # Reading the log.

    def test_read_log_pages(self, service: RecordingService, store: DealRegistryStore) -> None:
        realistic_sequence(service)
        head = store.head_position()
        everything = list(store.read_log(0, 1000))
        assert [n.id for n in everything] == sorted({n.id for n in everything})
        assert everything[-1].id == head
        paged: list[Any] = []
        after = 0
        while True:
            page = list(store.read_log(after, 4))
            if not page:
                break
            assert len(page) <= 4
            assert all(n.id > after for n in page)
            paged.extend(page)
            after = page[-1].id
        assert [n.id for n in paged] == [n.id for n in everything]
        assert [n.id for n in store.read_log(5, 3)] == [n.id for n in everything if n.id > 5][:3]
        assert list(store.read_log(head, 10)) == []
        assert [n.id for n in store.read_log(head - 1, 10)] == [head]
        assert [n.id for n in store.read_log(0, 1)] == [everything[0].id]

    def test_stored_aggregates_names_those_with_events(
        self, service: RecordingService, store: DealRegistryStore
    ) -> None:
        realistic_sequence(service)
        stored = [DEAL_ID, FACILITY_DEAL, MEETING, firm_id(JP_FIRM)]
        missing = [uuid4() for _ in range(700)]  # past one query's 500 ids
        assert store.stored_aggregates([*missing, *stored]) == set(stored)
        assert store.stored_aggregates(missing) == set()
        assert store.stored_aggregates([]) == set()


def provenance() -> Provenance:
    return Provenance(datetime(2025, 8, 29, 1, 30, tzinfo=UTC), "store-test", "evt-store")


class TestSQLiteEventStore(EventStoreContract):
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return Settings(data_dir=tmp_path / "data")


class TestPostgresEventStore(EventStoreContract):
    @pytest.fixture
    def settings(self, tmp_path: Path, postgres_url: str) -> Settings:
        return Settings(data_dir=tmp_path / "data", database_url=postgres_url)

    def test_positions_stay_gap_free_after_a_refused_save(
        self, service: RecordingService, store: DealRegistryStore
    ) -> None:
        """PostgreSQL's sequence is not rolled back by a refused insert: positions stay strictly
        increasing, with a gap where the refused event would have been."""
        record_firms_and_deal(service)
        head = store.head_position()
        duplicate = Firm.register(JP_FIRM, "Again", "JP", "other", provenance())
        with pytest.raises(IntegrityError):
            store.save(duplicate)
        record(service, pledge_body("p-1", "pl-1"))
        ids = [n.id for n in store.read_log(0, 1000)]
        assert ids == sorted(set(ids))
        assert ids[:head] == list(range(1, head + 1))
        assert ids[head] == head + 2
