"""A batch: decided in order against a shared unit of work, saved in one transaction,
and answered item by item exactly as single requests would be."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from contracts.submissions_v1 import Receipt
from services.registry.adapters.event_store import DealRegistryStore, open_event_store
from services.registry.application.errors import (
    AlreadyExists,
    IdempotencyConflict,
    VersionConflict,
)
from services.registry.application.handlers import RecordingService
from services.registry.domain.errors import UnknownReference
from services.shared.settings import Settings
from tests.unit.registry.support import (
    DEAL_ID,
    IN_FIRM,
    JP_FIRM,
    SUBMISSION,
    deal_body,
    firm_body,
    pledge_body,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DealRegistryStore]:
    opened = open_event_store(Settings(data_dir=tmp_path))
    yield opened
    opened.close()


@pytest.fixture
def service(store: DealRegistryStore) -> RecordingService:
    return RecordingService(store)


def many(service: RecordingService, bodies: list[dict[str, Any]]) -> list[Any]:
    return service.record_many("partner-a", [SUBMISSION.validate_python(b) for b in bodies])


def test_later_items_see_earlier_ones_and_all_commit_together(
    service: RecordingService, store: DealRegistryStore
) -> None:
    bodies = [firm_body(JP_FIRM), firm_body(IN_FIRM, "IN", "automaker"), deal_body(),
              pledge_body("p-1", "pl-1"), pledge_body("p-2", "pl-2", firm=JP_FIRM)]
    outcomes = many(service, bodies)
    assert all(isinstance(o, Receipt) for o in outcomes), outcomes
    assert [o.position for o in outcomes] == [1, 2, 3, 4, 5]  # receipts are kept beside the log
    assert [o.aggregate_version for o in outcomes[2:]] == [1, 2, 3]
    assert store.head_position() == 5
    assert set(store.repository.get(DEAL_ID).pledges) == {"pl-1", "pl-2"}


def test_refused_items_do_not_stop_the_others(
    service: RecordingService, store: DealRegistryStore
) -> None:
    outcomes = many(service, [
        firm_body(JP_FIRM), deal_body(parties=(JP_FIRM, "nobody-co")), firm_body(JP_FIRM),
        firm_body(IN_FIRM, "IN", "automaker"),
    ])
    assert isinstance(outcomes[0], Receipt) and isinstance(outcomes[3], Receipt)
    assert isinstance(outcomes[1], UnknownReference)
    assert isinstance(outcomes[2], Receipt) and outcomes[2].replayed  # same event id and body
    assert store.head_position() == 2


def test_an_event_id_twice_in_a_batch(service: RecordingService) -> None:
    first = firm_body(JP_FIRM)
    other = {**first, "payload": {**first["payload"], "name": "Another name"}}
    outcomes = many(service, [first, first, other])
    assert isinstance(outcomes[0], Receipt) and not outcomes[0].replayed
    assert outcomes[1] == outcomes[0].model_copy(update={"replayed": True})
    assert isinstance(outcomes[2], IdempotencyConflict)


def test_a_stale_expected_version_spoils_nothing_after_it(
    service: RecordingService, store: DealRegistryStore
) -> None:
    many(service, [firm_body(JP_FIRM), firm_body(IN_FIRM, "IN", "automaker"), deal_body()])
    outcomes = many(service, [
        pledge_body("p-1", "pl-1", expected_version=1),
        pledge_body("p-2", "pl-2", expected_version=1),  # stale: p-1 made it version 2
        pledge_body("p-3", "pl-3"),
    ])
    assert isinstance(outcomes[0], Receipt) and isinstance(outcomes[2], Receipt)
    assert isinstance(outcomes[1], VersionConflict)
    assert set(store.repository.get(DEAL_ID).pledges) == {"pl-1", "pl-3"}
    assert store.repository.get(DEAL_ID).version == 3


def test_a_rival_writer_makes_the_batch_go_one_by_one(
    service: RecordingService, store: DealRegistryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    many(service, [firm_body(JP_FIRM), firm_body(IN_FIRM, "IN", "automaker"), deal_body()])
    real = service.committer.save_events
    calls = []

    def rival_first(events: list[Any], receipts: list[Any] | None = None) -> Any:
        calls.append(len(events))
        if len(calls) == 1:
            raise IntegrityError("a rival wrote the same version")
        return real(events, receipts)

    monkeypatch.setattr(service.committer, "save_events", rival_first)
    outcomes = many(service, [pledge_body("p-1", "pl-1"), firm_body(JP_FIRM),
                              deal_body("deal-2")])
    assert isinstance(outcomes[0], Receipt)
    assert isinstance(outcomes[1], Receipt) and outcomes[1].replayed
    assert isinstance(outcomes[2], AlreadyExists)
    assert calls[0] == 1  # the batch's one decided item, then one save per item
