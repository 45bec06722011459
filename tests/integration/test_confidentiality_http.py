"""The read side's confidentiality rules (read_model/visibility) through the read API and the
pages, on SQLite and PostgreSQL, with the article's scenario (its meeting is closed-door)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.demo.scenario import scenario
from services.shared.api_keys import Role
from services.shared.settings import Settings
from tests.integration.test_http_api import Registry
from tests.integration.test_pages import sign_in

pytestmark = pytest.mark.integration

DETAILS = ("title", "attendees", "government_bodies", "summary")


@pytest.fixture(params=["sqlite", "postgres"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    running = Registry(Settings(data_dir=tmp_path / "data", database_url=url))
    for body in scenario():
        assert running.post(body).status_code == 201
    running.get("/v1/deals", min_position=running.head())
    yield running
    running.close()


def the_meeting(registry: Registry, role: Role) -> dict:
    [meeting] = registry.get("/v1/meetings", role).json()["items"]
    return meeting


def test_readers_see_that_the_closed_door_meeting_took_place_and_no_more(
        registry: Registry) -> None:
    seen = the_meeting(registry, Role.READER)
    assert seen["closed_door"] is True
    assert seen["location"] and seen["sectors"] and seen["occurred_at"]
    assert [seen[k] for k in DETAILS] == [None] * 4
    assert seen["withheld"] == list(DETAILS)
    for role in (Role.AUDITOR, Role.ADMIN):
        full = the_meeting(registry, role)
        assert full["withheld"] == [] and full["attendees"] and full["government_bodies"]


def test_provenance_of_deal_events_is_for_auditors_and_the_recording_key(
        registry: Registry) -> None:
    deal = registry.get("/v1/deals").json()["items"][0]
    path = f"/v1/deals/{deal['deal_id']}/events"
    as_reader = registry.get(path, Role.READER).json()["items"]
    assert all(e["recorded_by"] is None and e["event_id"] is None for e in as_reader)
    assert all(e["withheld"] == ["event_id", "recorded_by"] for e in as_reader)
    for role in (Role.AUDITOR, Role.PARTNER):  # the partner key recorded the scenario
        shown = registry.get(path, role).json()["items"]
        assert all(e["recorded_by"] == f"test-{Role.PARTNER.value}" and e["event_id"]
                   for e in shown), role


def test_the_pages_apply_the_same_rules(registry: Registry) -> None:
    summary = next(b for b in scenario() if b["type"] == "meeting_held")["payload"]["summary"]
    sign_in(registry)
    meetings = registry.client.get("/meetings").text
    assert "Closed-door meeting" in meetings and summary not in meetings
    assert "withheld" in registry.client.get("/meetings?download=meetings").text
    deal = registry.get("/v1/deals").json()["items"][0]
    assert f"test-{Role.PARTNER.value}" not in registry.client.get(
        f"/deals/{deal['deal_id']}").text
    registry.client.cookies.clear()
    sign_in(registry, Role.AUDITOR)
    assert summary in registry.client.get("/meetings").text
    assert f"test-{Role.PARTNER.value}" in registry.client.get(f"/deals/{deal['deal_id']}").text


def test_a_partner_of_an_attending_firm_sees_the_details_and_others_do_not(
        registry: Registry) -> None:
    store = registry.app.state.api_keys
    attending = store.create("attero-erp", Role.PARTNER, firms=("attero",))
    elsewhere = store.create("toyota-erp", Role.PARTNER, firms=("toyota-motor",))

    def meeting_for_key(key: str) -> dict:
        answer = registry.client.get("/v1/meetings", headers={"Authorization": f"Bearer {key}"})
        [meeting] = answer.json()["items"]
        return meeting

    seen = meeting_for_key(attending)
    assert seen["withheld"] == [] and "attero" in seen["attendees"] and seen["summary"]
    assert meeting_for_key(elsewhere)["withheld"] == list(DETAILS)
