"""Recording passes keep the aggregates they committed (RecentAggregates) and decide on them
without reading the store again. That must never decide on what another writer has changed,
nor keep what a failed commit left half-decided: on SQLite and PostgreSQL, with a second
registry (another replica) on the same store, and a store that refuses a commit for real."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError

from contracts.submissions_v1 import Receipt
from services.registry.adapters.event_store import DealRegistryStore, open_event_store
from services.registry.application.commands import RecordPartnerEvent
from services.registry.application.handlers import RecordingService
from services.registry.application.recording_queue import RecordingQueue
from services.registry.domain.deal import Deal
from services.shared.settings import Settings
from tests.unit.registry.support import (
    DEAL_ID,
    IN_FIRM,
    SUBMISSION,
    body,
    pledge_body,
    record_firms_and_deal,
)

pytestmark = pytest.mark.integration


def command(body_: dict[str, Any]) -> RecordPartnerEvent:
    return RecordPartnerEvent("partner-a", SUBMISSION.validate_python(body_))


def in_a_pass(service: RecordingService, body_: dict[str, Any]) -> Receipt | Exception:
    (outcome,) = service.record_commands([command(body_)])
    return outcome


def revision(event_id: str, pledge_id: str, high: str) -> dict[str, Any]:
    return body(event_id, "pledge_revised", {
        "deal_id": str(DEAL_ID), "pledge_id": pledge_id, "reason": "board approval",
        "amount": {"low": "1", "high": high, "currency": "USD"}})


class Replicas:
    """Two registries on one store, as two replicas (or processes) would be."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stores: list[DealRegistryStore] = [open_event_store(settings) for _ in range(2)]
        self.a, self.b = (RecordingService(store) for store in self.stores)

    def deal(self) -> Deal:
        fresh = open_event_store(self.settings)
        try:
            return fresh.repository.get(DEAL_ID)  # type: ignore[no-any-return]
        finally:
            fresh.close()

    def close(self) -> None:
        for service in (self.a, self.b):
            service.committer.close()
        for store in self.stores:
            store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Replicas]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    running = Replicas(Settings(data_dir=tmp_path, database_url=url))
    record_firms_and_deal(running.a)
    yield running
    running.close()


def test_a_pass_decides_on_what_another_replica_recorded_since(replicas: Replicas) -> None:
    first = in_a_pass(replicas.a, pledge_body("p-1", "p-1", low="1", high="2"))
    assert isinstance(first, Receipt) and first.aggregate_version == 2
    assert replicas.a.recent.get(DEAL_ID) is not None  # kept: the next pass will not load it

    # The other replica pledges on the deal; the first one's kept copy lacks that pledge.
    other = in_a_pass(replicas.b, pledge_body("p-2", "p-2", low="1", high="2"))
    assert isinstance(other, Receipt) and other.aggregate_version == 3

    revised = in_a_pass(replicas.a, revision("r-2", "p-2", "5"))
    assert isinstance(revised, Receipt), revised
    assert revised.aggregate_version == 4
    assert replicas.a.recent.dropped_for_other_writers == 1
    again = in_a_pass(replicas.a, pledge_body("p-3", "p-3", low="1", high="2"))
    assert isinstance(again, Receipt) and again.aggregate_version == 5
    deal = replicas.deal()
    assert deal.version == 5 and sorted(deal.pledges) == ["p-1", "p-2", "p-3"]
    assert deal.pledges["p-2"].amount.high == 5


def test_a_replica_writing_during_a_pass_fails_its_commit_and_nothing_is_lost(
        replicas: Replicas) -> None:
    assert isinstance(in_a_pass(replicas.a, pledge_body("p-1", "p-1", low="1", high="2")),
                      Receipt)
    save = replicas.a.committer.save_events

    def other_replica_first(events: list[Any], receipts: list[Any] | None = None) -> Any:
        # Between this pass's decision and its commit, the other replica takes the version.
        replicas.a.committer.save_events = save  # type: ignore[method-assign]
        assert isinstance(in_a_pass(replicas.b, pledge_body("p-b", "p-b", low="1", high="2")),
                          Receipt)
        return save(events, receipts)

    replicas.a.committer.save_events = other_replica_first  # type: ignore[method-assign]
    outcome = in_a_pass(replicas.a, pledge_body("p-2", "p-2", low="1", high="2"))
    assert isinstance(outcome, Receipt) and outcome.aggregate_version == 4  # decided again
    later = in_a_pass(replicas.a, pledge_body("p-3", "p-3", low="1", high="2"))
    assert isinstance(later, Receipt) and later.aggregate_version == 5
    deal = replicas.deal()
    assert deal.version == 5 and sorted(deal.pledges) == ["p-1", "p-2", "p-3", "p-b"]


def test_a_commit_the_store_refuses_leaves_no_half_decided_aggregate(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    store = DealRegistryStore(env={**settings.event_store_env(), "SQLITE_LOCK_TIMEOUT": "1"})
    service = RecordingService(store)
    queue = RecordingQueue(service)
    try:
        record_firms_and_deal(service)
        (first,) = queue.submit([command(pledge_body("p-1", "p-1", low="1", high="2"))]).result()
        assert isinstance(first, Receipt) and first.aggregate_version == 2

        # Another program (a backup, an operator's sqlite3 shell) holds the write lock: the
        # pass decides on the kept deal, and its commit fails.
        holder = sqlite3.connect(tmp_path / "events.db", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(OperationalError):
            queue.submit([command(pledge_body("p-2", "p-2", low="1", high="2"))]).result()
        holder.execute("ROLLBACK")
        holder.close()

        # The deal the failed pass had decided on (at version 3, in memory) is not used:
        # the retry is recorded at version 3, the next at 4, in one unbroken chain.
        (retry,) = queue.submit([command(pledge_body("p-2", "p-2", low="1", high="2"))]).result()
        (after,) = queue.submit([command(pledge_body("p-3", "p-3", low="1", high="2"))]).result()
        assert isinstance(retry, Receipt) and retry.aggregate_version == 3
        assert isinstance(after, Receipt) and after.aggregate_version == 4
        versions = [e.originator_version for e in store.events.get(DEAL_ID)]
        assert versions == [1, 2, 3, 4]
    finally:
        queue.close()
        service.committer.close()
        store.close()


def test_waiting_requests_share_a_pass_and_each_gets_its_own_answer(tmp_path: Path) -> None:
    store = open_event_store(Settings(data_dir=tmp_path))
    service = RecordingService(store)
    record_firms_and_deal(service)
    queue = RecordingQueue(service)
    started = threading.Event()
    release = threading.Event()
    record_commands = service.record_commands

    def held_first_pass(commands: Any) -> Any:
        if not started.is_set():
            started.set()
            release.wait()  # the next requests queue meanwhile
        return record_commands(commands)

    service.record_commands = held_first_pass  # type: ignore[method-assign]
    try:
        first = queue.submit([command(pledge_body("p-0", "p-0", low="1", high="2"))])
        started.wait()
        waiting = [queue.submit([command(pledge_body(f"p-{n}", f"p-{n}", low="1", high="2"))])
                   for n in range(1, 6)]
        same_again = queue.submit([command(pledge_body("p-1", "p-1", low="1", high="2"))])
        refused = queue.submit([command(pledge_body("p-x", "p-x", firm="nobody"))])
        release.set()
        assert isinstance(first.result()[0], Receipt)
        receipts = [future.result()[0] for future in waiting]
        assert [r.aggregate_version for r in receipts] == [3, 4, 5, 6, 7]  # type: ignore[union-attr]
        (replay,) = same_again.result()
        assert isinstance(replay, Receipt) and replay.replayed
        assert replay.position == receipts[0].position  # type: ignore[union-attr]
        (refusal,) = refused.result()
        assert isinstance(refusal, Exception) and not isinstance(refusal, Receipt)
        assert queue.passes == 2
        assert IN_FIRM in service.store.repository.get(DEAL_ID).parties
    finally:
        queue.close()
        service.committer.close()
        store.close()


def test_a_request_cancelled_while_queued_is_not_recorded_and_the_queue_goes_on(
        tmp_path: Path) -> None:
    """A waiter that goes away (its task cancelled: the client disconnected) before its pass
    is skipped; answering its cancelled future must not stop the recording thread."""
    store = open_event_store(Settings(data_dir=tmp_path))
    service = RecordingService(store)
    record_firms_and_deal(service)
    queue = RecordingQueue(service)
    started, release = threading.Event(), threading.Event()
    record_commands = service.record_commands

    def held_first_pass(commands: Any) -> Any:
        if not started.is_set():
            started.set()
            release.wait()
        return record_commands(commands)

    service.record_commands = held_first_pass  # type: ignore[method-assign]
    try:
        first = queue.submit([command(pledge_body("p-0", "p-0", low="1", high="2"))])
        started.wait()
        gone = queue.submit([command(pledge_body("p-gone", "p-gone", low="1", high="2"))])
        assert gone.cancel()
        release.set()
        assert isinstance(first.result()[0], Receipt)
        # Without the skip, the recording thread died on the cancelled future and this
        # request was never answered.
        (after,) = queue.submit([command(pledge_body("p-1", "p-1", low="1", high="2"))]
                                ).result(timeout=30)
        assert isinstance(after, Receipt) and after.aggregate_version == 3
        assert "p-gone" not in store.repository.get(DEAL_ID).pledges
    finally:
        queue.close()
        service.committer.close()
        store.close()
