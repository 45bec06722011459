"""Checkpoints are taken, and two followers (two replicas of the write service) extend the
tree, while partners keep writing to the same database, on SQLite and on PostgreSQL: none
fails for the writers' sake, and the log then verifies clean."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from services.registry.audit.checkpoints import extend_tree, take_checkpoint
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
