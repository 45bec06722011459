"""Pledges over time over HTTP, on SQLite and PostgreSQL: cumulative buckets by business date
(a correction recorded later but dated earlier moves them), `as_of` read from the ledger, the
window's limits as precise 422s; and the ledger built by batches of concurrent partitions
equals the history fold on PostgreSQL."""

from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from services.projections.read_model.queries import ReadModelQueries
from services.shared.settings import Settings
from tests.integration.test_http_api import EmbeddedAppContract, Registry, deal, firm, pledge
from tests.unit.projections.test_ledger_property import (
    DAY0,
    DAYS,
    History,
    check_ledger,
    dated,
    ledger_rows,
    project_in_batches,
)


def recorded(registry: Registry, body: dict) -> dict[str, Any]:
    response = registry.post(body)
    assert response.status_code == 201, response.text
    receipt: dict[str, Any] = response.json()
    return receipt


def usd_low(bucket: dict[str, Any]) -> tuple[int, str]:
    return bucket["pledge_count"], bucket["usd"]["low"]


class OverTimeContract(EmbeddedAppContract):
    def test_buckets_are_cumulative_by_business_date(self, registry: Registry) -> None:
        recorded(registry, firm("f-tata", "tata-motors"))
        recorded(registry, firm("f-mitsui", "mitsui-co", "JP", "trading_house"))
        deal_id = recorded(registry, deal("d-1", ["tata-motors", "mitsui-co"])
                           | {"occurred_at": "2025-01-10T09:00:00Z"})["aggregate_id"]
        recorded(registry, pledge("p-1", deal_id, "mitsui-co", "100", "400",
                                  occurred_at="2025-01-15T09:00:00Z"))
        recorded(registry, pledge("p-2", deal_id, "tata-motors", "50", "60",
                                  occurred_at="2025-03-02T09:00:00Z"))
        # Recorded last, dated first among the pledges: a withdrawal of p-1 in February.
        last = recorded(registry, {
            "event_id": "w-1", "type": "pledge_withdrawn", "occurred_at": "2025-02-20T00:00:00Z",
            "payload": {"deal_id": deal_id, "pledge_id": "p-1", "reason": "no funding"}})
        answer = registry.get("/v1/pledges/over-time", dimension="firm", interval="month",
                              **{"from": "2024-12-15", "to": "2025-03-31"},
                              min_position=last["position"])
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert answer.headers["X-Log-Position"] == str(body["position"])
        assert (body["from"], body["to"], body["total"]) == ("2024-12-01", "2025-03-31", 2)
        by_firm = {item["firm"]["code"]: item["buckets"] for item in body["items"]}
        assert [b["ends"] for b in by_firm["mitsui-co"]] == \
            ["2024-12-31", "2025-01-31", "2025-02-28", "2025-03-31"]
        assert [usd_low(b) for b in by_firm["mitsui-co"]] == \
            [(0, "0"), (1, "100"), (0, "0"), (0, "0")]
        assert [usd_low(b) for b in by_firm["tata-motors"]] == \
            [(0, "0"), (0, "0"), (0, "0"), (1, "50")]
        # A window that starts later still counts what came before it.
        later = registry.get("/v1/pledges/over-time", dimension="sector", interval="day",
                             **{"from": "2025-01-31", "to": "2025-02-01"}).json()
        assert [usd_low(b) for b in later["items"][0]["buckets"]] == [(1, "100"), (1, "100")]
        # as_of a date is the ledger's answer, a time within a day the fold's: both agree.
        for as_of in ("2025-01-31", "2025-02-19T23:00:00Z", "2025-02-20"):
            totals = registry.get("/v1/pledges/by-firm", as_of=as_of).json()
            assert totals["past"]["clock"] == "business"
        jan = registry.get("/v1/pledges/by-firm", as_of="2025-01-31").json()["items"]
        assert [(g["firm"]["code"], g["pledge_count"]) for g in jan] == [("mitsui-co", 1)]
        assert registry.get("/v1/pledges/by-firm", as_of="2025-02-20").json()["items"] == []

    def test_a_long_window_is_paged_and_a_reversed_one_empty(self, registry: Registry) -> None:
        long = registry.get("/v1/pledges/over-time", dimension="sector", interval="day",
                            **{"from": "2024-01-01", "to": "2026-02-01"})
        assert long.status_code == 200, long.text
        assert (long.json()["to"], long.json()["next_from"]) == ("2024-12-31", "2025-01-01")
        year = registry.get("/v1/pledges/over-time", dimension="country", interval="day",
                            limit=1, **{"from": "2024-01-01", "to": "2024-12-31"}).json()
        assert (year["next_from"], year["limit"], year["items"]) == (None, 1, [])
        reversed_ = registry.get("/v1/pledges/over-time", dimension="firm",
                                 **{"from": "2025-03-01", "to": "2025-01-01"}).json()
        assert (reversed_["items"], reversed_["total"]) == ([], 0)
        wrong = registry.get("/v1/pledges/over-time", dimension="firm",
                             **{"from": "2025-02-30", "to": "2025-03-01"})
        assert wrong.status_code == 422
        assert wrong.json()["error"]["field"] == "from"

    def test_needs_a_key(self, registry: Registry) -> None:
        answer = registry.client.get("/v1/pledges/over-time", params={
            "dimension": "sector", "from": "2025-01-01", "to": "2025-01-02"})
        assert answer.status_code == 401


class TestOverTimeOnSQLite(OverTimeContract):
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return Settings(data_dir=tmp_path, projection_poll_seconds=0.05,
                        freshness_wait_seconds=0.2)


@pytest.mark.integration
class TestOverTimeOnPostgres(OverTimeContract):
    @pytest.fixture
    def settings(self, tmp_path: Path, postgres_url: str) -> Settings:
        return Settings(data_dir=tmp_path, database_url=postgres_url,
                        projection_poll_seconds=0.05, freshness_wait_seconds=0.2)


@pytest.mark.integration
@pytest.mark.parametrize("seed", range(8))
def test_ledger_on_postgres_equals_the_history_fold(postgres_url: str, seed: int) -> None:
    """The property test's check on PostgreSQL (atomic NUMERIC upserts), a few histories."""
    rng = random.Random(seed)
    history = History()
    for _ in range(80):
        history.apply(rng.choice(["firm", "deal", "pledge", "pledge", "revise", "withdraw",
                                  "cancel", "agreement"]),
                      rng.randrange(50), rng.randrange(50), rng.randrange(1, 10**9),
                      rng.randrange(10**9))
    envelopes = dated(history.log.envelopes, seed)
    engine = create_engine(postgres_url)
    try:
        project_in_batches(engine, envelopes, seed)
        check_ledger(ReadModelQueries(engine),
                     [DAY0 + timedelta(days=rng.randrange(-1, DAYS)) for _ in range(6)]
                     + [date(2025, 2, 28), date(2025, 3, 1)])
        rows = ledger_rows(engine)
    finally:
        engine.dispose()
    # The same rows as SQLite's read-modify-write path builds.
    sqlite = create_engine("sqlite://")
    project_in_batches(sqlite, envelopes, seed + 1)
    assert ledger_rows(sqlite) == rows


@pytest.mark.parametrize("added", ["rm_pledge_ledger", "rm_pledge_ledger_tree"])
def test_a_ledger_added_to_a_read_model_with_events_is_not_trusted_until_a_rebuild(
    tmp_path: Path, added: str
) -> None:
    """A read model from before the ledger, or from before its tree, alike."""
    from sqlalchemy import text

    from services.cli import main
    from services.demo.scenario import scenario

    settings = Settings(data_dir=tmp_path / "data")
    registry = Registry(settings)
    for body in scenario():
        assert registry.post(body).status_code == 201
    registry.get("/v1/deals", min_position=registry.head())
    as_of = {"as_of": "2025-08-01"}
    before = registry.get("/v1/pledges/by-sector", **as_of).json()["items"]
    keys = registry.keys
    with create_engine(settings.read_model_url()).begin() as conn:  # a read model from before
        conn.execute(text(f"DROP TABLE {added}"))
    registry.close()

    upgraded = Registry(settings, keys)
    try:
        over_time = upgraded.get("/v1/pledges/over-time", dimension="sector",
                                 **{"from": "2025-01-01", "to": "2025-12-31"})
        assert over_time.status_code == 503, over_time.text
        assert over_time.json()["error"]["code"] == "ledger_incomplete"
        # Past totals fall back to the deals' history, so they stay right meanwhile.
        assert upgraded.get("/v1/pledges/by-sector", **as_of).json()["items"] == before
    finally:
        upgraded.close()

    assert main(["projections", "rebuild", "--data-dir", str(settings.data_dir)]) in (0, 1)
    rebuilt = Registry(settings, keys)
    try:
        assert rebuilt.get("/v1/pledges/over-time", dimension="sector",
                           **{"from": "2025-01-01", "to": "2025-12-31"}).status_code == 200
        assert rebuilt.get("/v1/pledges/by-sector", **as_of).json()["items"] == before
        assert ReadModelQueries(create_engine(settings.read_model_url())).ledger_complete()
    finally:
        rebuilt.close()
