"""The demo scenario is valid, self-consistent and adds up to the article's $100–400 million."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import pytest
from pydantic import TypeAdapter

from contracts.submissions_v1 import Submission
from services.demo.scenario import expected_totals, scenario
from services.registry.domain.values import (
    FIRM_CODE_PATTERN,
    DealFormat,
    FirmKind,
    Sector,
)

SUBMISSION = TypeAdapter(Submission)
BODIES = scenario()


def _of_type(kind: str) -> list[dict]:
    return [body for body in BODIES if body["type"] == kind]


def _deals() -> dict[str, dict]:
    return {body["payload"]["deal_id"]: body["payload"] for body in _of_type("deal_proposed")}


@pytest.mark.parametrize("body", BODIES, ids=[body["event_id"] for body in BODIES])
def test_every_body_validates_against_the_submission_contract(body: dict) -> None:
    parsed = SUBMISSION.validate_python(body)
    assert parsed.type == body["type"]
    # And the body survives the trip through JSON that the client makes.
    assert SUBMISSION.validate_json(json.dumps(body)) == parsed


def test_scenario_is_deterministic() -> None:
    assert scenario() == BODIES
    assert expected_totals() == expected_totals(scenario())


def test_event_ids_are_unique() -> None:
    ids = [body["event_id"] for body in BODIES]
    assert len(ids) == len(set(ids))
    assert all(event_id.startswith("demo-2025-") for event_id in ids)


def test_occurred_at_is_aware_2025_and_in_order() -> None:
    times = [datetime.fromisoformat(body["occurred_at"]) for body in BODIES]
    assert all(t.tzinfo is not None and t.year == 2025 for t in times)
    assert times == sorted(times)


def test_firms_use_valid_codes_kinds_and_countries() -> None:
    firms = [body["payload"] for body in _of_type("firm_registered")]
    codes = [firm["code"] for firm in firms]
    assert len(codes) == len(set(codes))
    kinds = {kind.value for kind in FirmKind}
    for firm in firms:
        assert FIRM_CODE_PATTERN.match(firm["code"]), firm["code"]
        assert firm["kind"] in kinds
        assert firm["country"] in {"JP", "IN"}
    assert {"tata-motors", "tata-autocomp", "maruti-suzuki", "attero", "lohum"} <= set(codes)
    assert any(f["kind"] == "government_body" and f["country"] == "IN" for f in firms)
    assert any(f["kind"] == "private_equity" and f["country"] == "JP" for f in firms)


def test_firms_are_registered_before_they_are_used() -> None:
    registered: set[str] = set()
    for body in BODIES:
        payload = body["payload"]
        if body["type"] == "firm_registered":
            registered.add(payload["code"])
            continue
        used: list[str] = []
        used += payload.get("attendees", [])
        used += payload.get("parties", [])
        used += [payload[key] for key in ("firm", "licensor", "licensee") if key in payload]
        used += list(payload.get("equity", {}))
        missing = set(used) - registered
        assert not missing, f"{body['event_id']} uses unregistered {sorted(missing)}"


def test_closed_door_meeting_has_both_countries_and_government_officials() -> None:
    (meeting,) = [body["payload"] for body in _of_type("meeting_held")]
    country = {
        body["payload"]["code"]: body["payload"]["country"] for body in _of_type("firm_registered")
    }
    assert meeting["closed_door"] is True
    assert {country[code] for code in meeting["attendees"]} == {"JP", "IN"}
    assert meeting["government_bodies"]
    assert set(meeting["sectors"]) <= {sector.value for sector in Sector}
    assert meeting["meeting_id"]


def test_deals_have_known_formats_sectors_and_cover_every_sector() -> None:
    deals = _deals()
    assert len(deals) == len(_of_type("deal_proposed")), "deal ids repeat"
    for deal in deals.values():
        assert deal["format"] in {f.value for f in DealFormat}
        assert deal["sector"] in {s.value for s in Sector}
        assert len(deal["parties"]) == len(set(deal["parties"])) >= 2
    assert {deal["sector"] for deal in deals.values()} == {s.value for s in Sector}


def test_deal_events_follow_their_deal_and_use_known_pledges() -> None:
    seen_deals: set[str] = set()
    active: dict[str, str] = {}  # pledge id -> deal id
    withdrawn: set[str] = set()
    for body in BODIES:
        payload = body["payload"]
        if body["type"] == "deal_proposed":
            seen_deals.add(payload["deal_id"])
        elif "deal_id" in payload:
            assert payload["deal_id"] in seen_deals, body["event_id"]
        if body["type"] == "pledge_made":
            pledge_id = payload["pledge_id"]
            assert pledge_id not in active and pledge_id not in withdrawn
            active[pledge_id] = payload["deal_id"]
        elif body["type"] in ("pledge_revised", "pledge_withdrawn"):
            assert active.get(payload["pledge_id"]) == payload["deal_id"], body["event_id"]
            if body["type"] == "pledge_withdrawn":
                del active[payload["pledge_id"]]
                withdrawn.add(payload["pledge_id"])


def test_pledging_firms_are_parties() -> None:
    deals = _deals()
    for body in _of_type("pledge_made"):
        payload = body["payload"]
        assert payload["pledge_id"]
        assert payload["firm"] in deals[payload["deal_id"]]["parties"], body["event_id"]


def test_pledges_use_usd_inr_and_jpy() -> None:
    currencies = {body["payload"]["amount"]["currency"] for body in _of_type("pledge_made")}
    assert currencies == {"USD", "INR", "JPY"}
    for body in _of_type("pledge_made") + _of_type("pledge_revised"):
        amount = body["payload"]["amount"]
        assert Decimal(amount["low"]) <= Decimal(amount["high"])


def test_each_kind_of_agreement_appears_once_and_fits_its_deal() -> None:
    deals = _deals()
    for kind in (
        "pledge_revised",
        "pledge_withdrawn",
        "tech_transfer_signed",
        "joint_venture_formed",
        "facility_announced",
    ):
        assert len(_of_type(kind)) == 1, kind

    (transfer,) = [body["payload"] for body in _of_type("tech_transfer_signed")]
    deal = deals[transfer["deal_id"]]
    assert deal["format"] in {"technology_transfer", "joint_venture"}
    assert deal["sector"] == "battery_manufacturing"
    assert transfer["licensor"] != transfer["licensee"]
    assert {transfer["licensor"], transfer["licensee"]} <= set(deal["parties"])

    (venture,) = [body["payload"] for body in _of_type("joint_venture_formed")]
    deal = deals[venture["deal_id"]]
    assert deal["format"] == "joint_venture"
    assert deal["sector"] == "recycling"
    assert len(venture["equity"]) >= 2
    assert set(venture["equity"]) <= set(deal["parties"])
    assert sum(Decimal(share) for share in venture["equity"].values()) == Decimal(100)
    assert all(Decimal(0) < Decimal(share) <= Decimal(100) for share in venture["equity"].values())

    (facility,) = [body["payload"] for body in _of_type("facility_announced")]
    deal = deals[facility["deal_id"]]
    assert deal["format"] == "processing_facility"
    assert deal["sector"] == "mineral_processing"
    assert facility["materials"]


def test_overall_totals_are_exactly_the_articles_range() -> None:
    overall = expected_totals()["overall"]
    assert overall["low"] == Decimal("100000000.00")
    assert overall["high"] == Decimal("400000000.00")


def test_per_sector_totals() -> None:
    by_sector = expected_totals()["by_sector"]
    got = {sector: (t["low"], t["high"], t["pledges"]) for sector, t in by_sector.items()}
    million = Decimal(1_000_000)
    assert got == {
        "recycling": (25 * million, 100 * million, 2),
        "battery_manufacturing": (25 * million, 100 * million, 2),
        "mineral_processing": (20 * million, 70 * million, 2),
        "electric_vehicles": (20 * million, 80 * million, 1),
        "joint_ventures_tech_transfer": (10 * million, 50 * million, 1),
    }


def test_revision_and_withdrawal_change_the_totals() -> None:
    without_changes = [
        body for body in BODIES if body["type"] not in ("pledge_revised", "pledge_withdrawn")
    ]
    before = expected_totals(without_changes)["overall"]
    after = expected_totals()["overall"]
    # Revision: ₹43–129 crore -> ₹86–258 crore (+$5M/+$15M); withdrawal: -$10M/-$30M.
    assert after["low"] - before["low"] == Decimal(5_000_000) - Decimal(10_000_000)
    assert after["high"] - before["high"] == Decimal(15_000_000) - Decimal(30_000_000)


def test_conversions_are_exact_at_reference_rates() -> None:
    rates = {"USD": Decimal(1), "INR": Decimal(86), "JPY": Decimal(145)}
    for body in _of_type("pledge_made") + _of_type("pledge_revised"):
        amount = body["payload"]["amount"]
        for key in ("low", "high"):
            assert Decimal(amount[key]) % rates[amount["currency"]] == 0, body["event_id"]


def test_a_cancelled_deal_drops_out_of_the_totals() -> None:
    recycling_deal = next(
        deal_id for deal_id, deal in _deals().items() if deal["sector"] == "recycling"
    )
    cancel = {
        "event_id": "test-cancel",
        "type": "deal_cancelled",
        "occurred_at": "2025-12-01T10:00:00+05:30",
        "payload": {"deal_id": recycling_deal, "reason": "test"},
    }
    SUBMISSION.validate_python(cancel)
    totals = expected_totals([*BODIES, cancel])
    assert totals["by_sector"]["recycling"]["pledges"] == 0
    assert totals["overall"]["low"] == Decimal(75_000_000)
