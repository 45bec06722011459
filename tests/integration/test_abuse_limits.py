"""Abuse limits of every service's HTTP side, over the write service and the embedded app on
SQLite: failed authentications throttled per address without lookups, malformed keys refused
unread, header limits, security headers, /metrics and /docs exposure, and refusals logged as
JSON lines and counted."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.registry.service import create_registry_app
from services.shared.api_keys import Role
from services.shared.auth_throttle import FailedAuthThrottle
from services.shared.http_basics import MAX_AUTHORIZATION_BYTES, MAX_HEADER_COUNT
from services.shared.log_setup import JsonLines
from services.shared.settings import Settings
from tests.integration.test_http_api import Registry, firm

UNKNOWN = "drk_" + "u" * 43  # well formed, so only a lookup can tell it is unknown


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class WriteService:
    """The write service on SQLite, one key per role, its key store's lookups counted and its
    throttle on a clock the test moves."""

    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.app: FastAPI = create_registry_app(Settings(data_dir=tmp_path, **settings))
        store = self.app.state.api_keys
        self.keys = {role: store.create(f"test-{role.value}", role) for role in Role}
        self.lookups: list[str] = []
        resolve: Callable[[str], Any] = store.resolve

        def counted_resolve(key: str) -> Any:
            self.lookups.append(key)
            return resolve(key)

        store.resolve = counted_resolve
        self.clock = Clock()
        self.app.state.auth_throttle = FailedAuthThrottle(20, 1000, clock=self.clock)
        self.client = self.client_from("10.0.0.1")

    def client_from(self, address: str) -> TestClient:
        return TestClient(self.app, client=(address, 50000))

    def bearer(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def post(self, body: Any, key: str, client: TestClient | None = None) -> Any:
        return (client or self.client).post("/v1/events", json=body, headers=self.bearer(key))


@pytest.fixture
def service(tmp_path: Path) -> Iterator[WriteService]:
    running = WriteService(tmp_path)
    with running.client:
        yield running


def test_a_burst_of_bad_keys_is_throttled_without_lookups(service: WriteService) -> None:
    body = firm("f-1", "lohum")
    for _ in range(20):
        answer = service.post(body, UNKNOWN)
        assert (answer.status_code, answer.json()["error"]["rule"]) == (401, "known_key")
    assert len(service.lookups) == 20

    for key in (UNKNOWN, service.keys[Role.PARTNER]):  # any key, even a good one
        throttled = service.post(body, key)
        assert throttled.status_code == 429, throttled.text
        error = throttled.json()["error"]
        assert (error["field"], error["rule"]) == ("Authorization", "throttled")
        assert throttled.headers["Retry-After"] == "3"  # 20 a minute: one try every 3 s
    assert len(service.lookups) == 20, "a throttled address costs no lookup"

    elsewhere = service.client_from("10.0.0.2")
    assert service.post(body, service.keys[Role.PARTNER], elsewhere).status_code == 201

    service.clock.now += 3  # one try is back, and spent on a bad key
    assert service.post(body, UNKNOWN).status_code == 401
    assert service.post(body, service.keys[Role.PARTNER]).status_code == 429
    service.clock.now += 60  # the window has passed
    assert service.post(firm("f-2", "attero"), service.keys[Role.PARTNER]).status_code == 201


def test_malformed_keys_are_refused_without_a_lookup(service: WriteService) -> None:
    for key in ("drk_nope", "drk_" + "a" * 42, "drk_" + "a" * 44, "xyz_" + "a" * 43,
                "drk_" + "a" * 42 + "!", "drk_" + "é" * 43):
        answer = service.client.get("/v1/audit/verify", headers={
            "Authorization": f"Bearer {key}".encode()})  # type: ignore[dict-item]
        assert (answer.status_code, answer.json()["error"]["rule"]) == (401, "key_format"), key
    assert service.lookups == []


def test_header_count_size_and_authorization_length_are_431(service: WriteService) -> None:
    many = {f"x-h{i}": "1" for i in range(MAX_HEADER_COUNT + 1)}
    answer = service.client.get("/healthz", headers=many)
    assert answer.status_code == 431
    assert (answer.json()["error"]["field"], answer.json()["error"]["rule"]) == \
        ("headers", "max_count")
    long_key = "Bearer " + "k" * MAX_AUTHORIZATION_BYTES
    answer = service.client.get("/v1/audit/verify", headers={"Authorization": long_key})
    assert answer.status_code == 431
    assert (answer.json()["error"]["field"], answer.json()["error"]["rule"]) == \
        ("Authorization", "max_bytes")
    assert service.lookups == []
    assert service.client.get("/healthz", headers=dict(list(many.items())[:50])) \
        .status_code == 200


def assert_secured(answer: Any, cached: bool = False) -> None:
    assert answer.headers["x-content-type-options"] == "nosniff", answer.url
    assert answer.headers["referrer-policy"] == "no-referrer", answer.url
    assert "server" not in answer.headers, answer.url
    if not cached:
        assert "no-store" in answer.headers["cache-control"], answer.url


def test_every_api_answer_carries_the_security_headers(service: WriteService) -> None:
    partner = service.bearer(service.keys[Role.PARTNER])
    assert_secured(service.client.post("/v1/events", json=firm("f-1", "lohum"), headers=partner))
    assert_secured(service.client.post("/v1/events", json={"type": "?"}, headers=partner))
    assert_secured(service.client.get("/v1/audit/verify"))
    assert_secured(service.client.get("/no/such/path"))
    assert_secured(service.client.get("/healthz"))
    assert_secured(service.client.get("/metrics"))


def test_pages_keep_their_own_headers_and_get_the_security_headers(tmp_path: Path) -> None:
    registry = Registry(Settings(data_dir=tmp_path, projection_worker="thread"))
    try:
        sign_in = registry.client.get("/sign-in")
        assert_secured(sign_in)
        assert "frame-ancestors 'none'" in sign_in.headers["content-security-policy"]
        stylesheet = registry.client.get("/static/pages/site.css")
        assert stylesheet.status_code == 200
        assert_secured(stylesheet, cached=True)
        assert "cache-control" not in stylesheet.headers, "static files may be cached"
    finally:
        registry.close()


def test_metrics_behind_a_key_or_off_and_docs_off(tmp_path: Path) -> None:
    keyed = WriteService(tmp_path / "keyed", metrics="key", docs="off")
    with keyed.client:
        assert keyed.client.get("/metrics").status_code == 401
        reader = keyed.bearer(keyed.keys[Role.READER])
        assert keyed.client.get("/metrics", headers=reader).status_code == 403
        for role in (Role.AUDITOR, Role.ADMIN):
            scraped = keyed.client.get("/metrics", headers=keyed.bearer(keyed.keys[role]))
            assert "dealreg_http_requests_total" in scraped.text
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert keyed.client.get(path).status_code == 404, path
        assert keyed.client.get("/healthz").status_code == 200
        assert keyed.client.get("/readyz").status_code == 200
    off = WriteService(tmp_path / "off", metrics="off")
    with off.client:
        assert off.client.get("/metrics").status_code == 404
        assert off.client.get("/docs").status_code == 200


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The refusal log's records as the JSON lines the services write."""
    formatter = JsonLines()
    return [json.loads(formatter.format(record)) for record in caplog.records
            if record.name == "dealreg.refusals"]


def test_refused_writes_and_authentications_are_logged_and_counted(
        service: WriteService, caplog: pytest.LogCaptureFixture) -> None:
    partner = service.bearer(service.keys[Role.PARTNER])
    pledge_without_amount = {"event_id": "p-1", "type": "pledge_made",
                             "occurred_at": "2025-05-20T10:00:00Z", "payload": {}}
    with caplog.at_level(logging.INFO, logger="dealreg.refusals"):
        assert service.client.post("/v1/events", json=pledge_without_amount,
                                   headers=partner).status_code == 422
        batch = service.client.post("/v1/events/batch", headers=partner,
                                    json=[firm("f-1", "lohum"), {"type": "deal_proposed"}])
        assert batch.json()["failed"] == 1
        assert service.post(firm("f-2", "attero"), UNKNOWN).status_code == 401
        assert service.post(firm("f-2", "attero"), service.keys[Role.READER]).status_code \
            == 403
        assert service.client.post("/v1/events", content=b"{}" * 3_000_000, headers={
            **partner, "content-type": "application/json"}).status_code == 413
        assert service.client.get("/healthz").status_code == 200  # not a refusal
    one, item, unknown, role, too_large = refusal_lines(caplog)

    assert one["who"] == {"principal": "test-partner", "role": "partner", "client": "10.0.0.1"}
    assert one["what"] == {"method": "POST", "path": "/v1/events", "event_type": "pledge_made"}
    assert one["why"]["status"] == 422 and one["why"]["field"].startswith("payload")
    assert item["what"] == {"method": "POST", "path": "/v1/events/batch", "index": 1,
                            "event_type": "deal_proposed"}
    assert item["why"]["code"] == "invalid_request"
    assert unknown["who"] == {"principal": None, "role": None, "client": "10.0.0.1"}
    assert unknown["why"] == {"status": 401, "code": "unauthenticated",
                              "field": "Authorization", "rule": "known_key"}
    assert unknown["level"] == "warning"
    assert (role["who"]["principal"], role["why"]["rule"]) == ("test-reader", "role")
    assert (too_large["why"]["status"], too_large["why"]["field"]) == (413, "body")

    metrics = service.client.get("/metrics").text
    assert 'dealreg_refusals_total{code="unauthenticated",rule="known_key"} 1.0' in metrics
    assert 'dealreg_refusals_total{code="forbidden",rule="role"} 1.0' in metrics
    assert 'dealreg_refusals_total{code="payload_too_large",rule="max_bytes"} 1.0' in metrics


def test_every_operation_that_checks_a_key_documents_its_429(service: WriteService) -> None:
    paths = service.client.get("/openapi.json").json()["paths"]
    keyed = [(method, path, operation) for path, methods in paths.items()
             for method, operation in methods.items() if "401" in operation["responses"]]
    assert keyed
    for method, path, operation in keyed:
        throttled = operation["responses"].get("429")
        assert throttled is not None and "Retry-After" in throttled["headers"], (method, path)
