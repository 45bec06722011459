"""Embedded mode over a log that holds poison, as an older version could have written it: the
app starts, parks what it cannot apply or translate, keeps every other deal fresh, and says
so in /readyz, /metrics, the admin endpoint and `dealreg projections parked`; a retry after
a fix applies the parked events in order. On SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient

from services import cli
from services.embedded.app import create_embedded_app
from services.embedded.projection_feed import EmbeddedProjectionFeed
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.tables import create_read_schema
from services.registry.adapters.event_store import open_event_store
from services.registry.domain.deal import Deal
from services.registry.relay import contract_events
from services.shared.api_keys import Role
from services.shared.database import create_sql_engine
from services.shared.settings import Settings
from tests.integration.poisoned_log import (
    YEAR_ONE_IN_INDIA,
    propose_deal_with_pledge,
    register_firm,
    store_untranslatable_deal,
)


class PoisonedRegistry:
    """A log with a deal whose proposal overflows, a deal whose proposal cannot be
    translated (each followed by an event that must wait), and a healthy deal."""

    def __init__(self, settings: Settings) -> None:
        self.overflowing, self.untranslatable, self.healthy = uuid4(), uuid4(), uuid4()
        store = open_event_store(settings)
        try:
            register_firm(store, "tata")
            propose_deal_with_pledge(store, self.overflowing, "tata", YEAR_ONE_IN_INDIA)
            store_untranslatable_deal(store, self.untranslatable, "tata")
            self.last = propose_deal_with_pledge(store, self.healthy, "tata")
        finally:
            store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        return Settings(data_dir=tmp_path, projection_worker="thread",
                        projection_poll_seconds=0.05)
    url = request.getfixturevalue("postgres_url")
    return Settings(data_dir=tmp_path, database_url=url, projection_worker="thread",
                    projection_poll_seconds=0.05)


@pytest.fixture
def registry(settings: Settings) -> PoisonedRegistry:
    return PoisonedRegistry(settings)


def fixed_translation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fix an operator would deploy: proposals stored without a title get one."""
    translate = contract_events.to_envelope

    def tolerant(event: Any, position: int, chained_hash: str | None = None) -> Any:
        if isinstance(event, Deal.Proposed) and "title" not in vars(event):
            object.__setattr__(event, "title", "(untitled)")
        return translate(event, position, chained_hash)

    monkeypatch.setattr(contract_events, "to_envelope", tolerant)


class App:
    def __init__(self, settings: Settings) -> None:
        self.app = create_embedded_app(settings)
        self.client = TestClient(self.app)
        self.client.__enter__()
        keys = self.app.state.api_keys
        self.keys = {role: keys.create(f"test-{role.value}", role) for role in Role}

    def get(self, path: str, role: Role | None = Role.READER, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        return self.client.get(path, headers=headers, params=params)

    def post(self, path: str, body: Any, role: Role) -> Any:
        return self.client.post(path, json=body,
                                headers={"Authorization": f"Bearer {self.keys[role]}"})


@pytest.fixture
def app(settings: Settings, registry: PoisonedRegistry) -> Iterator[App]:
    running = App(settings)
    yield running
    running.client.__exit__(None, None, None)


def states(items: list[dict[str, Any]]) -> list[tuple[UUID, int, str]]:
    return [(UUID(i["aggregate_id"]), i["aggregate_version"], i["state"]) for i in items]


def test_the_app_starts_parks_the_poison_and_serves_every_other_deal(
    app: App, registry: PoisonedRegistry
) -> None:
    deal = app.get(f"/v1/deals/{registry.healthy}", min_position=registry.last)
    assert deal.status_code == 200, deal.text
    assert [p["pledge_id"] for p in deal.json()["pledges"]] == ["p1"]
    assert app.get(f"/v1/deals/{registry.overflowing}").status_code == 404

    ready = app.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["parked_events"] == 4
    assert "dealreg_events_parked 4.0" in app.client.get("/metrics").text

    listed = app.get("/v1/admin/parked", role=Role.ADMIN)
    assert listed.status_code == 200, listed.text
    assert listed.json()["total"] == 4
    assert states(listed.json()["items"]) == [
        (registry.overflowing, 1, "failed"), (registry.overflowing, 2, "waiting"),
        (registry.untranslatable, 1, "failed"), (registry.untranslatable, 2, "waiting"),
    ]
    reasons = [i["reason"] for i in listed.json()["items"]]
    assert "OverflowError: date value out of range" in reasons[0]
    assert "no attribute 'title'" in reasons[2]
    page = app.get("/v1/admin/parked", role=Role.ADMIN, limit=1, offset=3).json()
    assert (page["total"], len(page["items"])) == (4, 1)
    assert page["items"][0]["aggregate_version"] == 2
    assert app.get("/v1/admin/parked", role=Role.READER).status_code == 403
    assert app.get("/v1/admin/parked", role=None).status_code == 401

    # Writes after the poison become visible as usual.
    recorded = app.post("/v1/events", {
        "event_id": "firm-lohum", "type": "firm_registered",
        "occurred_at": "2025-08-29T10:30:00+05:30",
        "payload": {"code": "lohum", "name": "Lohum", "country": "IN", "kind": "recycler"},
    }, Role.PARTNER)
    assert recorded.status_code == 201, recorded.text
    firms = app.get("/v1/firms", min_position=recorded.json()["position"])
    assert firms.status_code == 200
    assert "lohum" in [f["code"] for f in firms.json()["items"]]


def test_the_admin_retry_applies_an_aggregate_once_fixed(
    app: App, registry: PoisonedRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    unfixed = app.post("/v1/admin/parked/retry", {"all": True}, Role.ADMIN)
    assert unfixed.status_code == 200, unfixed.text
    assert (unfixed.json()["applied"], unfixed.json()["still_parked"]) == (0, 4)
    assert app.post("/v1/admin/parked/retry", {"all": True}, Role.READER).status_code == 403
    assert app.post("/v1/admin/parked/retry", {"id": 999}, Role.ADMIN).status_code == 404
    assert app.post("/v1/admin/parked/retry", {}, Role.ADMIN).status_code == 422

    fixed_translation(monkeypatch)
    items = app.get("/v1/admin/parked", role=Role.ADMIN).json()["items"]
    lost = next(i["id"] for i in items if i["aggregate_id"] == str(registry.untranslatable))
    retried = app.post("/v1/admin/parked/retry", {"id": lost}, Role.ADMIN).json()
    assert [(e["aggregate_version"], e["applied"]) for e in retried["events"]] == [
        (1, True), (2, True)]
    deal = app.get(f"/v1/deals/{registry.untranslatable}").json()
    assert (deal["title"], deal["status"], deal["version"]) == ("(untitled)", "cancelled", 2)
    assert app.client.get("/readyz").json()["parked_events"] == 2


def fed_read_model(settings: Settings) -> None:
    """What the feed of a running service would have done: parked the poison."""
    store = open_event_store(settings)
    engine = create_sql_engine(settings.read_model_url())
    create_read_schema(engine)
    try:
        EmbeddedProjectionFeed(store, ReadModelProjector(engine)).catch_up()
    finally:
        store.close()
        engine.dispose()


def run_cli(monkeypatch: pytest.MonkeyPatch, settings: Settings, *args: str) -> int:
    """`dealreg projections parked ...` as an operator runs it: embedded mode by its data
    folder, distributed mode by the DEALREG_* variables."""
    if settings.database_url is not None:
        monkeypatch.setenv("DEALREG_DATABASE_URL", settings.database_url)
    return cli.main(["projections", "parked", *args, "--data-dir", str(settings.data_dir)])


def test_the_cli_lists_and_retries_with_documented_exit_codes(
    settings: Settings, registry: PoisonedRegistry, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fed_read_model(settings)
    assert run_cli(monkeypatch, settings, "list") == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[-1] == "4 parked events (2 failed, 2 waiting behind them)"
    assert "OverflowError" in listed[0] and str(registry.overflowing) in listed[0]

    assert run_cli(monkeypatch, settings, "retry", "--all") == 1  # nothing fixed yet
    assert capsys.readouterr().out.splitlines()[-1] == (
        "retried 4 parked events: 0 applied, 4 still parked")
    assert run_cli(monkeypatch, settings, "retry", "12345") == 2
    assert "no parked event 12345" in capsys.readouterr().err

    fixed_translation(monkeypatch)  # re-read from the log: the stored event translates now
    assert run_cli(monkeypatch, settings, "retry", "--all") == 1  # the overflow stays
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "retried 4 parked events: 2 applied, 2 still parked"
    assert run_cli(monkeypatch, settings, "list", "--json") == 0
    assert '"aggregate_id": "' + str(registry.overflowing) in capsys.readouterr().out
