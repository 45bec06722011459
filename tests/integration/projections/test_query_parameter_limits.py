"""No query parameter can make a read answer 5xx: numbers past what a backend holds, odd
strings and impossible dates are 422s naming the field and the rule, and a position far
beyond the head is a 409 after the bounded wait. On SQLite and on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine

from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.query_api.freshness import PositionWaiters
from services.projections.query_api.routes import read_router
from services.projections.read_model.queries import ReadModelQueries
from services.projections.read_model.tables import create_read_schema
from services.shared.api_keys import ApiKeyStore, Role
from services.shared.errors import install_error_handlers
from services.shared.settings import Settings, sqlalchemy_url
from tests.unit.projections.projector_cases import Scenario

pytestmark = pytest.mark.integration

WAIT_SECONDS = 0.2
BIGINT_MAX = 2**63 - 1
LISTS = ("/v1/deals", "/v1/firms", "/v1/meetings", "/v1/audit/events")
PASTS = ("/v1/pledges/by-sector", "/v1/pledges/by-firm", "/v1/pledges/by-country")
IMPOSSIBLE_TIMES = (
    "0000-01-01", "10000-01-01", "2025-02-29", "2025-06-30T10:00+99:00",
    "9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:30", "2025-06-30T10:00:00\x00",
    "٢٠٢٥-٠٦-٣٠", "9" * 41,
)
CONTROL_TEXT = ("\x00", "a\x00b", "tab\there", "\x7f", "\x85")


class ReadApi:
    def __init__(self, client: TestClient, scenario: Scenario, key: str) -> None:
        self.client = client
        self.scenario = scenario
        self.headers = {"Authorization": f"Bearer {key}"}
        self.position = len(scenario.log.envelopes)

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(path, params=params, headers=self.headers)

    def refuses(self, path: str, field: str, **params: Any) -> dict[str, Any]:
        """The 422 of a read, which must name `field` and a rule."""
        response = self.get(path, **params)
        assert response.status_code == 422, (path, params, response.text)
        error = response.json()["error"]
        assert error["field"] == field, (path, params, error)
        assert error["rule"], error
        return dict(error)


class QueryParameterLimits:
    @pytest.fixture
    def engine(self) -> Iterator[Engine]:
        raise NotImplementedError

    @pytest.fixture
    def api(self, engine: Engine, tmp_path: Path) -> Iterator[ReadApi]:
        create_read_schema(engine)
        scenario = Scenario()
        projector = ReadModelProjector(engine)
        projector.apply(scenario.log.envelopes)
        keys = ApiKeyStore(create_engine(f"sqlite:///{tmp_path / 'keys.db'}"))
        keys.create_schema()
        app = FastAPI()
        app.state.read_queries = ReadModelQueries(engine)
        app.state.position_waiters = PositionWaiters(projector.applied)
        app.state.settings = Settings(data_dir=tmp_path, freshness_wait_seconds=WAIT_SECONDS)
        app.state.api_keys = keys
        install_error_handlers(app)
        app.include_router(read_router())
        with TestClient(app) as client:
            yield ReadApi(client, scenario, keys.create("auditor", Role.ADMIN))
        keys.engine.dispose()

    def test_offsets_and_limits_beyond_any_list(self, api: ReadApi) -> None:
        deal_events = f"/v1/deals/{api.scenario.battery}/events"
        for path in (*LISTS, deal_events):
            for offset in (2**63, BIGINT_MAX, 1_000_000_001, -1, "1e3", "0x10", "٣"):
                api.refuses(path, "offset", offset=offset)
            for limit in (0, 501, 2**64, "", "NaN"):
                api.refuses(path, "limit", limit=limit)
            deepest = api.get(path, offset=1_000_000_000, limit=500)
            assert deepest.status_code == 200, deepest.text
            assert deepest.json()["items"] == []

    def test_positions_past_bigint_are_refused(self, api: ReadApi) -> None:
        for path in (*LISTS, *PASTS, f"/v1/deals/{api.scenario.battery}"):
            api.refuses(path, "min_position", min_position=2**63)
            api.refuses(path, "min_position", min_position=10**400)
        for huge in ("9" * 19, "9" * 40, str(2**63), "٣", "²", "-1", " 1"):
            api.refuses("/v1/pledges/by-sector", "recorded_as_of", recorded_as_of=huge)
        deal = f"/v1/deals/{api.scenario.battery}"
        for version in (0, 2**31, 2**63, -1):
            api.refuses(deal, "version", version=version)

    def test_a_position_far_beyond_the_head_is_409_after_the_bounded_wait(
            self, api: ReadApi) -> None:
        for params in ({"min_position": BIGINT_MAX}, {"recorded_as_of": "9" * 18}):
            started = time.monotonic()
            response = api.get("/v1/pledges/by-firm", **params)
            waited = time.monotonic() - started
            assert response.status_code == 409, response.text
            error = response.json()["error"]
            assert (error["code"], error["position"]) == ("not_yet_visible", api.position)
            assert WAIT_SECONDS <= waited < WAIT_SECONDS + 2

    def test_impossible_times_are_refused(self, api: ReadApi) -> None:
        for text in IMPOSSIBLE_TIMES:
            for path in PASTS:
                api.refuses(path, "as_of", as_of=text)
                api.refuses(path, "recorded_as_of", recorded_as_of=text)
            api.refuses(f"/v1/deals/{api.scenario.battery}", "as_of", as_of=text)
            api.refuses("/v1/audit/events", "from", **{"from": text})
            api.refuses("/v1/audit/events", "to", to=text)

    def test_times_at_the_edges_of_the_range_answer(self, api: ReadApi) -> None:
        for text in ("1900-01-01", "1900-01-01T00:00:00+05:30", "2199-12-31T23:59:59-23:59",
                     "2024-02-29", "2000-02-29T12:00Z"):
            assert api.get("/v1/pledges/by-sector", as_of=text).status_code == 200, text
            assert api.get("/v1/deals", recorded_as_of=text).status_code == 200, text
            assert api.get("/v1/audit/events", **{"from": text, "to": text}).status_code == 200

    def test_filters_refuse_control_characters_and_unknown_values(self, api: ReadApi) -> None:
        # PostgreSQL cannot even compare text with a NUL: such a filter must not reach it.
        for text in CONTROL_TEXT:
            api.refuses("/v1/audit/events", "recorded_by", recorded_by=text)
            api.refuses("/v1/deals", "party", party=text)
            api.refuses("/v1/firms", "country", country=text)
            api.refuses("/v1/firms", "kind", kind=text)
            api.refuses("/v1/deals", "sector", sector=text)
        for name, value in (("sector", "solar"), ("format", "merger"), ("status", "signed"),
                            ("party", "Tata Motors"), ("party", "x" * 65)):
            api.refuses("/v1/deals", name, **{name: value})
        for name, value in (("country", "jp"), ("country", "JPN"), ("kind", "bank")):
            api.refuses("/v1/firms", name, **{name: value})
        assert api.get("/v1/deals", party="toyota", sector="battery_manufacturing",
                       format="joint_venture", status="proposed").json()["total"] == 1
        assert api.get("/v1/firms", country="JP", kind="automaker").json()["total"] == 2


class TestQueryParameterLimitsOnSQLite(QueryParameterLimits):
    @pytest.fixture
    def engine(self, tmp_path: Path) -> Iterator[Engine]:
        engine = create_engine(f"sqlite:///{tmp_path / 'read.db'}")
        yield engine
        engine.dispose()


class TestQueryParameterLimitsOnPostgres(QueryParameterLimits):
    @pytest.fixture
    def engine(self, postgres_url: str) -> Iterator[Engine]:
        engine = create_engine(sqlalchemy_url(postgres_url))
        yield engine
        engine.dispose()
