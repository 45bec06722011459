"""A pledge's terms (event schema v2): the instrument and the tranche schedule, their rules,
the v1 revision that keeps them, and the upcaster that reads pledge events stored at v1 with
no terms and the hash they were chained with."""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from services.registry.adapters.event_store import DealRegistryStore
from services.registry.domain.deal import Deal, Pledge
from services.registry.domain.errors import InvalidValue, StateConflict
from services.registry.domain.recorded import GENESIS_HASH, WRITTEN_STATE, event_hash
from services.registry.domain.values import (
    MAX_TRANCHES,
    NOT_STATED,
    PledgeTerms,
    Tranche,
    tranche_schedule,
)
from tests.unit.registry.support import (
    IN_FIRM,
    amount,
    assert_refused,
    new_deal,
    pledge,
    provenance,
    usd_of,
)

D = Decimal
V1_STORE = Path(__file__).resolve().parents[2] / "fixtures" / "v1_store_events.db.gz"


def schedule(*pairs: tuple[str, str]) -> list[tuple[date, Decimal]]:
    return [(date.fromisoformat(day), D(value)) for day, value in pairs]


def terms(instrument: str | None = "debt", *pairs: tuple[str, str], high: str = "200"
          ) -> PledgeTerms:
    return PledgeTerms.of(instrument, schedule(*pairs), amount("100", high))


def make(deal: Deal, pledge_id: str = "pl-1", low: str = "100", high: str = "200",
         stated: PledgeTerms = NOT_STATED) -> None:
    value = amount(low, high)
    deal.make_pledge(pledge_id, IN_FIRM, "IN", value, usd_of(value),
                     provenance(f"pledge-{pledge_id}"), stated)


def revise(deal: Deal, low: str, high: str, stated: PledgeTerms | None = None,
           pledge_id: str = "pl-1") -> None:
    value = amount(low, high)
    deal.revise_pledge(pledge_id, value, usd_of(value), "re-estimate", provenance("rev"), stated)


# The rules of a schedule, each refused naming its field and rule.


def test_a_schedule_keeps_its_tranches_in_order() -> None:
    found = tranche_schedule(schedule(("2026-03-31", "50"), ("2027-03-31", "150")),
                             amount("100", "200"))
    assert found == (Tranche(date(2026, 3, 31), D("50")), Tranche(date(2027, 3, 31), D("150")))


@pytest.mark.parametrize(("pairs", "field", "rule"), [
    ([("2026-03-31", "0")], "tranches[0].amount", "positive"),
    ([("2026-03-31", "10"), ("2027-03-31", "-1")], "tranches[1].amount", "positive"),
    ([("2026-03-31", "10"), ("2026-03-31", "10")], "tranches[1].due_date", "ascending"),
    ([("2026-03-31", "10"), ("2025-03-31", "10")], "tranches[1].due_date", "ascending"),
    ([("2026-03-31", "150"), ("2027-03-31", "50.000001")], "tranches", "sum_le_high"),
], ids=["zero", "negative", "same-day", "earlier", "above-high"])
def test_a_schedule_breaking_a_rule_is_refused(pairs: list[tuple[str, str]], field: str,
                                               rule: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        tranche_schedule(schedule(*pairs), amount("100", "200"))
    assert (caught.value.field, caught.value.rule) == (field, rule)


def test_a_schedule_may_add_up_to_exactly_the_high_amount() -> None:
    assert len(tranche_schedule(schedule(("2026-01-01", "150"), ("2026-01-02", "50")),
                                amount("100", "200"))) == 2


def test_at_most_max_tranches() -> None:
    days = [date.fromordinal(date(2026, 1, 1).toordinal() + n) for n in range(MAX_TRANCHES + 1)]
    many = [(day, D("1")) for day in days]
    assert len(tranche_schedule(many[:MAX_TRANCHES], amount("100", "200"))) == MAX_TRANCHES
    with pytest.raises(InvalidValue) as caught:
        tranche_schedule(many, amount("100", "200"))
    assert (caught.value.field, caught.value.rule) == ("tranches", "max_items")


def test_a_non_finite_tranche_amount_is_refused() -> None:
    with pytest.raises(InvalidValue) as caught:
        tranche_schedule([(date(2026, 1, 1), D("NaN"))], amount("100", "200"))
    assert (caught.value.field, caught.value.rule) == ("tranches[0].amount", "finite")


def test_terms_name_fields_with_the_prefix_and_know_the_instruments() -> None:
    with pytest.raises(InvalidValue) as caught:
        PledgeTerms.of("loan", [], amount("1", "2"), "payload.")
    assert (caught.value.field, caught.value.rule) == ("payload.instrument", "one_of")
    with pytest.raises(InvalidValue) as caught:
        PledgeTerms.of("grant", schedule(("2026-01-01", "3")), amount("1", "2"), "payload.")
    assert (caught.value.field, caught.value.rule) == ("payload.tranches", "sum_le_high")
    with pytest.raises(InvalidValue) as caught:
        PledgeTerms.of(None, schedule(("2026-01-01", "1")), amount("1", "2"), "payload.")
    assert (caught.value.field, caught.value.rule) == ("payload.instrument",
                                                        "required_with_tranches")
    assert PledgeTerms.of(None, [], amount("1", "2")) == NOT_STATED
    assert PledgeTerms.of("in_kind_technology", [], amount("1", "2")).instrument == \
        "in_kind_technology"


# Pledges and revisions.


def test_a_pledge_records_its_terms() -> None:
    deal = new_deal()
    make(deal, stated=terms("equity", ("2026-03-31", "50"), ("2027-03-31", "150")))
    event = deal.pending_events[-1]
    assert isinstance(event, Deal.PledgeMade)
    assert event.instrument == "equity"
    assert event.tranches == [{"due_date": "2026-03-31", "amount": D("50")},
                              {"due_date": "2027-03-31", "amount": D("150")}]
    held = deal.pledges["pl-1"]
    assert held.instrument == "equity"
    assert held.tranches == (Tranche(date(2026, 3, 31), D("50")),
                             Tranche(date(2027, 3, 31), D("150")))


def test_a_v1_pledge_states_no_terms() -> None:
    deal = new_deal()
    pledge(deal)
    event = deal.pending_events[-1]
    assert (event.instrument, event.tranches) == (None, [])
    assert deal.pledges["pl-1"].terms == NOT_STATED


def test_a_v1_revision_keeps_the_terms_and_states_them() -> None:
    deal = new_deal()
    make(deal, stated=terms("debt", ("2026-03-31", "150")))
    revise(deal, "100", "300")
    event = deal.pending_events[-1]
    assert isinstance(event, Deal.PledgeRevised)
    assert (event.instrument, event.tranches) == (
        "debt", [{"due_date": "2026-03-31", "amount": D("150")}])
    assert deal.pledges["pl-1"].terms == terms("debt", ("2026-03-31", "150"))
    assert deal.pledges["pl-1"].amount == amount("100", "300")


def test_a_v1_revision_below_the_kept_schedule_is_refused() -> None:
    deal = new_deal()
    make(deal, stated=terms("debt", ("2026-03-31", "150")))
    assert_refused(deal, lambda: revise(deal, "100", "149"), InvalidValue, "amount.high",
                   "covers_tranches")


def test_a_v2_revision_states_the_terms_in_full() -> None:
    deal = new_deal()
    make(deal, stated=terms("debt", ("2026-03-31", "150")))
    revise(deal, "100", "200", terms("grant"))  # same amount, new terms: a revision
    assert deal.pledges["pl-1"].terms == terms("grant")
    revise(deal, "100", "200", terms("grant", ("2026-06-30", "200")))
    assert deal.pledges["pl-1"].tranches == (Tranche(date(2026, 6, 30), D("200")),)


def test_a_revision_that_changes_nothing_is_refused() -> None:
    deal = new_deal()
    make(deal, stated=terms("debt", ("2026-03-31", "150")))
    assert_refused(deal, lambda: revise(deal, "100", "200"), StateConflict, "amount", "changed")
    assert_refused(deal, lambda: revise(deal, "100", "200", terms("debt", ("2026-03-31", "150"))),
                   StateConflict, "amount", "changed")


def test_the_aggregate_refuses_a_schedule_above_the_amount_it_is_given_with() -> None:
    deal = new_deal()
    big = terms("debt", ("2026-03-31", "500"), high="1000")
    assert_refused(deal, lambda: make(deal, stated=big), InvalidValue, "tranches", "sum_le_high")
    make(deal)
    assert_refused(deal, lambda: revise(deal, "100", "200", big), InvalidValue, "tranches",
                   "sum_le_high")


def test_replaying_the_events_rebuilds_the_terms() -> None:
    deal = new_deal()
    make(deal, stated=terms("equity", ("2026-03-31", "50")))
    revise(deal, "100", "300")
    rebuilt: Any = None
    for event in deal.collect_events():
        rebuilt = event.mutate(rebuilt)
    assert rebuilt.pledges["pl-1"].terms == deal.pledges["pl-1"].terms
    assert rebuilt.last_hash == deal.last_hash


# Stored events: v2 round trips, v1 upcasts.


@pytest.fixture
def store() -> DealRegistryStore:
    return DealRegistryStore(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def stored_as_v1(store: DealRegistryStore, event: Any) -> tuple[StoredEvent, dict[str, Any]]:
    """The event as the registry stored it before v2 (no terms, no class version), and its
    state as stored, with the originator's id and version the stored row carries."""
    stored = store.mapper.to_stored_event(event)
    fields = json.loads(stored.state)
    for name in ("instrument", "tranches", "class_version"):
        fields.pop(name)
    v1 = replace(stored, state=json.dumps(fields, separators=(",", ":")).encode())
    state = store.mapper.transcoder.decode(v1.state)
    return v1, {**state, "originator_id": v1.originator_id,
                "originator_version": v1.originator_version}


def test_a_v2_event_reads_back_with_its_terms_and_hash(store: DealRegistryStore) -> None:
    deal = new_deal()
    make(deal, stated=terms("debt", ("2026-03-31", "50")))
    event = deal.pending_events[-1]
    stored = store.mapper.to_stored_event(event)
    assert json.loads(stored.state)["class_version"] == 2
    back = store.mapper.to_domain_event(stored)
    assert (back.instrument, back.tranches) == (event.instrument, event.tranches)
    assert back.hash() == event.hash()
    assert WRITTEN_STATE not in vars(back)
    # From 2 on the class version is hashed: a v2 event hashes as v2, not as v1 would.
    values = {k: v for k, v in vars(event).items()}
    assert event.hash() == event_hash(get_topic(type(event)), values, 2)
    assert event.hash() != event_hash(get_topic(type(event)), values, 1)


@pytest.mark.parametrize("kind", ["made", "revised"])
def test_a_v1_stored_event_reads_back_with_no_terms_and_its_written_hash(
        store: DealRegistryStore, kind: str) -> None:
    deal = new_deal()
    pledge(deal)
    revise(deal, "100", "300")
    event = deal.pending_events[1 if kind == "made" else 2]
    v1, as_stored = stored_as_v1(store, event)
    topic = v1.topic
    assert topic == get_topic(type(event))
    back = store.mapper.to_domain_event(v1)
    assert type(back) is type(event)
    assert (back.instrument, back.tranches) == (None, [])
    assert back.terms() == NOT_STATED
    written = event_hash(topic, as_stored, 1)
    assert back.hash() == written
    # What the v1 code hashed: the fields as then, without the terms or a class version.
    then = {k: v for k, v in vars(event).items() if k not in ("instrument", "tranches")}
    assert written == event_hash(topic, then, 1)
    assert back.hash() != event.hash()  # the v2 event with the same terms hashes otherwise


def test_a_chain_of_v1_events_then_v2_ones_holds(store: DealRegistryStore) -> None:
    """A deal whose events were stored by the v1 registry (each previous_hash the hash of
    the v1 event before it), loaded through the upcaster, takes a v2 event chained on it."""
    deal = new_deal()
    pledge(deal)
    revise(deal, "100", "300")
    read: list[Any] = []
    previous = GENESIS_HASH
    for event in deal.collect_events():
        chained = replace(event, previous_hash=previous)
        if isinstance(chained, Deal.PledgeMade | Deal.PledgeRevised):
            stored, _ = stored_as_v1(store, chained)
        else:
            stored = store.mapper.to_stored_event(chained)
        read.append(store.mapper.to_domain_event(stored))
        previous = read[-1].hash()
    for before, after in zip(read, read[1:], strict=False):
        assert after.previous_hash == before.hash()
    rebuilt: Any = None
    for event in read:
        rebuilt = event.mutate(rebuilt)
    assert rebuilt.last_hash == read[-1].hash()
    assert rebuilt.pledges["pl-1"].terms == NOT_STATED
    revise(rebuilt, "100", "300", terms("grant", ("2026-01-01", "10"), high="300"))
    (latest,) = rebuilt.collect_events()
    assert latest.previous_hash == read[-1].hash()
    assert rebuilt.pledges["pl-1"].instrument == "grant"


@pytest.mark.skipif(not V1_STORE.is_file(), reason="no v1 store fixture")
def test_events_stored_by_the_v1_registry_keep_their_chain(tmp_path: Path) -> None:
    """A store written before v2: every pledge event, read through the upcaster, hashes as
    the event after it in its deal says it did."""
    database = tmp_path / "v1.db"
    with gzip.open(V1_STORE) as packed, database.open("wb") as out:
        shutil.copyfileobj(packed, out)
    store = DealRegistryStore(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    rows = sqlite3.connect(database).execute(
        "SELECT originator_id, originator_version, topic, state FROM stored_events "
        "ORDER BY originator_id, originator_version").fetchall()
    checked = 0
    by_deal: dict[str, list[Any]] = {}
    for originator, version, topic, state in rows:
        event = store.mapper.to_domain_event(StoredEvent(
            originator_id=originator, originator_version=version, topic=topic,
            state=bytes(state)))
        by_deal.setdefault(originator, []).append(event)
    for events in by_deal.values():
        for before, after in zip(events, events[1:], strict=False):
            assert after.previous_hash == before.hash(), (type(before), before.originator_id)
            if isinstance(before, Deal.PledgeMade | Deal.PledgeRevised):
                assert (before.instrument, before.tranches) == (None, [])
                checked += 1
    assert checked > 0


# Snapshots.


def test_a_snapshot_keeps_the_terms(store: DealRegistryStore) -> None:
    deal = new_deal()
    make(deal, stated=terms("debt", ("2026-03-31", "50"), ("2028-02-29", "100")))
    snapshot = Deal.Snapshot.take(deal)
    back = store.mapper.to_domain_event(store.mapper.to_stored_event(snapshot)).mutate(None)
    held = back.pledges["pl-1"]
    assert isinstance(held.tranches, tuple)
    assert held.terms == deal.pledges["pl-1"].terms
    assert isinstance(held.tranches[0].due_date, date)


def test_a_snapshot_taken_before_v2_restores_pledges_without_terms(
        store: DealRegistryStore) -> None:
    deal = new_deal()
    pledge(deal)
    stored = store.mapper.to_stored_event(Deal.Snapshot.take(deal))
    state = json.loads(stored.state)
    pledged = state["state"]["pledges"]["pl-1"]["_data_"]
    del pledged["instrument"], pledged["tranches"]
    old = replace(stored, state=json.dumps(state).encode())
    held = store.mapper.to_domain_event(old).mutate(None).pledges["pl-1"]
    assert isinstance(held, Pledge)
    assert (held.instrument, held.tranches) == (None, ())
