"""The embedded service over HTTP: every refusal is a precise 4xx, nothing recorded is lost,
and the read side agrees with what was written, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.demo.scenario import expected_totals, scenario
from services.embedded.app import create_embedded_app
from services.shared.api_keys import Role
from services.shared.settings import Settings

T = "2025-05-20T10:00:00+05:30"


def firm(event_id: str, code: str, country: str = "IN", kind: str = "automaker") -> dict:
    return {
        "event_id": event_id, "type": "firm_registered", "occurred_at": T,
        "payload": {"code": code, "name": code.title(), "country": country, "kind": kind},
    }


def deal(event_id: str, parties: list[str], fmt: str = "joint_venture",
         sector: str = "recycling") -> dict:
    return {
        "event_id": event_id, "type": "deal_proposed", "occurred_at": T,
        "payload": {"title": "Catalytic converter recycling", "format": fmt, "sector": sector,
                    "parties": parties},
    }


def pledge(event_id: str, deal_id: str, firm_code: str, low: str, high: str,
           currency: str = "USD", **extra: Any) -> dict:
    return {
        "event_id": event_id, "type": "pledge_made", "occurred_at": T, **extra,
        "payload": {"deal_id": deal_id, "pledge_id": event_id, "firm": firm_code,
                    "amount": {"low": low, "high": high, "currency": currency}},
    }


def record_jv(registry: Registry) -> str:
    """Two firms and their joint venture, the deal most tests pledge to; returns its id."""
    for submission in (firm("f-tata", "tata-motors"),
                       firm("f-mitsui", "mitsui-co", "JP", "trading_house")):
        assert registry.post(submission).status_code == 201
    answer = registry.post(deal("d-jv", ["tata-motors", "mitsui-co"]))
    assert answer.status_code == 201, answer.text
    return str(answer.json()["aggregate_id"])


def in_thread_unless_chosen(settings: Settings) -> Settings:
    """The settings with the projection feed in a thread of the test's process, unless they
    name a worker. What the HTTP tests check is the same with either worker (writes wake the
    feed, reads wait for `min_position`); starting the feed's process costs a second or two
    of imports per app, and is tested where the process itself is the subject
    (test_event_stream's "sqlite" case, the feed wake-up tests, tests/e2e)."""
    if "projection_worker" in settings.model_fields_set:
        return settings
    return settings.model_copy(update={"projection_worker": "thread"})


class Registry:
    """A running embedded app with one key per role (feed in a thread unless the settings
    name a worker: see in_thread_unless_chosen)."""

    def __init__(self, settings: Settings, keys: dict[Role, str] | None = None) -> None:
        settings = in_thread_unless_chosen(settings)
        self.settings = settings
        self.app = create_embedded_app(settings)
        self.client = TestClient(self.app)
        self.client.__enter__()
        store = self.app.state.api_keys
        self.keys = keys or {role: store.create(f"test-{role.value}", role) for role in Role}

    def headers(self, role: Role = Role.PARTNER) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def post(self, body: Any, role: Role = Role.PARTNER, **kw: Any) -> Any:
        return self.client.post("/v1/events", json=body, headers=self.headers(role), **kw)

    def get(self, path: str, role: Role = Role.READER, **params: Any) -> Any:
        return self.client.get(path, headers=self.headers(role), params=params)

    def close(self) -> None:
        self.client.__exit__(None, None, None)

    def head(self) -> int:
        return self.app.state.recording_service.store.head_position()


class EmbeddedAppContract:
    """A running embedded app per test, on the backend whose `settings` a subclass gives."""

    @pytest.fixture
    def settings(self) -> Settings:
        raise NotImplementedError

    @pytest.fixture
    def registry(self, settings: Settings) -> Iterator[Registry]:
        registry = Registry(settings)
        yield registry
        registry.close()


class HttpContract(EmbeddedAppContract):
    """Assertions shared by both backends."""

    @pytest.fixture
    def jv(self, registry: Registry) -> str:
        for body in (firm("f-tata", "tata-motors"), firm("f-mitsui", "mitsui-co", "JP",
                                                          "trading_house")):
            assert registry.post(body).status_code == 201
        response = registry.post(deal("d-jv", ["tata-motors", "mitsui-co"]))
        assert response.status_code == 201, response.text
        return str(response.json()["aggregate_id"])

    def test_receipt_names_event_aggregate_version_and_position(self, registry: Registry,
                                                                 jv: str) -> None:
        response = registry.post(pledge("p-1", jv, "mitsui-co", "10000000", "40000000"))
        assert response.status_code == 201
        receipt = response.json()
        assert receipt["aggregate_id"] == jv
        assert receipt["aggregate_version"] == 2
        assert receipt["position"] == registry.head()  # the event is the write's last entry
        assert receipt["recorded_by"].startswith("test-partner")
        assert receipt["replayed"] is False

    def test_retry_with_same_body_returns_original_receipt(self, registry: Registry,
                                                           jv: str) -> None:
        body = pledge("p-1", jv, "mitsui-co", "10000000", "40000000")
        first = registry.post(body).json()
        head = registry.head()
        again = registry.post(body)
        assert again.status_code == 201
        assert again.headers["Idempotent-Replayed"] == "true"
        assert {**again.json(), "replayed": False} == first
        assert registry.head() == head

    def test_reused_event_id_with_other_body_is_409(self, registry: Registry, jv: str) -> None:
        registry.post(pledge("p-1", jv, "mitsui-co", "10000000", "40000000"))
        head = registry.head()
        response = registry.post(pledge("p-1", jv, "mitsui-co", "10000000", "50000000"))
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "event_id_reused"
        assert response.json()["error"]["field"] == "event_id"
        assert registry.head() == head

    def test_stale_expected_version_is_409(self, registry: Registry, jv: str) -> None:
        assert registry.post(pledge("p-1", jv, "mitsui-co", "1", "2", expected_version=1)) \
            .status_code == 201
        response = registry.post(pledge("p-2", jv, "mitsui-co", "1", "2", expected_version=1))
        assert response.status_code == 409
        error = response.json()["error"]
        assert (error["code"], error["expected_version"], error["actual_version"]) == \
            ("version_conflict", 1, 2)

    def test_broken_rule_names_field_and_rule(self, registry: Registry, jv: str) -> None:
        response = registry.post(pledge("p-1", jv, "mitsui-co", "50", "10"))
        assert response.status_code == 422
        error = response.json()["error"]
        assert (error["field"], error["rule"]) == ("payload.amount.low", "low_le_high")

    def test_pledge_on_cancelled_deal_is_409(self, registry: Registry, jv: str) -> None:
        cancel = {"event_id": "c-1", "type": "deal_cancelled", "occurred_at": T,
                  "payload": {"deal_id": jv, "reason": "partners withdrew"}}
        assert registry.post(cancel).status_code == 201
        response = registry.post(pledge("p-1", jv, "mitsui-co", "1", "2"))
        assert response.status_code == 409
        assert response.json()["error"]["rule"] == "deal_not_cancelled"

    def test_unknown_deal_is_404_and_unregistered_party_422(self, registry: Registry) -> None:
        missing = pledge("p-x", "00000000-0000-0000-0000-000000000001", "tata-motors", "1", "2")
        assert registry.post(missing).status_code == 404
        response = registry.post(deal("d-x", ["nobody-inc"]))
        assert response.status_code == 422
        assert response.json()["error"]["field"] == "payload.parties[0]"

    def test_authentication_and_roles(self, registry: Registry) -> None:
        body = firm("f-1", "lohum")
        assert registry.client.post("/v1/events", json=body).status_code == 401
        bad = registry.client.post("/v1/events", json=body,
                                   headers={"Authorization": f"Bearer drk_{'n' * 43}"})
        assert bad.status_code == 401 and bad.json()["error"]["rule"] == "known_key"
        malformed = registry.client.post("/v1/events", json=body,
                                         headers={"Authorization": "Bearer drk_nope"})
        assert malformed.status_code == 401 and malformed.json()["error"]["rule"] == "key_format"
        assert registry.post(body, role=Role.READER).status_code == 403
        assert registry.client.get("/v1/pledges/by-sector").status_code == 401
        assert registry.get("/v1/pledges/by-sector", role=Role.AUDITOR).status_code == 200
        assert registry.head() == 0

    def test_recorded_principal_comes_from_the_key(self, registry: Registry, jv: str) -> None:
        body = pledge("p-1", jv, "mitsui-co", "1", "2")
        body["recorded_by"] = "someone-else"
        assert registry.post(body).status_code == 422  # unknown fields are refused
        receipt = registry.post(pledge("p-1", jv, "mitsui-co", "1", "2")).json()
        events = registry.client.get(f"/v1/deals/{jv}/events", headers=registry.headers(
            Role.AUDITOR), params={"min_position": receipt["position"]}).json()
        assert {e["recorded_by"] for e in events["items"]} == {receipt["recorded_by"]}

    def test_malformed_and_oversized_bodies(self, registry: Registry) -> None:
        headers = {**registry.headers(), "content-type": "application/json"}
        cases = [
            b"{not json", b"[]", b"null", b'{"type": "no_such_event"}',
            json.dumps({**firm("f", "ab"), "occurred_at": "2025-01-01T00:00:00"}).encode(),
        ]
        for raw in cases:
            response = registry.client.post("/v1/events", content=raw, headers=headers)
            assert response.status_code == 422, raw
            assert response.json()["error"]["message"]
        huge = json.dumps({**firm("f", "abc"), "pad": "x" * (5 * 1024 * 1024)}).encode()
        response = registry.client.post("/v1/events", content=huge, headers=headers)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        assert registry.head() == 0

    def test_random_garbage_never_produces_5xx(self, registry: Registry, jv: str) -> None:
        rng = random.Random(7)
        valid = pledge("p-r", jv, "mitsui-co", "1", "2")
        values: list[Any] = [None, -1, 0, "", "x" * 300, [], {}, "NaN", "1e999", 1.5, True,
                             "2025-13-45", "00000000-0000-0000-0000-000000000000"]
        head = registry.head()
        for _ in range(150):
            body = json.loads(json.dumps(valid))
            target = body
            path = rng.choice([["type"], ["event_id"], ["occurred_at"], ["expected_version"],
                               ["payload", "amount", "low"], ["payload", "amount", "currency"],
                               ["payload", "deal_id"], ["payload", "firm"], ["payload"]])
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = rng.choice(values)
            response = registry.post(body)
            assert response.status_code < 500, (body, response.text)
            if response.status_code >= 400:
                assert "error" in response.json()
        assert registry.head() - head <= 2 * 150

    def test_demo_scenario_totals_match_the_article(self, registry: Registry) -> None:
        position = 0
        for body in scenario():
            response = registry.post(body)
            assert response.status_code == 201, response.text
            position = response.json()["position"]
        expected = expected_totals()
        by_sector = registry.get("/v1/pledges/by-sector", min_position=position).json()
        assert by_sector["position"] >= position
        got = {item["sector"]: (Decimal(item["usd"]["low"]), Decimal(item["usd"]["high"]))
               for item in by_sector["items"]}
        want = {sector: (t["low"], t["high"]) for sector, t in expected["by_sector"].items()
                if t["pledges"]}
        assert got == want
        assert sum(low for low, _ in got.values()) == Decimal(100_000_000)
        assert sum(high for _, high in got.values()) == Decimal(400_000_000)

    def test_totals_survive_a_restart(self, registry: Registry, settings: Settings) -> None:
        for body in scenario():
            last = registry.post(body).json()["position"]
        before = registry.get("/v1/pledges/by-firm", min_position=last).json()
        registry.close()
        again = Registry(settings, registry.keys)
        try:
            after = again.get("/v1/pledges/by-firm", min_position=last).json()
            assert after["items"] == before["items"]
            assert again.post(scenario()[0]).json()["replayed"] is True
        finally:
            again.close()

    def test_batch_answers_each_item_on_its_own(self, registry: Registry) -> None:
        bodies = [firm("b-1", "lohum"), firm("b-2", "attero"), {"type": "nonsense"},
                  deal("b-3", ["lohum", "attero"]), deal("b-4", ["lohum", "ghost-co"]),
                  firm("b-5", "lohum")]
        response = registry.client.post("/v1/events/batch", json=bodies,
                                        headers=registry.headers())
        assert response.status_code == 200, response.text
        answer = response.json()
        assert [item["status"] for item in answer["items"]] == [201, 201, 422, 201, 422, 409]
        assert (answer["recorded"], answer["failed"]) == (3, 3)
        assert answer["items"][4]["error"]["field"] == "payload.parties[1]"
        assert answer["items"][5]["error"]["code"] == "already_exists"
        again = registry.client.post("/v1/events/batch", json=bodies[:2],
                                     headers=registry.headers()).json()
        assert [item["receipt"]["replayed"] for item in again["items"]] == [True, True]
        assert again["recorded"] == 0

    def test_batch_accepts_ndjson_and_refuses_bad_envelopes(self, registry: Registry) -> None:
        ndjson = "\n".join(json.dumps(b) for b in (firm("n-1", "tata-motors"),
                                                   firm("n-2", "maruti-suzuki")))
        headers = {**registry.headers(), "content-type": "application/x-ndjson"}
        response = registry.client.post("/v1/events/batch", content=ndjson, headers=headers)
        assert response.status_code == 200 and response.json()["recorded"] == 2
        head = registry.head()
        for raw, content_type in ((b"[]", "application/json"), (b"{}", "application/json"),
                                  (b"{bad", "application/json"),
                                  (b'{"a": 1}\nnot json', "application/x-ndjson"),
                                  (json.dumps([firm("x", "abc")] * 1001).encode(),
                                   "application/json")):
            response = registry.client.post("/v1/events/batch", content=raw, headers={
                **registry.headers(), "content-type": content_type})
            assert response.status_code == 422, raw[:40]
            assert response.json()["error"]["rule"]
        assert registry.client.post("/v1/events/batch", json=[firm("r", "abc")], headers=
                                    registry.headers(Role.READER)).status_code == 403
        assert registry.head() == head

    def test_health_and_docs(self, registry: Registry) -> None:
        assert registry.client.get("/healthz").json() == {"status": "ok"}
        assert registry.client.get("/readyz").status_code == 200
        spec = registry.client.get("/openapi.json").json()
        assert "/v1/events" in spec["paths"] and "/v1/pledges/by-sector" in spec["paths"]
        assert registry.client.get("/docs").status_code == 200
        assert "dealreg_http_requests" in registry.client.get("/metrics").text

    def test_appended_events_are_counted_once_each_by_type(self, registry: Registry) -> None:
        def appended() -> dict[str, float]:
            return {line.split('"')[1]: float(line.split()[-1])
                    for line in registry.client.get("/metrics").text.splitlines()
                    if line.startswith("dealreg_events_appended_total{")}

        assert registry.post(firm("count-1", "counted-one")).status_code == 201
        assert registry.post(firm("count-1", "counted-one")).status_code == 201  # a replay
        batch = registry.client.post(
            "/v1/events/batch", json=[firm("count-1", "counted-one"), firm("count-2", "two"),
                                      firm("count-3", "three")], headers=registry.headers())
        assert batch.json()["recorded"] == 2
        assert appended() == {"firm_registered": 3}


class TestHttpOnSQLite(HttpContract):
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return Settings(data_dir=tmp_path, projection_poll_seconds=0.05)


@pytest.mark.integration
class TestHttpOnPostgres(HttpContract):
    @pytest.fixture
    def settings(self, tmp_path: Path, postgres_url: str) -> Settings:
        return Settings(data_dir=tmp_path, database_url=postgres_url,
                        projection_poll_seconds=0.05)
