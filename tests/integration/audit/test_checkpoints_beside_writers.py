"""Checkpoints are taken, and two followers (two replicas of the write service) extend the
tree, while partners keep writing to the same database, on SQLite and on PostgreSQL: none
fails for the writers' sake, and the log then verifies clean."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from services.registry.audit.checkpoints import (
    Checkpoint,
    CheckpointStore,
    extend_tree,
    take_checkpoint,
)
from services.shared.settings import Settings
from tests.integration.audit.test_tamper_evidence import Audited
from tests.unit.registry.support import pledge_body, record

pytestmark = pytest.mark.integration


def checkpoints_beside_writers(settings: Settings) -> None:
    audited = Audited(settings)
    try:
        audited.populate(pledges=1)
        writing = threading.Event()
        errors: list[BaseException] = []

        def write() -> None:
            writing.set()
            try:
                for n in range(150):
                    record(audited.service, pledge_body(f"w-{n}", f"w-{n}", low="5",
                                                         high="9"))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        def follow() -> None:
            try:
                while writer.is_alive():
                    extend_tree(audited.store, audited.checkpoints, audited.signer,
                                keep_seconds=0.05)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        writing.wait()
        followers = [threading.Thread(target=follow) for _ in range(2)]
        for follower in followers:
            follower.start()
        taken = []
        while writer.is_alive():
            taken.append(take_checkpoint(audited.store, audited.checkpoints, audited.signer))
        writer.join()
        for follower in followers:
            follower.join()
        taken.append(take_checkpoint(audited.store, audited.checkpoints, audited.signer))
        assert errors == []
        assert len(taken) >= 2
        assert taken[-1] is not None
        assert taken[-1].last_position == audited.store.head_position()
        report = audited.verify()
        assert report.ok, report.as_dict()
    finally:
        audited.close()


def test_checkpoints_beside_writers_on_sqlite(tmp_path: Path) -> None:
    checkpoints_beside_writers(Settings(data_dir=tmp_path))


def test_checkpoints_beside_writers_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    checkpoints_beside_writers(Settings(data_dir=tmp_path, database_url=postgres_url))


class OvertakenEveryTime(CheckpointStore):
    """The checkpoints as a writer sees them when, every time it has read the newest
    checkpoint outside a transaction, another replica records an event and extends the tree
    before the writer can write: each optimistic try loses its race."""

    def __init__(self, audited: Audited) -> None:
        super().__init__(audited.checkpoints.engine)
        self.audited = audited
        self.overtaken = 0

    def latest(self, conn: Any = None) -> Checkpoint | None:
        newest = super().latest(conn)
        if conn is None:
            self.overtaken += 1
            record(self.audited.service, pledge_body(f"o-{self.overtaken}",
                                                      f"o-{self.overtaken}", low="5", high="9"))
            extend_tree(self.audited.store, self.audited.checkpoints, self.audited.signer,
                        keep_seconds=0)
        return newest


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_writer_that_keeps_losing_races_still_records_its_head(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    audited = Audited(Settings(data_dir=tmp_path, database_url=url))
    try:
        audited.populate(pledges=1)
        overtaking = OvertakenEveryTime(audited)
        head = audited.store.head_position()
        taken = take_checkpoint(audited.store, overtaking, audited.signer)
        assert taken.reason == "on_demand" and taken.last_position >= head
        head = audited.store.head_position()
        extend_tree(audited.store, overtaking, audited.signer, keep_seconds=0)
        newest = audited.checkpoints.latest()
        assert newest is not None and newest.last_position >= head
        assert overtaking.overtaken >= 2
        assert audited.verify().ok
    finally:
        audited.close()
