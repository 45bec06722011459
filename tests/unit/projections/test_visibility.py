"""Who sees a closed-door meeting's details and an event's provenance."""

from __future__ import annotations

from services.projections.read_model.visibility import Viewer, event_for, meeting_for

CLOSED = {"meeting_id": "m", "title": "Talks", "location": "New Delhi", "closed_door": True,
          "attendees": ["tata-motors", "suzuki-motor"], "government_bodies": ["MHI"],
          "sectors": ["electric_vehicles"], "summary": "Pledges", "occurred_at": "2025-05-20"}
EVENT = {"position": 7, "event_id": "erp-7", "recorded_by": "tata-erp", "type": "pledge_made"}

READER = Viewer("dash", sees_everything=False)
AUDITOR = Viewer("audit", sees_everything=True)


def test_a_reader_sees_that_a_closed_door_meeting_took_place_and_no_more() -> None:
    shown = meeting_for(READER, CLOSED)
    assert {k: shown[k] for k in ("location", "closed_door", "sectors", "occurred_at")} == {
        "location": "New Delhi", "closed_door": True, "sectors": ["electric_vehicles"],
        "occurred_at": "2025-05-20"}
    assert [shown[k] for k in ("title", "attendees", "government_bodies", "summary")] == \
        [None] * 4
    assert shown["withheld"] == ["title", "attendees", "government_bodies", "summary"]


def test_auditors_and_partners_of_an_attending_firm_see_the_details() -> None:
    for viewer in (AUDITOR, Viewer("tata-erp", False, frozenset({"tata-motors"}))):
        shown = meeting_for(viewer, CLOSED)
        assert shown["attendees"] == CLOSED["attendees"] and shown["withheld"] == []
    other = meeting_for(Viewer("lohum-erp", False, frozenset({"lohum"})), CLOSED)
    assert other["attendees"] is None


def test_an_open_meeting_is_open_to_all() -> None:
    shown = meeting_for(READER, {**CLOSED, "closed_door": False})
    assert shown["summary"] == "Pledges" and shown["withheld"] == []


def test_provenance_is_for_auditors_and_the_recording_key() -> None:
    assert event_for(READER, EVENT)["recorded_by"] is None
    assert event_for(READER, EVENT)["event_id"] is None
    assert event_for(READER, EVENT)["withheld"] == ["event_id", "recorded_by"]
    assert event_for(Viewer("tata-erp", False), EVENT)["event_id"] == "erp-7"
    assert event_for(AUDITOR, EVENT)["recorded_by"] == "tata-erp"
    assert event_for(READER, EVENT)["position"] == 7  # the rest stays
