"""The per-aggregate hash chain and the canonical event hash auditors recompute."""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields, replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.utils import get_topic

from services.registry.domain.deal import Deal
from services.registry.domain.firm import Firm
from services.registry.domain.meeting import Meeting
from services.registry.domain.recorded import (
    GENESIS_HASH,
    RecordedEvent,
    canonical_value,
    event_hash,
)
from services.registry.domain.values import DealFormat, PledgeTerms
from tests.unit.registry.support import (
    IN_FIRM,
    JP_FIRM,
    amount,
    chain_is_intact,
    new_deal,
    pledge,
    provenance,
    usd_of,
)

D = Decimal


def lifecycle() -> Deal:
    """A joint-venture deal that goes through every kind of deal event but the facility."""
    deal = new_deal("joint_venture")
    pledge(deal, "pl-1", IN_FIRM, "860000000", "1720000000", "INR")
    value = amount("900000000", "1800000000", "INR")
    terms = PledgeTerms.of("debt", [(date(2026, 3, 31), D("900000000"))], value)
    deal.revise_pledge("pl-1", value, usd_of(value), "more capacity", provenance("rev"), terms)
    pledge(deal, "pl-2", JP_FIRM, "1.50", "2.5", "USD")
    deal.withdraw_pledge("pl-2", "board said no", provenance("wd"))
    deal.sign_tech_transfer("LFP cathode", JP_FIRM, IN_FIRM, provenance("tt"))
    deal.form_joint_venture("Green Cells", {JP_FIRM: D("50.5"), IN_FIRM: D("49.5")},
                            provenance("jv"))
    deal.cancel("market changed", provenance("cx"))
    return deal


def facility_deal() -> Deal:
    deal = new_deal("processing_facility")
    deal.announce_facility("Plant", "Pune", "10 kt", ["lithium"], provenance("fac"))
    return deal


def every_event() -> list[RecordedEvent]:
    firm = Firm.register("tata-motors", "Tata Motors", "IN", "automaker", provenance("f"))
    meeting = Meeting.hold(uuid4(), "Round table", "Tokyo", True, [JP_FIRM, IN_FIRM], ["METI"],
                           ["recycling"], "notes", provenance("m"))
    return [*firm.pending_events, *meeting.pending_events, *lifecycle().pending_events,
            *facility_deal().pending_events]


def changed(value: Any) -> Any:
    """A different value of the same type (a value where there was none)."""
    if value is None:
        return "x"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, Decimal):
        return value + 1
    if isinstance(value, datetime):
        return value + timedelta(microseconds=1)
    if isinstance(value, UUID):
        return uuid4()
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, "extra"] if value else ["extra"]
    if isinstance(value, dict):
        return {**value, "extra": D(1)}
    raise TypeError(type(value))


EVENT_FIELDS = [
    (index, type(event).__qualname__, f.name)
    for index, event in enumerate(every_event())
    for f in fields(event)  # type: ignore[arg-type]
]


def test_every_event_type_is_covered() -> None:
    covered = {name for _, name, _ in EVENT_FIELDS}
    assert covered == {
        "Firm.Registered", "Meeting.Held", "Deal.Proposed", "Deal.PledgeMade",
        "Deal.PledgeRevised", "Deal.PledgeWithdrawn", "Deal.TechTransferSigned",
        "Deal.JointVentureFormed", "Deal.FacilityAnnounced", "Deal.Cancelled",
    }


def test_genesis_hash_is_64_zeros() -> None:
    assert GENESIS_HASH == "0" * 64


@pytest.mark.parametrize("make", [lifecycle, facility_deal])
def test_chain_links_each_event_to_the_previous(make: Any) -> None:
    deal = make()
    events = deal.pending_events
    assert len(events) >= 2
    assert events[0].previous_hash == "0" * 64
    for before, after in zip(events, events[1:], strict=False):
        assert after.previous_hash == before.hash()
        assert after.previous_hash != GENESIS_HASH
    assert deal.last_hash == events[-1].hash()
    assert chain_is_intact(events)


def test_last_hash_follows_each_event() -> None:
    deal = new_deal()
    first = deal.last_hash
    assert first == deal.pending_events[0].hash()
    pledge(deal)
    assert deal.last_hash != first
    assert deal.last_hash == deal.pending_events[-1].hash()
    assert deal.pending_events[-1].previous_hash == first


def test_replaying_the_events_rebuilds_the_same_chain_head() -> None:
    deal = lifecycle()
    events = deal.collect_events()
    rebuilt: Any = None
    for event in events:
        rebuilt = event.mutate(rebuilt)
    assert rebuilt.last_hash == deal.last_hash
    assert rebuilt.version == deal.version
    assert rebuilt.status == "cancelled"


def test_hashes_are_distinct_along_the_chain() -> None:
    hashes = [e.hash() for e in lifecycle().pending_events]
    assert len(set(hashes)) == len(hashes)
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in hashes)


@pytest.mark.parametrize(("index", "event_type", "field_name"), EVENT_FIELDS,
                         ids=[f"{t}.{f}" for _, t, f in EVENT_FIELDS])
def test_changing_any_field_changes_the_hash(index: int, event_type: str,
                                             field_name: str) -> None:
    event = every_event()[index]
    assert type(event).__qualname__ == event_type
    original = event.hash()
    assert replace(event).hash() == original  # an unchanged copy hashes the same
    tampered = replace(event, **{field_name: changed(getattr(event, field_name))})
    assert getattr(tampered, field_name) != getattr(event, field_name)
    assert tampered.hash() != original


def test_tampering_with_a_middle_event_breaks_the_chain() -> None:
    events = list(lifecycle().pending_events)
    assert chain_is_intact(events)
    events[2] = replace(events[2], reason="nothing to see")
    assert not chain_is_intact(events)


def test_hash_is_deterministic_and_equals_event_hash_of_its_fields() -> None:
    event = lifecycle().pending_events[1]
    values = {f.name: getattr(event, f.name) for f in fields(event)}  # type: ignore[arg-type]
    assert event.hash() == event.hash()
    version = type(event).class_version  # PledgeMade is at 2: the version is hashed too
    assert version == 2
    assert event.hash() == event_hash(get_topic(type(event)), values, version)
    assert event.hash() == event_hash(get_topic(type(event)), dict(reversed(values.items())),
                                      version)
    assert event.hash() != event_hash(get_topic(type(event)), values)
    assert event.hash() != event_hash("other:Topic", values, version)


# event_hash and its canonical form.


def test_key_order_is_irrelevant_at_every_level() -> None:
    a = {"x": D("1"), "y": {"p": "1", "q": [1, 2]}, "z": "z"}
    b = {"z": "z", "y": {"q": [1, 2], "p": "1"}, "x": D("1")}
    assert event_hash("t", a) == event_hash("t", b)


def test_list_order_matters() -> None:
    assert event_hash("t", {"parties": ["a", "b"]}) != event_hash("t", {"parties": ["b", "a"]})


def test_decimals_are_hashed_exactly() -> None:
    assert event_hash("t", {"v": D("1.50")}) != event_hash("t", {"v": D("1.5")})
    assert event_hash("t", {"v": D("1.50")}) == event_hash("t", {"v": D("1.50")})
    assert event_hash("t", {"v": D("1.5")}) != event_hash("t", {"v": "1.5 "})


def test_event_hash_is_sha256_of_the_documented_canonical_json() -> None:
    when = datetime(2025, 8, 29, 10, 30, tzinfo=timezone(timedelta(hours=9)))
    ident = UUID("12345678-1234-5678-1234-567812345678")
    event_fields = {"when": when, "id": ident, "amount": D("860000000.50"), "note": "₹860 crore",
                    "format": DealFormat.JOINT_VENTURE, "tags": ("a", "b"), "flag": True,
                    "version": 3}
    document = (
        '{"fields":{"amount":"860000000.50","flag":true,"format":"joint_venture",'
        '"id":"12345678-1234-5678-1234-567812345678","note":"₹860 crore","tags":["a","b"],'
        '"version":3,"when":"2025-08-29T10:30:00+09:00"},"topic":"dealregistry:X.v1"}'
    )
    expected = hashlib.sha256(document.encode("utf-8")).hexdigest()
    assert event_hash("dealregistry:X.v1", event_fields) == expected


def test_canonical_value() -> None:
    when = datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    ident = UUID(int=1)
    assert canonical_value(D("1.50")) == "1.50"
    assert canonical_value(when) == "2025-01-02T03:04:05.000006+00:00"
    assert canonical_value(ident) == "00000000-0000-0000-0000-000000000001"
    assert canonical_value(DealFormat.JOINT_VENTURE) == "joint_venture"
    assert canonical_value({1: (D("2"), [ident])}) == {"1": ["2", [str(ident)]]}
    assert canonical_value(None) is None
    json.dumps(canonical_value({"a": [when, ident, D(1)]}))  # plain JSON


def test_same_instant_in_another_offset_hashes_differently() -> None:
    utc = datetime(2025, 8, 29, 1, 30, tzinfo=UTC)
    jst = utc.astimezone(timezone(timedelta(hours=9)))
    assert utc == jst
    assert event_hash("t", {"at": utc}) != event_hash("t", {"at": jst})
