"""RecordingService on a SQLite event store: receipts, idempotency, concurrency, envelopes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from contracts.events_v1 import EventType
from contracts.submissions_v1 import Receipt
from services.registry.adapters.event_store import DealRegistryStore, open_event_store
from services.registry.application.errors import (
    AlreadyExists,
    IdempotencyConflict,
    NotFound,
    VersionConflict,
)
from services.registry.application.handlers import SAVE_ATTEMPTS, RecordingService
from services.registry.application.rates import REFERENCE_RATE_SOURCE
from services.registry.domain.deal import Deal
from services.registry.domain.errors import InvalidValue, StateConflict, UnknownReference
from services.registry.domain.identities import derived_id, firm_id
from services.registry.relay.contract_events import envelopes_from
from services.shared.settings import Settings
from tests.unit.registry.support import (
    DEAL_ID,
    IN_FIRM,
    JP_FIRM,
    OCCURRED_AT,
    THIRD_FIRM,
    body,
    chain_is_intact,
    deal_body,
    firm_body,
    pledge_body,
    record,
    record_firms_and_deal,
)

D = Decimal


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def stores(settings: Settings) -> Iterator[list[DealRegistryStore]]:
    opened: list[DealRegistryStore] = []
    yield opened
    for store in opened:
        store.close()


@pytest.fixture
def store(settings: Settings, stores: list[DealRegistryStore]) -> DealRegistryStore:
    opened = open_event_store(settings)
    stores.append(opened)
    return opened


@pytest.fixture
def service(store: DealRegistryStore) -> RecordingService:
    return RecordingService(store)


@pytest.fixture
def with_deal(service: RecordingService) -> list[Receipt]:
    return record_firms_and_deal(service)


def envelopes(store: DealRegistryStore) -> list[Any]:
    return envelopes_from(list(store.read_log(0, 1000)), store.mapper)


def deal(store: DealRegistryStore, deal_id: UUID = DEAL_ID) -> Deal:
    return store.repository.get(deal_id)  # type: ignore[no-any-return]


# Receipts and positions.


def test_receipt_describes_the_recorded_event(service: RecordingService,
                                              store: DealRegistryStore) -> None:
    receipt = record(service, firm_body(JP_FIRM), by="partner-a")
    assert receipt.event_id == f"firm-{JP_FIRM}"
    assert receipt.type == "firm_registered"
    assert receipt.aggregate_id == firm_id(JP_FIRM)
    assert receipt.aggregate_version == 1
    assert receipt.position == 1
    assert receipt.recorded_by == "partner-a"
    assert receipt.replayed is False
    assert datetime.fromisoformat(receipt.recorded_at).tzinfo is not None
    # The receipt is kept beside the log, not in it: the log holds the event alone.
    assert store.head_position() == 1
    assert store.log_position_of(firm_id(JP_FIRM), 1) == 1
    kept = store.issued_receipt(derived_id("receipt", "partner-a", f"firm-{JP_FIRM}"))
    assert kept is not None and (kept.aggregate_id, kept.aggregate_version) == (
        firm_id(JP_FIRM), 1)


def test_positions_and_versions_advance(service: RecordingService,
                                        store: DealRegistryStore) -> None:
    receipts = record_firms_and_deal(service)
    receipts.append(record(service, pledge_body("p-1", "pl-1")))
    receipts.append(record(service, pledge_body("p-2", "pl-2", firm=JP_FIRM)))
    positions = [r.position for r in receipts]
    assert positions == [1, 2, 3, 4, 5, 6]  # one event per write: receipts are beside the log
    assert [r.aggregate_version for r in receipts] == [1, 1, 1, 1, 2, 3]
    assert receipts[-1].aggregate_id == DEAL_ID
    assert store.head_position() == 6
    for r in receipts:
        assert store.log_position_of(r.aggregate_id, r.aggregate_version) == r.position


def test_aggregate_ids_are_derived_when_not_given(service: RecordingService,
                                                  store: DealRegistryStore) -> None:
    record_firms_and_deal(service)
    meeting = record(service, body("meet-1", "meeting_held",
                                   {"title": "Round table", "location": "Delhi",
                                    "attendees": [JP_FIRM, IN_FIRM]}), by="partner-b")
    assert meeting.aggregate_id == derived_id("meeting", "partner-b", "meet-1")
    other = record(service, body("deal-2", "deal_proposed", {
        "title": "x", "format": "equity_investment", "sector": "electric_vehicles",
        "parties": [IN_FIRM]}))
    assert other.aggregate_id == derived_id("deal", "partner-a", "deal-2")
    record(service, pledge_body("p-anon"))
    assert list(deal(store).pledges) == [str(derived_id("pledge", "partner-a", "p-anon"))]


# Idempotency.


def test_replay_returns_the_identical_receipt_and_appends_nothing(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt]
) -> None:
    first = record(service, pledge_body("p-1", "pl-1"))
    head = store.head_position()
    again = record(service, pledge_body("p-1", "pl-1"))
    assert again.replayed is True
    assert again == first.model_copy(update={"replayed": True})
    assert store.head_position() == head
    assert deal(store).version == 2
    assert len(deal(store).pledges) == 1


def test_replay_of_a_creation_event_is_not_already_exists(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt]
) -> None:
    head = store.head_position()
    for original in with_deal:
        assert original.replayed is False
    again = record(service, firm_body(JP_FIRM))
    assert again == with_deal[0].model_copy(update={"replayed": True})
    again_deal = record(service, deal_body(parties=(JP_FIRM, IN_FIRM, THIRD_FIRM)))
    assert again_deal == with_deal[3].model_copy(update={"replayed": True})
    assert store.head_position() == head


def test_replay_answers_the_original_even_after_the_aggregate_moved_on(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt]
) -> None:
    first = record(service, pledge_body("p-1", "pl-1"))
    record(service, pledge_body("p-2", "pl-2"))
    record(service, body("cx", "deal_cancelled", {"deal_id": str(DEAL_ID), "reason": "off"}))
    head = store.head_position()
    # Now the pledge would be refused (deal cancelled), but a retry still gets its receipt.
    again = record(service, pledge_body("p-1", "pl-1"))
    assert (again.position, again.aggregate_version, again.recorded_at) == (
        first.position, 2, first.recorded_at)
    assert again.replayed is True
    assert store.head_position() == head


def test_same_event_id_with_another_body_is_an_idempotency_conflict(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt]
) -> None:
    record(service, pledge_body("p-1", "pl-1", low="100"))
    head = store.head_position()
    with pytest.raises(IdempotencyConflict) as caught:
        record(service, pledge_body("p-1", "pl-1", low="101"))
    assert caught.value.event_id == "p-1"
    with pytest.raises(IdempotencyConflict):
        record(service, pledge_body("p-1", "pl-1", low="100", occurred_at="2025-09-01T00:00:00Z"))
    with pytest.raises(IdempotencyConflict):  # even for a body that would be refused anyway
        record(service, pledge_body("p-1", "pl-1", firm="nobody-at-all"))
    assert store.head_position() == head
    assert deal(store).pledges["pl-1"].amount.low == D("100")
    assert deal(store).version == 2


def test_event_ids_are_scoped_to_the_principal(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt]
) -> None:
    a = record(service, pledge_body("p-1", "pl-1"), by="partner-a")
    b = record(service, pledge_body("p-1", "pl-2", low="5"), by="partner-b")
    assert b.replayed is False
    assert b.position > a.position
    assert (b.recorded_by, b.aggregate_version) == ("partner-b", 3)
    assert set(deal(store).pledges) == {"pl-1", "pl-2"}


def test_refused_event_leaves_no_receipt_so_a_corrected_retry_succeeds(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt]
) -> None:
    head = store.head_position()
    with pytest.raises(InvalidValue):
        record(service, pledge_body("p-1", "pl-1", low="500", high="400"))
    assert store.head_position() == head
    receipt = record(service, pledge_body("p-1", "pl-1", low="300", high="400"))
    assert receipt.replayed is False
    assert receipt.position == head + 1


# Optimistic concurrency.


def test_expected_version_matching_is_accepted(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt]
) -> None:
    receipt = record(service, pledge_body("p-1", "pl-1", expected_version=1))
    assert receipt.aggregate_version == 2
    receipt = record(service, pledge_body("p-2", "pl-2", expected_version=2))
    assert receipt.aggregate_version == 3
    assert record(service, firm_body("new-firm") | {"expected_version": 0}).aggregate_version == 1


@pytest.mark.parametrize("expected", [0, 1, 3, 10])
def test_stale_or_future_expected_version_is_a_version_conflict(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt], expected: int
) -> None:
    record(service, pledge_body("p-1", "pl-1"))  # deal now at version 2
    head = store.head_position()
    with pytest.raises(VersionConflict) as caught:
        record(service, pledge_body("p-2", "pl-2", expected_version=expected))
    assert (caught.value.expected, caught.value.actual) == (expected, 2)
    assert caught.value.aggregate_id == str(DEAL_ID)
    assert store.head_position() == head
    assert deal(store).version == 2
    # Nothing was remembered: the same event id with a fresh version is accepted.
    assert record(service, pledge_body("p-2", "pl-2", expected_version=2)).aggregate_version == 3


def test_expected_version_on_a_creation_must_be_zero(service: RecordingService,
                                                     store: DealRegistryStore) -> None:
    with pytest.raises(VersionConflict) as caught:
        record(service, firm_body(JP_FIRM) | {"expected_version": 1})
    assert (caught.value.expected, caught.value.actual) == (1, 0)
    assert store.head_position() == 0


# Existence and references.


def test_duplicate_firm_code_already_exists(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt]
) -> None:
    head = store.head_position()
    duplicate = firm_body(JP_FIRM) | {"event_id": "another-event"}
    with pytest.raises(AlreadyExists) as caught:
        record(service, duplicate)
    assert caught.value.field == "payload.code"
    with pytest.raises(AlreadyExists):  # another principal cannot take the code either
        record(service, duplicate, by="partner-b")
    assert store.head_position() == head


def test_duplicate_deal_id_already_exists(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt]
) -> None:
    head = store.head_position()
    with pytest.raises(AlreadyExists) as caught:
        record(service, deal_body("deal-again"))
    assert caught.value.field == "payload.deal_id"
    assert store.head_position() == head


@pytest.mark.parametrize(
    "make",
    [
        lambda deal_id: pledge_body("p-x", deal_id=deal_id),
        lambda deal_id: body("r-x", "pledge_revised", {
            "deal_id": str(deal_id), "pledge_id": "pl-1",
            "amount": {"low": "1", "high": "2", "currency": "USD"}}),
        lambda deal_id: body("w-x", "pledge_withdrawn",
                             {"deal_id": str(deal_id), "pledge_id": "pl-1"}),
        lambda deal_id: body("t-x", "tech_transfer_signed", {
            "deal_id": str(deal_id), "technology": "x", "licensor": JP_FIRM,
            "licensee": IN_FIRM}),
        lambda deal_id: body("c-x", "deal_cancelled", {"deal_id": str(deal_id),
                                                       "reason": "off"}),
    ],
    ids=["pledge", "revise", "withdraw", "tech_transfer", "cancel"],
)
def test_change_to_an_unknown_deal_is_not_found(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt], make: Any
) -> None:
    head = store.head_position()
    with pytest.raises(NotFound) as caught:
        record(service, make(uuid4()))
    assert caught.value.field == "payload.deal_id"
    assert store.head_position() == head


@pytest.mark.parametrize("target", ["firm", "receipt"])
def test_deal_id_of_another_kind_of_aggregate_is_not_found(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt], target: str
) -> None:
    other_id = firm_id(IN_FIRM) if target == "firm" else derived_id(
        "receipt", "partner-a", f"firm-{IN_FIRM}")
    if target == "firm":
        assert store.repository.get(other_id) is not None
    else:
        assert store.issued_receipt(other_id) is not None
    with pytest.raises(NotFound):
        record(service, pledge_body("p-x", deal_id=other_id))


def test_party_check_is_not_fooled_by_another_aggregate_at_the_firm_id(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt]
) -> None:
    with pytest.raises(InvalidValue) as squat:
        record(service, deal_body("squat", deal_id=firm_id("ghost-firm"), parties=(IN_FIRM,)))
    assert (squat.value.field, squat.value.rule) == ("payload.deal_id", "uuid4")
    with pytest.raises(UnknownReference) as caught:
        record(service, deal_body("d-ghost", deal_id=uuid4(), parties=(IN_FIRM, "ghost-firm")))
    assert caught.value.field == "payload.parties[1]"


def test_unregistered_party_is_an_unknown_reference(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt]
) -> None:
    head = store.head_position()
    with pytest.raises(UnknownReference) as caught:
        record(service, deal_body("d-2", deal_id=uuid4(), parties=(JP_FIRM, "lohum", "attero")))
    assert (caught.value.field, caught.value.rule) == ("payload.parties[1]", "registered_firm")
    assert "lohum" in caught.value.message
    with pytest.raises(UnknownReference) as caught:
        record(service, body("m-1", "meeting_held",
                             {"title": "t", "location": "l", "attendees": ["jbic", JP_FIRM]}))
    assert caught.value.field == "payload.attendees[0]"
    assert store.head_position() == head


def test_domain_refusals_pass_through_and_append_nothing(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt]
) -> None:
    record(service, body("cx", "deal_cancelled", {"deal_id": str(DEAL_ID), "reason": "off"}))
    head = store.head_position()
    with pytest.raises(StateConflict) as caught:
        record(service, pledge_body("p-late", "pl-late"))
    assert (caught.value.field, caught.value.rule) == ("deal_id", "deal_not_cancelled")
    assert store.head_position() == head


def test_pledge_by_a_registered_firm_that_is_not_a_party_is_refused(
    service: RecordingService, store: DealRegistryStore
) -> None:
    record_firms_and_deal(service)
    record(service, firm_body("lohum", "IN", "recycler"))
    head = store.head_position()
    with pytest.raises(InvalidValue) as caught:
        record(service, pledge_body("p-1", firm="lohum"))
    assert (caught.value.field, caught.value.rule) == ("firm", "is_party")
    assert store.head_position() == head


# Amounts and rates.


def test_reference_rate_converts_inr(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt]
) -> None:
    record(service, pledge_body("p-1", "pl-1", low="860000000", high="3440000000",
                                currency="INR"))
    recorded = deal(store).pledges["pl-1"]
    assert (recorded.usd.low, recorded.usd.high) == (D("10000000.00"), D("40000000.00"))
    assert recorded.usd.units_per_usd == D(86)
    assert recorded.usd.source == REFERENCE_RATE_SOURCE
    payload = envelopes(store)[-1].payload
    assert payload["usd"] == {"low": "10000000.00", "high": "40000000.00", "units_per_usd": "86",
                              "rate_source": REFERENCE_RATE_SOURCE}
    assert payload["amount"] == {"low": "860000000", "high": "3440000000", "currency": "INR"}


def test_currency_without_reference_rate_needs_payload_rate(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt]
) -> None:
    head = store.head_position()
    with pytest.raises(InvalidValue) as caught:
        record(service, pledge_body("p-eur", "pl-eur", low="920", high="1840", currency="EUR"))
    assert (caught.value.field, caught.value.rule) == ("payload.rate", "required")
    assert "EUR" in caught.value.message
    assert store.head_position() == head
    record(service, pledge_body("p-eur", "pl-eur", low="920", high="1840", currency="EUR",
                                rate={"units_per_usd": "0.92", "rate_source": "ECB 2025-08-29"}))
    recorded = deal(store).pledges["pl-eur"]
    assert (recorded.usd.low, recorded.usd.high) == (D("1000.00"), D("2000.00"))
    assert (recorded.usd.units_per_usd, recorded.usd.source) == (D("0.92"), "ECB 2025-08-29")


def test_partner_rate_overrides_the_reference_rate(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt]
) -> None:
    record(service, pledge_body("p-1", "pl-1", low="880", high="880", currency="INR",
                                rate={"units_per_usd": "88", "rate_source": "RBI"}))
    assert deal(store).pledges["pl-1"].usd.low == D("10.00")


def test_usd_pledge_with_a_rate_other_than_one_is_refused(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt]
) -> None:
    with pytest.raises(InvalidValue) as caught:
        record(service, pledge_body("p-1", rate={"units_per_usd": "2", "rate_source": "x"}))
    assert (caught.value.field, caught.value.rule) == ("rate.units_per_usd", "usd_is_one")


@pytest.mark.parametrize(
    ("low", "high", "currency", "field", "rule"),
    [
        ("5", "4", "USD", "payload.amount.low", "low_le_high"),
        ("0", "4", "USD", "payload.amount.low", "positive"),
        ("1", "4", "XYZ", "payload.amount.currency", "iso_4217"),
    ],
)
def test_amount_rules_name_the_payload_field(
    service: RecordingService, with_deal: list[Receipt],
    low: str, high: str, currency: str, field: str, rule: str,
) -> None:
    with pytest.raises(InvalidValue) as caught:
        record(service, pledge_body("p-1", low=low, high=high, currency=currency))
    assert (caught.value.field, caught.value.rule) == (field, rule)


# Envelopes leaving the registry.


def test_envelopes_skip_receipts_and_carry_positions_times_and_principal(
    service: RecordingService, store: DealRegistryStore
) -> None:
    receipts = [
        record(service, firm_body(JP_FIRM), by="mofa-japan"),
        record(service, firm_body(IN_FIRM, "IN", "automaker"), by="invest-india"),
        record(service, firm_body(THIRD_FIRM, "IN", "recycler"), by="invest-india"),
        record(service, deal_body(parties=(JP_FIRM, IN_FIRM, THIRD_FIRM)), by="mofa-japan"),
        record(service, pledge_body("p-1", "pl-1", occurred_at="2025-09-01T12:00:00+05:30"),
               by="invest-india"),
        record(service, body("j-1", "joint_venture_formed", {
            "deal_id": str(DEAL_ID), "venture_name": "Green Cells",
            "equity": {JP_FIRM: "50.50", IN_FIRM: "29.5", THIRD_FIRM: "20"}}), by="mofa-japan"),
    ]
    record(service, pledge_body("p-1", "pl-1", occurred_at="2025-09-01T12:00:00+05:30"),
           by="invest-india")  # a replay adds nothing to the log
    notifications = list(store.read_log(0, 1000))
    assert len(notifications) == 6  # receipts are kept beside the log
    assert not any("IngestionReceipt" in n.topic for n in notifications)
    out = envelopes(store)
    assert len(out) == 6
    assert [e.type for e in out] == [
        EventType.FIRM_REGISTERED, EventType.FIRM_REGISTERED, EventType.FIRM_REGISTERED,
        EventType.DEAL_PROPOSED, EventType.PLEDGE_MADE, EventType.JOINT_VENTURE_FORMED]
    for envelope, receipt in zip(out, receipts, strict=True):
        assert envelope.event_id == receipt.event_id
        assert envelope.position == receipt.position
        assert envelope.aggregate_id == receipt.aggregate_id
        assert envelope.aggregate_version == receipt.aggregate_version
        assert envelope.recorded_by == receipt.recorded_by
        assert envelope.recorded_at == datetime.fromisoformat(receipt.recorded_at)
        envelope.typed_payload()  # the payload satisfies the contract
    assert [e.recorded_by for e in out] == [
        "mofa-japan", "invest-india", "invest-india", "mofa-japan", "invest-india", "mofa-japan"]
    assert out[0].occurred_at == datetime.fromisoformat(OCCURRED_AT)
    assert out[0].occurred_at.utcoffset() == datetime.fromisoformat(OCCURRED_AT).utcoffset()
    assert out[4].occurred_at == datetime.fromisoformat("2025-09-01T12:00:00+05:30")
    assert out[4].occurred_at.utcoffset().total_seconds() == 5.5 * 3600  # type: ignore[union-attr]
    assert all(e.recorded_at > e.occurred_at for e in out)
    assert out[5].payload["equity"] == {JP_FIRM: "50.50", IN_FIRM: "29.5", THIRD_FIRM: "20"}
    positions = [e.position for e in out]
    assert positions == sorted(set(positions))


def test_envelopes_carry_the_hash_chain(service: RecordingService,
                                        store: DealRegistryStore) -> None:
    record_firms_and_deal(service)
    record(service, pledge_body("p-1", "pl-1"))
    record(service, body("w-1", "pledge_withdrawn", {"deal_id": str(DEAL_ID), "pledge_id": "pl-1"}))
    deal_envelopes = [e for e in envelopes(store) if e.aggregate_id == DEAL_ID]
    assert [e.aggregate_version for e in deal_envelopes] == [1, 2, 3]
    assert deal_envelopes[0].previous_hash == "0" * 64
    for before, after in zip(deal_envelopes, deal_envelopes[1:], strict=False):
        assert after.previous_hash == before.hash
    assert deal_envelopes[-1].hash == deal(store).last_hash


# Durability.


def test_state_survives_closing_and_reopening_the_store(
    service: RecordingService, store: DealRegistryStore, settings: Settings,
    stores: list[DealRegistryStore],
) -> None:
    receipts = record_firms_and_deal(service)
    record(service, pledge_body("p-1", "pl-1", low="860000000.50", high="1720000000",
                                currency="INR"))
    record(service, body("t-1", "tech_transfer_signed", {
        "deal_id": str(DEAL_ID), "technology": "LFP", "licensor": JP_FIRM,
        "licensee": IN_FIRM}))
    record(service, body("j-1", "joint_venture_formed", {
        "deal_id": str(DEAL_ID), "venture_name": "Green Cells",
        "equity": {JP_FIRM: "50.50", IN_FIRM: "29.5", THIRD_FIRM: "20"}}))
    before = deal(store)
    before_firm = store.repository.get(firm_id(IN_FIRM))
    before_envelopes = envelopes(store)
    head = store.head_position()
    store.close()

    reopened = DealRegistryStore(env=settings.event_store_env())
    stores.append(reopened)
    after = deal(reopened)
    assert vars(after) == vars(before)
    assert after.pledges["pl-1"].amount.low == D("860000000.50")
    assert str(after.pledges["pl-1"].amount.low) == "860000000.50"
    assert after.joint_venture["equity"][JP_FIRM] == D("50.50")  # type: ignore[index]
    assert vars(reopened.repository.get(firm_id(IN_FIRM))) == vars(before_firm)
    assert reopened.head_position() == head
    assert envelopes(reopened) == before_envelopes
    assert chain_is_intact(list(reopened.events.get(DEAL_ID)))

    # Receipts survive too: a retry after the restart is still a replay.
    again = record(RecordingService(reopened), deal_body(parties=(JP_FIRM, IN_FIRM, THIRD_FIRM)))
    assert again == receipts[3].model_copy(update={"replayed": True})
    assert reopened.head_position() == head


# Concurrency.


class Lockstep:
    """Holds every save until all still-running writers have reached theirs.

    Each round every writer has loaded the same version of the deal, so exactly one save
    wins and the others must retry: the worst interleaving, made deterministic.
    """

    def __init__(self, writers: int) -> None:
        self.active = writers
        self.waiting = 0
        self.round = 0
        self.cond = threading.Condition()

    def _release_if_complete(self) -> None:
        if self.waiting and self.waiting >= self.active:
            self.waiting = 0
            self.round += 1
            self.cond.notify_all()

    def arrive(self) -> None:
        with self.cond:
            current = self.round
            self.waiting += 1
            self._release_if_complete()
            if not self.cond.wait_for(lambda: self.round != current, timeout=20):
                raise TimeoutError("lockstep round never completed")

    def leave(self) -> None:
        with self.cond:
            self.active -= 1
            self._release_if_complete()


def pledge_concurrently(
    service: RecordingService, store: DealRegistryStore, writers: int, lockstep: bool
) -> tuple[list[Receipt], list[Exception]]:
    gate = Lockstep(writers)
    if lockstep:
        # Every writer decides on the same version before any of them saves.
        real_save = service.committer.save

        def save(*args: Any, **kwargs: Any) -> Any:
            gate.arrive()
            return real_save(*args, **kwargs)

        service.committer.save = save  # type: ignore[method-assign]
    start = threading.Barrier(writers)
    receipts: list[Receipt] = []
    errors: list[Exception] = []
    lock = threading.Lock()

    def writer(i: int) -> None:
        start.wait()
        try:
            receipt = record(service, pledge_body(f"p-{i}", f"pl-{i}", low=str(i + 1),
                                                  high=str(i + 2)))
            with lock:
                receipts.append(receipt)
        except Exception as exc:  # noqa: BLE001 - collected and asserted on
            with lock:
                errors.append(exc)
        finally:
            gate.leave()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return receipts, errors


def test_concurrent_pledges_never_lose_an_update(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt]
) -> None:
    receipts, errors = pledge_concurrently(service, store, 8, lockstep=False)
    assert all(isinstance(e, VersionConflict) for e in errors), errors
    assert len(receipts) + len(errors) == 8
    final = deal(store)
    assert final.version == 1 + len(receipts)
    assert sorted(r.aggregate_version for r in receipts) == list(range(2, 2 + len(receipts)))
    assert set(final.pledges) == {f"pl-{r.event_id[2:]}" for r in receipts}
    assert chain_is_intact(list(store.events.get(DEAL_ID)))
    positions = [r.position for r in receipts]
    assert len(set(positions)) == len(positions)


def test_retries_absorb_as_many_rival_writers_as_save_attempts(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt]
) -> None:
    receipts, errors = pledge_concurrently(service, store, SAVE_ATTEMPTS, lockstep=True)
    assert errors == []
    assert deal(store).version == 1 + SAVE_ATTEMPTS
    assert sorted(r.aggregate_version for r in receipts) == list(range(2, 2 + SAVE_ATTEMPTS))


def test_eight_concurrent_pledges_on_one_deal_all_succeed(
    service: RecordingService, store: DealRegistryStore, with_deal: list[Receipt]
) -> None:
    receipts, errors = pledge_concurrently(service, store, 8, lockstep=True)
    assert errors == []
    assert len(receipts) == 8
    final = deal(store)
    assert final.version == 9
    assert len(final.pledges) == 8
    assert sorted(r.aggregate_version for r in receipts) == list(range(2, 10))
