"""The demo's year of history: valid, deterministic, plausible, and recorded by the registry
after the article's scenario without a single refusal, and only once."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import pytest
from pydantic import TypeAdapter

from contracts.submissions_v1 import Submission
from services.demo.history import (
    HISTORY_EVENT_ID_PREFIX,
    SCENARIO_INVENTED_CODES,
    fictional_firm_codes,
    history,
    is_fictional_firm_name,
    is_illustrative,
)
from services.demo.scenario import expected_totals, scenario
from services.registry.adapters.event_store import DealRegistryStore, open_event_store
from services.registry.application.commands import RecordPartnerEvent
from services.registry.application.handlers import RecordingService
from services.registry.domain.deal import Deal
from services.shared.settings import Settings

SUBMISSION = TypeAdapter(Submission)
BODIES = history()
SCENARIO = scenario()
ARTICLE_FIRMS = {"tata-motors", "tata-autocomp", "maruti-suzuki", "attero", "lohum"}


def _of_type(kind: str) -> list[dict]:
    return [body for body in BODIES if body["type"] == kind]


def _firms() -> list[dict]:
    return [body["payload"] for body in _of_type("firm_registered")]


def test_every_body_validates_against_the_submission_contract() -> None:
    for body in BODIES:
        parsed = SUBMISSION.validate_python(body)
        assert SUBMISSION.validate_json(json.dumps(body)) == parsed, body["event_id"]


def test_history_is_deterministic_and_another_seed_differs() -> None:
    assert history() == BODIES
    other = history(seed=7)
    assert other != BODIES
    for body in other:
        SUBMISSION.validate_python(body)


def test_event_ids_are_unique_marked_and_apart_from_the_scenario() -> None:
    ids = [body["event_id"] for body in BODIES]
    assert len(ids) == len(set(ids))
    assert all(event_id.startswith(HISTORY_EVENT_ID_PREFIX) for event_id in ids)
    assert not set(ids) & {body["event_id"] for body in SCENARIO}
    assert all(is_illustrative(body["event_id"]) for body in SCENARIO + BODIES)
    assert not is_illustrative("partner-2026-03-pledge-1")
    pledge_ids = [body["payload"]["pledge_id"] for body in _of_type("pledge_made")]
    assert len(pledge_ids) == len(set(pledge_ids))


def test_seventy_plus_japanese_firms_with_invented_names_marked_fictional() -> None:
    firms = _firms()
    japanese = [firm for firm in firms if firm["country"] == "JP"]
    assert len(japanese) >= 70
    assert all(is_fictional_firm_name(firm["name"]) for firm in firms)
    codes = [firm["code"] for firm in firms]
    assert len(codes) == len(set(codes))
    scenario_codes = {body["payload"]["code"] for body in SCENARIO
                      if body["type"] == "firm_registered"}
    assert not set(codes) & scenario_codes, "the scenario's firms are registered once"
    assert set(codes) | SCENARIO_INVENTED_CODES == fictional_firm_codes()
    assert {"tata-motors", "maruti-suzuki", "attero", "lohum"}.isdisjoint(fictional_firm_codes())
    kinds = Counter(firm["kind"] for firm in japanese)
    assert kinds["manufacturer"] >= 15 and kinds["private_equity"] >= 5


def test_the_articles_indian_firms_take_part() -> None:
    parties = {code for body in _of_type("deal_proposed") for code in body["payload"]["parties"]}
    assert ARTICLE_FIRMS <= parties
    assert {firm["code"] for firm in _firms() if firm["country"] == "IN"} <= parties | {
        code for body in _of_type("meeting_held") for code in body["payload"]["attendees"]}


def test_every_kind_of_event_and_the_changes_over_time_appear() -> None:
    counts = Counter(body["type"] for body in BODIES)
    assert set(counts) == {
        "firm_registered", "meeting_held", "deal_proposed", "pledge_made", "pledge_revised",
        "pledge_withdrawn", "tech_transfer_signed", "joint_venture_formed",
        "facility_announced", "deal_cancelled",
    }
    assert counts["deal_proposed"] >= 40
    assert counts["pledge_made"] >= 60
    assert counts["pledge_revised"] >= 10
    assert counts["pledge_withdrawn"] >= 3
    assert counts["deal_cancelled"] >= 1
    closed = [body["payload"] for body in _of_type("meeting_held")
              if body["payload"]["closed_door"]]
    assert len(closed) >= 5
    assert all(meeting["government_bodies"] and "india-mhi" in meeting["attendees"]
               for meeting in closed)


def test_dates_follow_the_scenario_span_a_year_and_are_weekdays_in_order() -> None:
    times = [datetime.fromisoformat(body["occurred_at"]) for body in BODIES]
    assert times == sorted(times)
    assert all(t.utcoffset() is not None for t in times)
    scenario_end = max(datetime.fromisoformat(body["occurred_at"]) for body in SCENARIO)
    assert times[0] > scenario_end
    assert (times[-1] - times[0]).days >= 330
    assert all(t.weekday() < 5 for t in times)
    months = Counter(t.strftime("%Y-%m") for t in times
                     if BODIES[times.index(t)]["type"] == "pledge_made")
    assert len(months) >= 11, "pledges come in every month, not all at once"


def test_amounts_are_plausible_in_usd_inr_and_jpy() -> None:
    amounts = [body["payload"]["amount"] for body in _of_type("pledge_made")
               + _of_type("pledge_revised")]
    assert {amount["currency"] for amount in amounts} == {"USD", "INR", "JPY"}
    assert all(Decimal(a["low"]) <= Decimal(a["high"]) for a in amounts)
    before = expected_totals(SCENARIO)["overall"]
    after = expected_totals(SCENARIO + BODIES)["overall"]
    added_low, added_high = after["low"] - before["low"], after["high"] - before["high"]
    assert Decimal(100_000_000) < added_low < added_high < Decimal(2_000_000_000)


def test_no_event_follows_a_cancellation() -> None:
    cancelled_at = {body["payload"]["deal_id"]: body["occurred_at"]
                    for body in _of_type("deal_cancelled")}
    for body in BODIES:
        deal_id = body["payload"].get("deal_id")
        if body["type"] != "deal_cancelled" and deal_id in cancelled_at:
            assert datetime.fromisoformat(body["occurred_at"]) < datetime.fromisoformat(
                cancelled_at[deal_id]), body["event_id"]


# Recorded by the registry itself: every domain rule applies.


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DealRegistryStore]:
    opened = open_event_store(Settings(data_dir=tmp_path / "data"))
    yield opened
    opened.close()


def _record_all(service: RecordingService, bodies: list[dict]) -> list[bool]:
    """Record each body as the demo's partner; answer whether each was a replay."""
    return [service.record(RecordPartnerEvent("demo-partner", SUBMISSION.validate_python(b)))
            .replayed for b in bodies]


def test_recorded_after_the_scenario_without_a_refusal_and_only_once(
    store: DealRegistryStore,
) -> None:
    service = RecordingService(store)
    assert not any(_record_all(service, SCENARIO + BODIES))
    head = store.head_position()
    assert head == len(SCENARIO + BODIES)  # one event each; receipts are beside the log

    # The registry's own state agrees with the totals computed from the bodies alone.
    deals = [store.repository.get(UUID(body["payload"]["deal_id"]))
             for body in SCENARIO + BODIES if body["type"] == "deal_proposed"]
    assert all(isinstance(deal, Deal) for deal in deals)
    overall = expected_totals(SCENARIO + BODIES)["overall"]
    active = [pledge for deal in deals for pledge in deal.active_pledges()]
    assert len(active) == overall["pledges"]
    assert sum(p.usd.low for p in active) == overall["low"]
    assert sum(p.usd.high for p in active) == overall["high"]
    assert sum(deal.status == "cancelled" for deal in deals) == len(_of_type("deal_cancelled"))

    # Recording the whole demo again records nothing: every event is answered as a replay.
    assert all(_record_all(service, SCENARIO + BODIES))
    assert store.head_position() == head


def test_batches_record_the_history_as_single_events_do(store: DealRegistryStore) -> None:
    service = RecordingService(store)
    _record_all(service, SCENARIO)
    submissions = [SUBMISSION.validate_python(body) for body in BODIES]
    for start in range(0, len(submissions), 50):
        outcomes = service.record_many("demo-partner", submissions[start:start + 50])
        refused = [o for o in outcomes if isinstance(o, Exception)]
        assert not refused, refused[:3]
    head = store.head_position()
    again = service.record_many("demo-partner", submissions[:50])
    assert all(not isinstance(o, Exception) and o.replayed for o in again)
    assert store.head_position() == head


def test_history_starts_after_the_article_scenario() -> None:
    assert date.fromisoformat(BODIES[0]["occurred_at"][:10]) == date(2025, 10, 13)
