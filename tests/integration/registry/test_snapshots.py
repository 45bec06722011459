"""Snapshots on SQLite and PostgreSQL, through the write path as partners use it.

With the aggregate cache off, every load reads the store, so each assertion here is about
what a snapshot plus the events after it rebuild.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from contracts.submissions_v1 import Receipt
from services.registry.adapters.event_store import DealRegistryStore, open_event_store
from services.registry.application.commands import RecordPartnerEvent
from services.registry.application.handlers import RecordingService
from services.registry.domain.deal import Deal
from services.shared.settings import Settings
from tests.unit.registry.support import (
    DEAL_ID,
    JP_FIRM,
    SUBMISSION,
    THIRD_FIRM,
    body,
    chain_is_intact,
    pledge_body,
    record,
    record_firms_and_deal,
)

pytestmark = pytest.mark.integration

INTERVAL = 5
NOT_STATE = {"last_event", "restored_hash", "_pending_events"}


def grow_deal(service: RecordingService, events: int) -> None:
    """Pledges and revisions on DEAL_ID until it has `events` versions in all."""
    record_firms_and_deal(service)
    for version in range(2, events + 1):
        if version % 2 == 0:
            record(service, pledge_body(f"p-{version}", f"pl-{version}", firm=JP_FIRM,
                                        low=f"{version}.10", high=f"{version * 3}.500",
                                        currency="INR"))
        else:
            record(service, body(f"r-{version}", "pledge_revised", {
                "deal_id": str(DEAL_ID), "pledge_id": f"pl-{version - 1}", "reason": "revised",
                "amount": {"low": f"{version}.25", "high": f"{version * 4}", "currency": "INR"}}))


def totals(deal: Deal) -> tuple[Decimal, Decimal]:
    active = deal.active_pledges()
    return sum((p.usd.low for p in active), Decimal(0)), sum((p.usd.high for p in active),
                                                              Decimal(0))


def state(deal: Deal) -> dict[str, Any]:
    return {k: v for k, v in vars(deal).items() if k not in NOT_STATE}


class SnapshotContract:
    """Subclasses provide `settings`: a store with snapshots every INTERVAL, cache off."""

    @pytest.fixture
    def settings(self) -> Settings:
        raise NotImplementedError

    @pytest.fixture
    def stores(self) -> Iterator[list[DealRegistryStore]]:
        opened: list[DealRegistryStore] = []
        yield opened
        for store in opened:
            store.close()

    @pytest.fixture
    def open_store(self, settings: Settings, stores: list[DealRegistryStore]) -> Any:
        def opener(**changes: Any) -> DealRegistryStore:
            store = open_event_store(settings.model_copy(update=changes))
            stores.append(store)
            return store

        return opener

    @pytest.fixture
    def store(self, open_store: Any) -> DealRegistryStore:
        return open_store()  # type: ignore[no-any-return]

    @pytest.fixture
    def service(self, store: DealRegistryStore) -> RecordingService:
        return RecordingService(store)

    def test_a_deal_past_the_interval_has_snapshots(
        self, service: RecordingService, store: DealRegistryStore
    ) -> None:
        assert store.repository.cache is None
        grow_deal(service, 2 * INTERVAL + 3)
        assert store.snapshots is not None
        snapshots = list(store.snapshots.get(DEAL_ID))
        assert [s.originator_version for s in snapshots] == [INTERVAL, 2 * INTERVAL]
        events = list(store.events.get(DEAL_ID))
        for snapshot in snapshots:
            assert snapshot.state["restored_hash"] == events[snapshot.originator_version - 1].hash()

    def test_a_pass_whose_events_reach_the_interval_snapshots_the_deal_it_holds(
        self, service: RecordingService, store: DealRegistryStore, open_store: Any
    ) -> None:
        record_firms_and_deal(service)
        pledges = [pledge_body(f"p-{n}", f"pl-{n}", firm=JP_FIRM, low=f"{n}.5", high="90")
                   for n in range(INTERVAL + 2)]
        outcomes = service.record_commands(
            [RecordPartnerEvent("partner-a", SUBMISSION.validate_python(p)) for p in pledges])
        assert all(isinstance(outcome, Receipt) for outcome in outcomes)
        assert store.snapshots is not None
        # One pass took the deal from version 1 to INTERVAL + 3: one snapshot, at its head.
        assert [s.originator_version for s in store.snapshots.get(DEAL_ID)] == [INTERVAL + 3]
        from_snapshot: Deal = open_store().repository.get(DEAL_ID)
        replayed: Deal = open_store(snapshot_interval=0).repository.get(DEAL_ID)
        assert "last_event" not in vars(from_snapshot)  # nothing replayed: all from the snapshot
        assert state(from_snapshot) == state(replayed)
        assert from_snapshot.last_hash == replayed.last_hash

    def test_loading_from_a_snapshot_equals_replaying_every_event(
        self, service: RecordingService, store: DealRegistryStore, open_store: Any
    ) -> None:
        grow_deal(service, 2 * INTERVAL + 3)
        from_snapshot: Deal = open_store().repository.get(DEAL_ID)
        replaying = open_store(snapshot_interval=0)
        assert replaying.snapshots is None
        replayed: Deal = replaying.repository.get(DEAL_ID)
        assert "restored_hash" not in vars(replayed)
        assert from_snapshot.version == replayed.version == 2 * INTERVAL + 3
        assert from_snapshot.pledges == replayed.pledges
        assert len(replayed.pledges) == INTERVAL + 1
        assert totals(from_snapshot) == totals(replayed)
        assert from_snapshot.status == replayed.status
        assert from_snapshot.last_hash == replayed.last_hash
        assert state(from_snapshot) == state(replayed)

    def test_the_next_command_after_a_snapshot_load_chains_to_the_stored_events(
        self, store: DealRegistryStore, open_store: Any
    ) -> None:
        grow_deal(RecordingService(store), 2 * INTERVAL)  # the snapshot is the deal's head
        reopened = open_store()
        loaded = reopened.repository.get(DEAL_ID)
        assert "last_event" not in vars(loaded)  # nothing replayed: all from the snapshot
        receipt = record(RecordingService(reopened), body("cx", "deal_cancelled", {
            "deal_id": str(DEAL_ID), "reason": "the venture was dissolved"}))
        assert receipt.aggregate_version == 2 * INTERVAL + 1
        events = list(reopened.events.get(DEAL_ID))
        assert events[-1].previous_hash == events[-2].hash()
        assert chain_is_intact(events)
        assert open_store().repository.get(DEAL_ID).status == "cancelled"

    def test_snapshots_stay_out_of_the_notification_log(
        self, service: RecordingService, store: DealRegistryStore
    ) -> None:
        grow_deal(service, 3 * INTERVAL)
        notifications = list(store.read_log(0, 10_000))
        assert store.head_position() == notifications[-1].id
        snapshot_topic = Deal.Snapshot.TOPIC
        assert all(n.topic != snapshot_topic for n in notifications)
        deal_notifications = [n for n in notifications if n.originator_id == DEAL_ID]
        assert [n.originator_version for n in deal_notifications] == list(
            range(1, 3 * INTERVAL + 1))
        assert chain_is_intact(list(store.events.get(DEAL_ID)))

    refuse_inserts: tuple[str, ...] = ()  # SQL that makes the snapshots table ({table}) refuse rows

    def test_a_snapshot_that_cannot_be_written_does_not_fail_the_save(
        self, service: RecordingService, store: DealRegistryStore
    ) -> None:
        grow_deal(service, INTERVAL - 1)
        assert store.snapshots is not None
        recorder: Any = store.snapshots.recorder
        with recorder.datastore.transaction(commit=True) as cursor:
            for statement in self.refuse_inserts:
                cursor.execute(statement.format(table=recorder.events_table_name))
        receipt = record(service, pledge_body("p-last", "pl-last", firm=THIRD_FIRM))
        assert receipt.aggregate_version == INTERVAL
        last = list(store.events.get(DEAL_ID))[-1]
        assert (last.originator_version, last.pledge_id) == (INTERVAL, "pl-last")
        assert list(store.snapshots.get(DEAL_ID)) == []


class TestSQLiteSnapshots(SnapshotContract):
    refuse_inserts = (
        "CREATE TRIGGER refuse_snapshots BEFORE INSERT ON {table} "
        "BEGIN SELECT RAISE(ABORT, 'snapshots refused'); END",
    )

    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return Settings(data_dir=tmp_path / "data", aggregate_cache_size=0,
                        snapshot_interval=INTERVAL)


class TestPostgresSnapshots(SnapshotContract):
    refuse_inserts = (
        "CREATE FUNCTION refuse_snapshots() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'snapshots refused'; END $$",
        "CREATE TRIGGER refuse_snapshots BEFORE INSERT ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION refuse_snapshots()",
    )

    @pytest.fixture
    def settings(self, tmp_path: Path, postgres_url: str) -> Settings:
        return Settings(data_dir=tmp_path / "data", database_url=postgres_url,
                        aggregate_cache_size=0, snapshot_interval=INTERVAL)
