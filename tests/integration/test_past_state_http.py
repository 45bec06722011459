"""Past state over HTTP, on SQLite and on PostgreSQL: a correction recorded later changes the
business-time answer but not the recorded-time one, and ?version=N is the state after N
events."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from services.shared.settings import Settings
from tests.integration.test_http_api import EmbeddedAppContract, Registry, deal, firm, pledge

PROPOSED = "2025-06-02T09:00:00+05:30"
PLEDGED = "2025-06-10T09:00:00+09:00"
CORRECTED_TO = "2025-06-20T12:00:00+00:00"  # the correction's business time


def revision(event_id: str, deal_id: str, pledge_id: str, low: str, high: str) -> dict:
    return {
        "event_id": event_id, "type": "pledge_revised", "occurred_at": CORRECTED_TO,
        "payload": {"deal_id": deal_id, "pledge_id": pledge_id, "reason": "signed term sheet",
                    "amount": {"low": low, "high": high, "currency": "USD"}},
    }


def recorded(registry: Registry, body: dict) -> dict[str, Any]:
    response = registry.post(body)
    assert response.status_code == 201, response.text
    receipt: dict[str, Any] = response.json()
    return receipt


def without_position(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key not in ("position", "past")}


def mitsui_usd(body: dict[str, Any]) -> dict[str, Any]:
    [group] = [g for g in body["items"] if g["firm"]["code"] == "mitsui-co"]
    return {"count": group["pledge_count"], **group["usd"]}


class PastStateContract(EmbeddedAppContract):
    def test_a_correction_changes_business_time_not_recorded_time(
        self, registry: Registry
    ) -> None:
        recorded(registry, firm("f-tata", "tata-motors"))
        recorded(registry, firm("f-mitsui", "mitsui-co", "JP", "trading_house"))
        deal_id = recorded(registry, deal("d-jv", ["tata-motors", "mitsui-co"],
                                          sector="battery_manufacturing")
                           | {"occurred_at": PROPOSED})["aggregate_id"]
        made = recorded(registry, pledge("p-1", deal_id, "mitsui-co", "100000000", "400000000",
                                         occurred_at=PLEDGED))
        before_correction = made["position"]
        path = f"/v1/deals/{deal_id}"
        live_at_version_2 = registry.get(path, min_position=before_correction).json()
        asked_then = registry.get(path, as_of="2025-06-25").json()
        assert asked_then["pledges"][0]["amount"]["low"] == "100000000"

        corrected = recorded(registry, revision("r-1", deal_id, "p-1", "150000000", "150000000"))
        registry.get(path, min_position=corrected["position"])

        # Business time: the correction occurred on 20 June, so 25 June now reads 150M ...
        business = registry.get(path, as_of="2025-06-25")
        assert business.status_code == 200
        body = business.json()
        assert body["past"] == {"clock": "business", "as_of": "2025-06-25T23:59:59.999999+00:00"}
        assert body["position"] == corrected["position"]
        assert body["pledges"][0]["amount"]["low"] == "150000000"
        assert body["pledges"][0]["revisions"] == 1
        # ... 15 June is before the correction occurred, and before 2 June the deal did not exist.
        assert registry.get(path, as_of="2025-06-15").json()["pledges"][0]["revisions"] == 0
        not_yet = registry.get(path, as_of="2025-06-01T23:59:59Z")
        assert not_yet.status_code == 404
        assert not_yet.json()["error"]["rule"] == "existed_then"

        # Recorded time: what the registry knew before the correction was recorded is unchanged.
        knew = registry.get(path, recorded_as_of=str(before_correction))
        assert knew.status_code == 200
        assert knew.json()["past"] == {"clock": "recorded", "recorded_as_of": before_correction}
        assert knew.json()["position"] == before_correction
        assert knew.headers["X-Log-Position"] == str(before_correction)
        assert without_position(knew.json()) == without_position(live_at_version_2)
        assert without_position(asked_then) == without_position(live_at_version_2)

        # ?version=N is the state after the deal's first N events.
        at_version_2 = registry.get(path, version=2).json()
        assert at_version_2["past"] == {"clock": "version", "version": 2}
        assert at_version_2["position"] == before_correction
        assert without_position(at_version_2) == without_position(live_at_version_2)
        assert registry.get(path, version=3).json()["pledges"][0]["amount"]["low"] == \
            "150000000"

        # Totals on both clocks.
        by_firm = "/v1/pledges/by-firm"
        assert mitsui_usd(registry.get(by_firm, as_of="2025-06-25").json()) == \
            {"count": 1, "low": "150000000", "high": "150000000"}
        assert mitsui_usd(registry.get(by_firm, recorded_as_of=str(before_correction)).json()) \
            == {"count": 1, "low": "100000000", "high": "400000000"}
        before_pledge = registry.get(by_firm, as_of="2025-06-05").json()
        assert (before_pledge["items"], before_pledge["past"]["clock"]) == ([], "business")
        by_sector = registry.get("/v1/pledges/by-sector", recorded_as_of="2000-01-01").json()
        assert (by_sector["items"], by_sector["position"]) == ([], 0)

    def test_refusals_are_precise_4xx(self, registry: Registry) -> None:
        recorded(registry, firm("f-tata", "tata-motors"))
        deal_id = recorded(registry, deal("d-1", ["tata-motors"]))["aggregate_id"]
        path = f"/v1/deals/{deal_id}"
        registry.get(path, min_position=registry.head())

        both = registry.get(path, as_of="2025-06-01", recorded_as_of="3")
        assert both.status_code == 422
        assert (both.json()["error"]["field"], both.json()["error"]["rule"]) == \
            ("recorded_as_of", "mutually_exclusive")
        assert registry.get(path, version=1, as_of="2025-06-01").json()["error"]["field"] == \
            "as_of"
        assert registry.get("/v1/pledges/by-country", as_of="x", recorded_as_of="1") \
            .status_code == 422

        beyond = registry.get(path, version=2)
        assert beyond.status_code == 404
        assert beyond.json()["error"]["field"] == "version"
        assert beyond.json()["error"]["latest_version"] == 1
        for bad in ({"version": 0}, {"version": "x"}, {"as_of": "yesterday"},
                    {"as_of": "2025-13-01"}, {"recorded_as_of": "-1"},
                    {"as_of": "9999-12-31T23:00:00-05:00"}):
            response = registry.get(path, **bad)
            assert response.status_code == 422, (bad, response.text)
            assert response.json()["error"]["field"] in bad
        ahead = registry.get(path, recorded_as_of=str(registry.head() + 1000))
        assert ahead.status_code == 409
        assert ahead.json()["error"]["field"] == "recorded_as_of"
        noise = random.Random(5)
        for _ in range(60):
            text = "".join(noise.choice("0123456789-:TZ+.x ") for _ in range(noise.randint(1, 30)))
            for name in ("as_of", "recorded_as_of", "version"):
                for where in (path, "/v1/pledges/by-sector"):
                    assert registry.get(where, **{name: text}).status_code < 500, (name, text)
        missing = "00000000-0000-0000-0000-000000000000"
        for params in ({"version": 1}, {"as_of": "2030-01-01"}, {"recorded_as_of": "1"}):
            assert registry.get(f"/v1/deals/{missing}", **params).status_code == 404


class TestPastStateOnSQLite(PastStateContract):
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return Settings(data_dir=tmp_path, projection_poll_seconds=0.05,
                        freshness_wait_seconds=0.2)


@pytest.mark.integration
class TestPastStateOnPostgres(PastStateContract):
    @pytest.fixture
    def settings(self, tmp_path: Path, postgres_url: str) -> Settings:
        return Settings(data_dir=tmp_path, database_url=postgres_url,
                        projection_poll_seconds=0.05, freshness_wait_seconds=0.2)
