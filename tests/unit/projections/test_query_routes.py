"""The read API over a real SQLite read model, through FastAPI's TestClient."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.query_api.freshness import PositionWaiters
from services.projections.query_api.routes import read_router
from services.projections.read_model.queries import ReadModelQueries
from services.projections.read_model.tables import create_read_schema
from services.shared.api_keys import ApiKeyStore, Role
from services.shared.errors import install_error_handlers
from services.shared.settings import Settings
from tests.unit.projections.projector_cases import Scenario


class ReadApi:
    def __init__(self, client: TestClient, scenario: Scenario, reader_key: str,
                 partner_key: str) -> None:
        self.client = client
        self.scenario = scenario
        self.reader = {"Authorization": f"Bearer {reader_key}"}
        self.partner = {"Authorization": f"Bearer {partner_key}"}
        self.position = len(scenario.log.envelopes)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ReadApi]:
    read_engine = create_engine(f"sqlite:///{tmp_path / 'read.db'}")
    keys_engine = create_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    create_read_schema(read_engine)
    scenario = Scenario()
    projector = ReadModelProjector(read_engine)
    projector.apply(scenario.log.envelopes)
    keys = ApiKeyStore(keys_engine)
    keys.create_schema()

    app = FastAPI()
    app.state.read_queries = ReadModelQueries(read_engine)
    app.state.position_waiters = PositionWaiters(projector.applied)
    app.state.settings = Settings(data_dir=tmp_path, freshness_wait_seconds=0.05)
    app.state.api_keys = keys
    install_error_handlers(app)
    app.include_router(read_router())
    with TestClient(app) as client:
        yield ReadApi(client, scenario, keys.create("dashboard", Role.READER),
                      keys.create("partner-a", Role.PARTNER))
    read_engine.dispose()
    keys_engine.dispose()


def test_reads_need_an_api_key(api: ReadApi) -> None:
    response = api.client.get("/v1/deals")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert api.client.get("/v1/deals", headers={"Authorization": "Bearer drk_nope"}) \
        .status_code == 401


def test_readers_and_partners_may_read(api: ReadApi) -> None:
    assert api.client.get("/v1/firms", headers=api.reader).status_code == 200
    assert api.client.get("/v1/firms", headers=api.partner).status_code == 200


def test_totals_carry_the_position(api: ReadApi) -> None:
    response = api.client.get("/v1/pledges/by-sector", headers=api.reader)
    assert response.status_code == 200
    body = response.json()
    assert body["position"] == api.position
    assert response.headers["X-Log-Position"] == str(api.position)
    battery = {g["sector"]: g for g in body["items"]}["battery_manufacturing"]
    inr = {c["currency"]: c for c in battery["by_currency"]}["INR"]
    assert inr["display"] == "₹860–3,500 crore"
    assert inr["crore"] == {"low": "860", "high": "3500"}
    for path in ("/v1/pledges/by-firm", "/v1/pledges/by-country"):
        assert len(api.client.get(path, headers=api.reader).json()["items"]) > 0


def test_lists_are_paged(api: ReadApi) -> None:
    first = api.client.get("/v1/firms?limit=2", headers=api.reader).json()
    second = api.client.get("/v1/firms?limit=2&offset=2", headers=api.reader).json()
    assert [f["code"] for f in first["items"]] == ["suzuki", "tata-motors"]
    assert [f["code"] for f in second["items"]] == ["toyota"]
    assert (first["limit"], first["offset"], first["total"]) == (2, 0, 3)
    assert second["position"] == api.position
    assert api.client.get("/v1/firms?limit=0", headers=api.reader).status_code == 422
    assert api.client.get("/v1/firms?limit=501", headers=api.reader).status_code == 422
    assert api.client.get("/v1/firms?offset=-1", headers=api.reader).status_code == 422


def test_deals_are_filtered(api: ReadApi) -> None:
    body = api.client.get("/v1/deals?sector=recycling", headers=api.reader).json()
    assert [d["deal_id"] for d in body["items"]] == [str(api.scenario.recycling)]
    body = api.client.get("/v1/deals?party=toyota&status=proposed&format=joint_venture",
                          headers=api.reader).json()
    assert [d["deal_id"] for d in body["items"]] == [str(api.scenario.battery)]
    assert api.client.get("/v1/meetings", headers=api.reader).json()["total"] == 1
    assert api.client.get("/v1/deals?status=signed", headers=api.reader).status_code == 422


def test_a_deal_and_its_events(api: ReadApi) -> None:
    deal = api.client.get(f"/v1/deals/{api.scenario.battery}", headers=api.reader)
    assert deal.status_code == 200
    assert deal.json()["position"] == api.position
    assert [p["pledge_id"] for p in deal.json()["pledges"]] == ["p1", "p2"]
    events = api.client.get(f"/v1/deals/{api.scenario.battery}/events?limit=1&offset=2",
                            headers=api.reader).json()
    assert events["total"] == 3
    assert events["items"][0]["aggregate_version"] == 3


def test_an_unknown_deal_is_a_json_404(api: ReadApi) -> None:
    deal_id = uuid4()
    for path in (f"/v1/deals/{deal_id}", f"/v1/deals/{deal_id}/events"):
        response = api.client.get(path, headers=api.reader)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        assert response.json()["error"]["field"] == "deal_id"
    assert api.client.get("/v1/deals/not-a-uuid", headers=api.reader).status_code == 422


def test_min_position_already_reached_answers_at_once(api: ReadApi) -> None:
    response = api.client.get(f"/v1/deals?min_position={api.position}", headers=api.reader)
    assert response.status_code == 200


def test_min_position_not_reached_in_time_is_a_409(api: ReadApi) -> None:
    wanted = api.position + 1
    response = api.client.get(f"/v1/pledges/by-firm?min_position={wanted}", headers=api.reader)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "not_yet_visible"
    assert (error["position"], error["min_position"]) == (api.position, wanted)
    assert api.client.get("/v1/deals?min_position=-1", headers=api.reader).status_code == 422


def test_a_read_waits_for_the_projector(api: ReadApi, tmp_path: Path) -> None:
    api.client.app.state.settings = Settings(data_dir=tmp_path, freshness_wait_seconds=5)
    queries = api.client.app.state.read_queries
    projector = ReadModelProjector(queries.engine)
    api.scenario.log.cancel(api.scenario.recycling)
    wanted = len(api.scenario.log.envelopes)

    timer = threading.Timer(0.1, projector.apply, [api.scenario.log.envelopes])
    timer.start()
    response = api.client.get(f"/v1/deals/{api.scenario.recycling}?min_position={wanted}",
                              headers=api.reader)
    timer.join()

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["position"] == wanted
