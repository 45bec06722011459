"""Requests on one deal take turns in a process: many threads pledging to the same deal at
once all succeed, in one chain, and none of their saves is refused for a stale version (a
refusal fails its whole group-commit batch and costs a retry)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.submissions_v1 import Receipt
from services.registry.adapters.event_store import DealRegistryStore, open_event_store
from services.registry.application.handlers import RecordingService
from services.shared.settings import Settings
from tests.unit.registry.support import DEAL_ID, pledge_body, record, record_firms_and_deal

WRITERS = 16
PLEDGES_EACH = 10


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RecordingService]:
    store: DealRegistryStore = open_event_store(Settings(data_dir=tmp_path))
    service = RecordingService(store)
    record_firms_and_deal(service)
    yield service
    service.committer.close()
    store.close()


def test_concurrent_pledges_on_one_deal_never_conflict(service: RecordingService) -> None:
    start = threading.Barrier(WRITERS)
    receipts: list[Receipt] = []
    errors: list[BaseException] = []

    def pledge(writer: int) -> None:
        start.wait()
        try:
            for n in range(PLEDGES_EACH):
                receipts.append(record(service, pledge_body(f"w{writer}-{n}", f"w{writer}-{n}",
                                                            low="1", high="2")))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=pledge, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert service.version_conflicts == 0
    versions = sorted(r.aggregate_version for r in receipts if r.aggregate_id == DEAL_ID)
    assert versions == list(range(2, 2 + WRITERS * PLEDGES_EACH))
    assert len(service.store.repository.get(DEAL_ID).pledges) == WRITERS * PLEDGES_EACH
