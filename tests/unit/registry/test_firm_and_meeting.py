"""Rules of the Firm and Meeting aggregates, on the aggregates themselves."""

from __future__ import annotations

from uuid import UUID

import pytest

from services.registry.domain.errors import InvalidValue
from services.registry.domain.firm import Firm
from services.registry.domain.identities import derived_id, firm_id, receipt_id
from services.registry.domain.meeting import MAX_ATTENDEES, Meeting
from services.registry.domain.recorded import GENESIS_HASH
from services.registry.domain.values import FirmKind
from tests.unit.registry.support import IN_FIRM, JP_FIRM, provenance

MEETING_ID = UUID("0b7f9a52-54b8-4d8e-9d3c-0d8b5e1c2a44")


def register(code: str = "tata-motors", name: str = "Tata Motors", country: str = "IN",
             kind: str = "automaker") -> Firm:
    return Firm.register(code, name, country, kind, provenance("firm"))


def hold(**overrides: object) -> Meeting:
    kwargs: dict[str, object] = {
        "meeting_id": MEETING_ID, "title": "Closed-door round table", "location": "Tokyo",
        "closed_door": True, "attendees": [JP_FIRM, IN_FIRM],
        "government_bodies": ["METI", "MeitY"], "sectors": ["recycling"], "summary": "",
        "provenance": provenance("meet"),
    }
    kwargs.update(overrides)
    return Meeting.hold(**kwargs)  # type: ignore[arg-type]


# Firms.


def test_firm_registration_sets_state_and_deterministic_id() -> None:
    firm = register(name="  Tata Motors  ")
    assert firm.id == firm_id("tata-motors")
    assert firm.id == register().id  # the same code always addresses the same firm
    assert firm.id != firm_id("tata-autocomp")
    assert (firm.code, firm.name, firm.country, firm.kind) == (
        "tata-motors", "Tata Motors", "IN", "automaker")
    assert firm.version == 1
    (event,) = firm.pending_events
    assert isinstance(event, Firm.Registered)
    assert event.previous_hash == GENESIS_HASH
    assert firm.last_hash == event.hash()


@pytest.mark.parametrize("kind", [k.value for k in FirmKind])
def test_every_firm_kind_is_accepted(kind: str) -> None:
    assert register(kind=kind).kind == kind


@pytest.mark.parametrize(
    ("overrides", "field", "rule"),
    [
        ({"code": "Tata-Motors"}, "code", "firm_code"),
        ({"code": "ab"}, "code", "firm_code"),
        ({"code": "tata_motors"}, "code", "firm_code"),
        ({"code": "-tata"}, "code", "firm_code"),
        ({"code": "a" * 65}, "code", "firm_code"),
        ({"country": "XX"}, "country", "iso_3166_alpha2"),
        ({"country": "in"}, "country", "iso_3166_alpha2"),
        ({"country": "IND"}, "country", "iso_3166_alpha2"),
        ({"kind": "bank"}, "kind", "one_of"),
        ({"kind": "Automaker"}, "kind", "one_of"),
        ({"name": "   "}, "name", "not_blank"),
        ({"name": "x" * 201}, "name", "max_length"),
    ],
)
def test_firm_rules(overrides: dict[str, str], field: str, rule: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        register(**overrides)
    assert (caught.value.field, caught.value.rule) == (field, rule)
    assert caught.value.code == "invalid_value"


def test_ids_are_deterministic_and_distinct_by_purpose() -> None:
    assert derived_id("deal", "a", "e1") == derived_id("deal", "a", "e1")
    assert derived_id("deal", "a", "e1") != derived_id("deal", "b", "e1")
    assert derived_id("deal", "a", "e1") != derived_id("meeting", "a", "e1")
    assert receipt_id("a", "e1") == derived_id("receipt", "a", "e1")
    assert receipt_id("a", "e1") != receipt_id("a", "e2")


# Meetings.


def test_meeting_sets_state() -> None:
    meeting = hold(title=" Round table ", location=" Tokyo ", summary="  notes  ",
                   government_bodies=[" METI "])
    assert meeting.id == MEETING_ID
    assert meeting.version == 1
    assert (meeting.title, meeting.location, meeting.summary) == ("Round table", "Tokyo", "notes")
    assert meeting.closed_door is True
    assert meeting.attendees == [JP_FIRM, IN_FIRM]
    assert meeting.government_bodies == ["METI"]
    assert meeting.sectors == ["recycling"]
    (event,) = meeting.pending_events
    assert isinstance(event, Meeting.Held)
    assert event.previous_hash == GENESIS_HASH
    assert meeting.last_hash == event.hash()


def test_meeting_summary_is_truncated_to_2000() -> None:
    assert len(hold(summary="s" * 3000).summary) == 2000


def test_meeting_needs_an_attendee() -> None:
    with pytest.raises(InvalidValue) as caught:
        hold(attendees=[])
    assert (caught.value.field, caught.value.rule) == ("attendees", "min_items")


def test_meeting_attendees_must_be_unique() -> None:
    with pytest.raises(InvalidValue) as caught:
        hold(attendees=[JP_FIRM, IN_FIRM, IN_FIRM])
    assert (caught.value.field, caught.value.rule) == ("attendees", "unique")


def test_meeting_attendees_are_limited() -> None:
    assert len(hold(attendees=[f"firm-{i}" for i in range(MAX_ATTENDEES)]).attendees) == 500
    with pytest.raises(InvalidValue) as caught:
        hold(attendees=[f"firm-{i}" for i in range(MAX_ATTENDEES + 1)])
    assert (caught.value.field, caught.value.rule) == ("attendees", "max_items")


@pytest.mark.parametrize(
    ("overrides", "field", "rule"),
    [
        ({"sectors": ["recycling", "solar"]}, "sectors", "one_of"),
        ({"title": ""}, "title", "not_blank"),
        ({"location": "  "}, "location", "not_blank"),
        ({"government_bodies": ["METI", " "]}, "government_bodies", "not_blank"),
    ],
)
def test_meeting_rules(overrides: dict[str, object], field: str, rule: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        hold(**overrides)
    assert (caught.value.field, caught.value.rule) == (field, rule)


def test_meeting_without_sectors_or_bodies_is_allowed() -> None:
    meeting = hold(sectors=[], government_bodies=[], closed_door=False)
    assert (meeting.sectors, meeting.government_bodies, meeting.closed_door) == ([], [], False)
