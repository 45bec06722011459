"""Snapshots of recorded aggregates: exact state and chain through the store's transcoder.

The store here is the library's in-memory one: what is under test is the snapshot class and
the transcodings, which the SQLite and PostgreSQL stores share (see the integration tests).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from services.registry.adapters.event_store import DealRegistryStore
from services.registry.domain.deal import Deal, Pledge
from services.registry.domain.firm import Firm
from services.registry.domain.meeting import Meeting
from services.registry.domain.recorded import RecordedAggregate
from services.registry.domain.values import AmountRange, UsdConversion
from tests.unit.registry.support import (
    IN_FIRM,
    JP_FIRM,
    amount,
    new_deal,
    pledge,
    provenance,
    usd_of,
)

D = Decimal
# Decimals whose exponent, digits or magnitude a float or a normalising encoding would lose.
AWKWARD_DECIMALS = [D("0.1000"), D("1E+3"), D("-0.00"), D("12345678901234567890.123456789012"),
                    D("3.14159265358979323846264338327950288")]
# Not state: the chain head is compared through last_hash, pending events are unsaved.
NOT_STATE = {"last_event", "restored_hash", "_pending_events"}


def in_memory_store(interval: int = 3) -> DealRegistryStore:
    return DealRegistryStore(
        env={"PERSISTENCE_MODULE": "eventsourcing.popo", "SNAPSHOT_INTERVAL": str(interval)}
    )


def round_trip(store: DealRegistryStore, value: Any) -> Any:
    transcoder = store.mapper.transcoder
    return transcoder.decode(transcoder.encode(value))


def restored_from_snapshot(store: DealRegistryStore, aggregate: RecordedAggregate) -> Any:
    """The aggregate rebuilt from a snapshot that went through the store's mapper."""
    snapshot = type(aggregate).Snapshot.take(aggregate)
    stored = store.mapper.to_stored_event(snapshot)
    return store.mapper.to_domain_event(stored).mutate(None)


def same_values_and_types(left: Any, right: Any) -> bool:
    """Equal, and of the same type all the way down (Decimal stays Decimal, str stays str)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(
            same_values_and_types(left[k], right[k]) for k in left
        )
    if isinstance(left, list | tuple):
        return len(left) == len(right) and all(
            same_values_and_types(a, b) for a, b in zip(left, right, strict=True)
        )
    if isinstance(left, Pledge | AmountRange | UsdConversion):
        return same_values_and_types(vars(left), vars(right))
    if isinstance(left, Decimal):
        return left.as_tuple() == right.as_tuple()
    return bool(left == right)


def state(aggregate: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(aggregate).items() if k not in NOT_STATE}


def long_lived_deal() -> Deal:
    deal = new_deal(parties=(JP_FIRM, IN_FIRM))
    pledge(deal, "pl-inr", low="8600000000.10", high="34400000000.500", currency="INR")
    pledge(deal, "pl-jpy", firm=JP_FIRM, low="14500000000", high="29000000000", currency="JPY")
    pledge(deal, "pl-usd", low="1.50", high="2.5")
    revised = amount("17200000000", "34400000000.500", "INR")
    deal.revise_pledge("pl-inr", revised, usd_of(revised), "phase two", provenance("rev-1"))
    deal.withdraw_pledge("pl-usd", "merged", provenance("wd-1"))
    deal.sign_tech_transfer("Black-mass recovery", JP_FIRM, IN_FIRM, provenance("tt-1"))
    deal.form_joint_venture("Green Cells", {JP_FIRM: D("50.50"), IN_FIRM: D("49.5")},
                            provenance("jv-1"))
    return deal


@pytest.mark.parametrize("value", AWKWARD_DECIMALS, ids=str)
def test_value_objects_round_trip_with_exact_decimals(value: Decimal) -> None:
    store = in_memory_store()
    magnitude = abs(value) or D("0.000")
    amount_range = AmountRange(magnitude, magnitude + D("0.0010"), "INR")
    conversion = UsdConversion(value, magnitude, D("86.0000"), "RBI reference rate")
    pledge_ = Pledge("pl-1", IN_FIRM, amount_range, conversion, withdrawn=True)
    for original in (amount_range, conversion, pledge_, {"equity": {JP_FIRM: value}}):
        decoded = round_trip(store, original)
        assert same_values_and_types(decoded, original), (decoded, original)
    assert str(round_trip(store, conversion).low) == str(value)


def test_a_restored_deal_has_the_same_state_types_and_chain_head() -> None:
    store = in_memory_store()
    deal = long_lived_deal()
    restored = restored_from_snapshot(store, deal)
    assert same_values_and_types(state(restored), state(deal))
    assert (restored.id, restored.version) == (deal.id, deal.version)
    assert restored.last_hash == deal.last_hash == deal.pending_events[-1].hash()
    assert type(restored.status) is str  # kept as the enum's value, as replay keeps it
    assert restored.pending_events == []


def test_a_snapshot_holds_the_chain_head_as_a_hash_not_as_an_event() -> None:
    deal = long_lived_deal()
    snapshot = Deal.Snapshot.take(deal)
    assert "last_event" not in snapshot.state
    assert snapshot.state["restored_hash"] == deal.last_hash
    assert "last_event" in vars(deal)  # taking a snapshot leaves the aggregate alone


def test_the_next_event_after_a_restore_chains_to_the_last_one() -> None:
    store = in_memory_store()
    deal = long_lived_deal()
    restored = restored_from_snapshot(store, deal)
    restored.cancel("investor left", provenance("cx-1"))
    (after_restore,) = restored.pending_events
    assert after_restore.previous_hash == deal.pending_events[-1].hash()
    assert restored.last_hash == after_restore.hash()
    # A snapshot of a restored aggregate carries the newest head, not the restored one.
    again = restored_from_snapshot(store, restored)
    assert again.last_hash == after_restore.hash() != restored.restored_hash


@pytest.mark.parametrize("build", ["firm", "meeting"])
def test_firms_and_meetings_restore_too(build: str) -> None:
    store = in_memory_store()
    aggregate: RecordedAggregate
    if build == "firm":
        aggregate = Firm.register(JP_FIRM, "Toyota Tsusho", "JP", "trading_house", provenance())
    else:
        aggregate = Meeting.hold(UUID(int=7), "Round table", "New Delhi", True, [JP_FIRM],
                                 ["METI"], ["recycling"], "", provenance())
    restored = restored_from_snapshot(store, aggregate)
    assert same_values_and_types(state(restored), state(aggregate))
    assert restored.last_hash == aggregate.last_hash


def test_interval_zero_turns_snapshots_off_and_a_negative_one_is_refused() -> None:
    assert in_memory_store(0).snapshots is None
    assert in_memory_store(7).snapshots is not None
    assert in_memory_store(7).snapshot_interval == 7
    with pytest.raises(ValueError, match="SNAPSHOT_INTERVAL"):
        in_memory_store(-1)


def test_the_write_path_snapshots_what_it_holds_when_its_new_versions_reach_the_interval(
) -> None:
    store = in_memory_store(interval=3)
    deal = new_deal()
    for number in range(4):
        pledge(deal, f"pl-{number}")
    # As the write path saves: events, not aggregates; the library's hook snapshots none.
    store.save(*deal.collect_events())
    assert store.snapshots is not None
    assert list(store.snapshots.get(deal.id)) == []
    store.snapshot_if_due(deal, first_new_version=1)  # versions 1..5 reach 3
    pledge(deal, "pl-late")
    store.save(*deal.collect_events())
    store.snapshot_if_due(deal, first_new_version=6)  # 6 alone reaches 6
    pledge(deal, "pl-later")
    store.save(*deal.collect_events())
    store.snapshot_if_due(deal, first_new_version=7)  # 7 reaches no multiple of 3
    assert [s.originator_version for s in store.snapshots.get(deal.id)] == [5, 6]
    loaded = store.repository.get(deal.id)
    assert same_values_and_types(state(loaded), state(deal))
    assert loaded.last_hash == deal.last_hash
