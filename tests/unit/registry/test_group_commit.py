"""Group commit: concurrent saves share transactions, yet each keeps its own outcome."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from services.registry.application.group_commit import GroupCommitter


class Note(Aggregate):
    def __init__(self, text: str) -> None:
        self.text = text


@pytest.fixture
def store(tmp_path: Path) -> Any:
    app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                           "SQLITE_DBNAME": str(tmp_path / "notes.db")})
    yield app
    app.close()


def save_concurrently(committer: GroupCommitter, aggregates: list[Any]) -> list[Any]:
    outcomes: list[Any] = [None] * len(aggregates)
    start = threading.Barrier(len(aggregates))

    def save(i: int) -> None:
        start.wait()
        try:
            outcomes[i] = committer.save(aggregates[i])
        except Exception as exc:  # noqa: BLE001 - asserted on
            outcomes[i] = exc

    threads = [threading.Thread(target=save, args=(i,)) for i in range(len(aggregates))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def test_concurrent_saves_share_transactions(store: Any) -> None:
    committer = GroupCommitter(store)
    notes = [Note(f"n{i}") for i in range(64)]
    outcomes = save_concurrently(committer, notes)
    committer.close()
    assert all(isinstance(o, list) and len(o) == 1 for o in outcomes)
    positions = sorted(o[0].notification.id for o in outcomes)
    assert positions == list(range(1, 65))
    assert committer.saved_requests == 64
    assert committer.batches < 64  # some requests rode along in another's transaction
    for note, outcome in zip(notes, outcomes, strict=True):
        assert outcome[0].domain_event.originator_id == note.id
        assert store.repository.get(note.id).text == note.text


def test_one_conflict_never_fails_its_neighbours(store: Any) -> None:
    committer = GroupCommitter(store)
    taken = Note("first")
    store.save(taken)
    clash = Note("clash")
    clash._id = taken.id  # same aggregate id, version 1 again: a conflict
    clash.pending_events[0] = type(clash.pending_events[0])(
        **{**vars(clash.pending_events[0]), "originator_id": taken.id})
    others = [Note(f"ok{i}") for i in range(15)]
    outcomes = save_concurrently(committer, [*others, clash])
    committer.close()
    assert isinstance(outcomes[-1], IntegrityError)
    assert all(isinstance(o, list) for o in outcomes[:-1])
    assert [store.repository.get(n.id).text for n in others] == [n.text for n in others]
    assert store.repository.get(taken.id).text == "first"
