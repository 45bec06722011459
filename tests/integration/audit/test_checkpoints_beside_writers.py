"""Checkpoints are taken while partners keep writing to the same database, on SQLite and on
PostgreSQL: none fails for the writers' sake, and the log then verifies clean."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from services.registry.audit.checkpoints import take_checkpoint
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

        writer = threading.Thread(target=write)
        writer.start()
        writing.wait()
        taken = []
        while writer.is_alive():
            taken.append(take_checkpoint(audited.store, audited.checkpoints, "on_demand"))
        writer.join()
        taken.append(take_checkpoint(audited.store, audited.checkpoints, "on_demand"))
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
