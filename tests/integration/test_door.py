"""The door refuses what the registry cannot keep, on SQLite and PostgreSQL alike: each refusal
is a 4xx naming field and rule, nothing is recorded, and what is accepted reads back exactly.
Keys are judged before bodies; retries are recognised by meaning, even while in flight."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.shared.api_keys import Role
from services.shared.settings import Settings
from tests.integration.test_http_api import (
    EmbeddedAppContract,
    Registry,
    deal,
    firm,
    pledge,
    record_jv,
)

JSON = {"content-type": "application/json"}


def error_of(response: Any) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    error: dict[str, Any] = response.json()["error"]
    assert error["status"] == response.status_code and error["message"]
    return error


class DoorContract(EmbeddedAppContract):
    @pytest.fixture
    def jv(self, registry: Registry) -> str:
        return record_jv(registry)

    def refused(self, registry: Registry, body: Any, field: str, rule: str,
                status: int = 422) -> None:
        head = registry.head()
        response = registry.post(body)
        error = error_of(response)
        assert (response.status_code, error["field"], error["rule"]) == (status, field, rule), \
            error
        assert registry.head() == head

    # Times

    BAD_TIMES: tuple[Any, ...] = (
        # Outside the dates taken, however the offset would move them:
        "0001-01-01T00:00:00+05:30",  # .NET's DateTime.MinValue in India
        "9999-12-31T23:59:59-23:59", "1899-12-31T23:59:59Z", "2200-01-01T00:00:00Z",
        # Not RFC 3339, or more than the registry keeps:
        1700000000, "2026-01-01", "2026-01-01T00:00:00", "2026-01-01T00:00Z",
        "2026-01-01T00:00:00.1234567Z", "2026-01-01T00:00:60Z", "2026-01-01T24:00:00Z",
        "2026-01-01T00:00:00+24:00", "2026-02-30T00:00:00Z", "2100-02-29T00:00:00Z",
        " 2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z\n", "２０２６-01-01T00:00:00Z",
    )

    def test_times_outside_the_contract_are_refused(self, registry: Registry) -> None:
        # One app for every case: the refusals are decided before the backend is touched,
        # and each case asserts that nothing was recorded.
        for occurred_at in self.BAD_TIMES:
            self.refused(registry, {**firm("f-1", "lohum"), "occurred_at": occurred_at},
                         "occurred_at", "datetime_format")

    def test_times_at_the_edges_are_kept_and_read_back(self, registry: Registry) -> None:
        for event_id, code, occurred_at in (
            ("f-min", "early-co", "1900-01-01T00:00:00+23:59"),  # 1899-12-31 in UTC
            ("f-max", "late-co", "2199-12-31T23:59:59.999999-23:59"),  # 2200 in UTC
            ("f-leap", "leap-co", "2000-02-29T12:00:00+05:30"),
        ):
            response = registry.post({**firm(event_id, code), "occurred_at": occurred_at})
            assert response.status_code == 201, response.text
        firms = registry.get("/v1/firms", min_position=response.json()["position"])
        assert firms.status_code == 200, firms.text
        assert {f["code"] for f in firms.json()["items"]} == {"early-co", "late-co", "leap-co"}

    # Text

    def test_control_characters_are_refused_in_one_line_text(self, registry: Registry) -> None:
        for name in ("Tata\x00Motors", "Tata\tMotors", "Tata\nMotors", "Tata\x7f", "Tata\x85"):
            body = firm("f-1", "tata-motors")
            body["payload"]["name"] = name
            self.refused(registry, body, "payload.name", "control_character")

    def test_nul_is_refused_in_every_text_field(self, registry: Registry, jv: str) -> None:
        proposal = deal("d-2", ["tata-motors"])
        proposal["payload"]["title"] = "Recycling\x00"
        self.refused(registry, proposal, "payload.title", "control_character")
        proposal = deal("d-3", ["tata-motors"])
        proposal["payload"]["description"] = "line one\nline two\x00"
        self.refused(registry, proposal, "payload.description", "control_character")
        cancel = {"event_id": "c-1", "type": "deal_cancelled",
                  "occurred_at": "2026-01-01T00:00:00Z",
                  "payload": {"deal_id": jv, "reason": "gone\x00"}}
        self.refused(registry, cancel, "payload.reason", "control_character")
        self.refused(registry, {**firm("f-x\x00", "lohum")}, "event_id",
                     "string_pattern_mismatch")

    def test_line_breaks_are_kept_where_a_field_allows_them(self, registry: Registry) -> None:
        for body in (firm("f-tata", "tata-motors"), firm("f-lohum", "lohum")):
            assert registry.post(body).status_code == 201
        proposal = deal("d-ml", ["tata-motors", "lohum"])
        proposal["payload"]["description"] = "Phase 1:\n\tcollection\r\nPhase 2: refining"
        response = registry.post(proposal)
        assert response.status_code == 201, response.text
        receipt = response.json()
        read = registry.get(f"/v1/deals/{receipt['aggregate_id']}",
                            min_position=receipt["position"]).json()
        assert read["description"] == proposal["payload"]["description"]

    def test_lone_surrogates_and_overlong_text_are_refused(self, registry: Registry) -> None:
        raw = json.dumps(firm("f-1", "lohum")).replace('"Lohum"', '"Lo\\ud800hum"')
        response = registry.client.post("/v1/events", content=raw,
                                        headers={**registry.headers(), **JSON})
        assert error_of(response)["field"] == "payload.name"
        body = firm("f-1", "lohum")
        body["payload"]["name"] = "x" * 201
        self.refused(registry, body, "payload.name", "string_too_long")

    # Money

    def test_amounts_are_exact_strings(self, registry: Registry, jv: str) -> None:
        response = registry.post(pledge("p-1", jv, "mitsui-co", "72500000000.987654",
                                        "72500000000.987654"))
        assert response.status_code == 201, response.text
        receipt = response.json()
        read = registry.get(f"/v1/deals/{jv}", min_position=receipt["position"]).json()
        assert read["pledges"][0]["amount"]["low"] == "72500000000.987654"

    def test_amounts_as_json_numbers_are_refused(self, registry: Registry, jv: str) -> None:
        body = pledge("p-1", jv, "mitsui-co", "1", "2")
        raw = json.dumps(body).replace('"low": "1"', '"low": 72500000000.987654')
        response = registry.client.post("/v1/events", content=raw,
                                        headers={**registry.headers(), **JSON})
        error = error_of(response)
        assert (error["field"], error["rule"]) == ("payload.amount.low", "decimal_string")
        for number in (1, True):
            self.refused(registry, pledge("p-1", jv, "mitsui-co", number, "2"),  # type: ignore[arg-type]
                         "payload.amount.low", "decimal_string")

    def test_amount_syntax_is_strict(self, registry: Registry, jv: str) -> None:
        for low in ("1_000", "١٢٣", "１２", " 1", "1 ", "+1", "-1", "1e5", "1E5", "1.1234567",
                    "0x10", "1,000", "Infinity", "NaN", "", ".5", "5.", "01",
                    "1234567890123456789"):
            self.refused(registry, pledge("p-1", jv, "mitsui-co", low, "2"),
                         "payload.amount.low", "decimal_syntax")

    def test_booleans_and_integers_are_never_each_other(self, registry: Registry,
                                                        jv: str) -> None:
        self.refused(registry, pledge("p-1", jv, "mitsui-co", "1", "2", expected_version=True),
                     "expected_version", "int_type")
        self.refused(registry, pledge("p-1", jv, "mitsui-co", "1", "2", expected_version="1"),
                     "expected_version", "int_type")
        self.refused(registry, pledge("p-1", jv, "mitsui-co", "1", "2", expected_version=2**63),
                     "expected_version", "less_than_equal")
        meeting = {"event_id": "m-1", "type": "meeting_held",
                   "occurred_at": "2026-01-01T00:00:00Z",
                   "payload": {"title": "Closed-door", "location": "New Delhi",
                               "closed_door": 1, "attendees": ["tata-motors"]}}
        self.refused(registry, meeting, "payload.closed_door", "bool_type")

    def test_closed_values_are_enums(self, registry: Registry) -> None:
        self.refused(registry, firm("f-1", "lohum", kind="Automaker"), "payload.kind", "enum")
        self.refused(registry, firm("f-1", "lohum", country="in"), "payload.country",
                     "string_pattern_mismatch")

    # Keys before bodies

    def test_keys_are_judged_before_bodies(self, registry: Registry) -> None:
        for path in ("/v1/events", "/v1/events/batch"):
            for raw, content_type in ((b"{bad", "application/json"), (b"x", "text/plain"),
                                      (b"\xff\xfe", "application/json"), (b"[" * 5000, "")):
                headers = {"content-type": content_type} if content_type else {}
                anonymous = registry.client.post(path, content=raw, headers=headers)
                assert anonymous.status_code == 401, (path, raw[:10], anonymous.text)
                reader = registry.client.post(
                    path, content=raw, headers={**headers, **registry.headers(Role.READER)})
                assert reader.status_code == 403, (path, raw[:10], reader.text)
        assert registry.head() == 0

    # Nothing a client sends produces a 5xx

    def test_malformed_requests_get_precise_4xx(self, registry: Registry) -> None:
        headers = registry.headers()
        valid = json.dumps(firm("f-1", "lohum")).encode()
        cases: list[tuple[str, bytes, dict[str, str], int, str]] = [
            ("/v1/events", valid, {"content-type": "text/plain"}, 415, "media_type"),
            ("/v1/events", valid, {}, 415, "media_type"),
            ("/v1/events", valid, {"content-type": "application/json; charset=latin-1"}, 415,
             "media_type"),
            ("/v1/events", b'{"event_id": "\xff"}', JSON, 400, "utf8"),
            ("/v1/events", b"[" * 100_000, JSON, 422, "max_depth"),
            ("/v1/events", b'{"a":' * 20 + b"1" + b"}" * 20, JSON, 422, "max_depth"),
            ("/v1/events/batch", b"[" * 100_000, JSON, 422, "max_depth"),
            ("/v1/events/batch", b"[" + b'{"a":' * 20 + b"1" + b"}" * 20 + b"]", JSON, 422,
             "max_depth"),
            ("/v1/events", b'{"event_id": "a", "event_id": "b"}', JSON, 422, "duplicate_key"),
            ("/v1/events", b'{"x": NaN}', JSON, 422, "json"),
            ("/v1/events", b'{"x": 1' + b"0" * 5000 + b"}", JSON, 422, "json"),
            ("/v1/events/batch", valid, {"content-type": "text/csv"}, 415, "media_type"),
        ]
        for path, raw, extra, status, rule in cases:
            response = registry.client.post(path, content=raw, headers={**headers, **extra})
            assert response.status_code == status, (path, raw[:30], response.text)
            assert error_of(response)["rule"] == rule, (raw[:30], response.text)
        big = registry.client.post("/v1/events", content=valid, headers={
            **headers, **JSON, "x-padding": "x" * 20_000})
        assert big.status_code == 431 and error_of(big)["code"] == "headers_too_large"
        assert registry.head() == 0

    # Idempotency by meaning

    def test_a_retry_is_recognised_by_meaning(self, registry: Registry, jv: str) -> None:
        body = pledge("p-1", jv, "mitsui-co", "10000000", "40000000")
        body["occurred_at"] = "2025-05-20T10:00:00+05:30"
        first = registry.post(body)
        assert first.status_code == 201
        same = pledge("p-1", jv, "mitsui-co", "10000000.0", "40000000.000000")
        same["occurred_at"] = "2025-05-20T04:30:00.000000Z"
        again = registry.post(same)
        assert again.status_code == 201, again.text
        assert again.json()["replayed"] is True
        assert again.json()["position"] == first.json()["position"]
        other = pledge("p-1", jv, "mitsui-co", "10000000", "40000000")
        other["occurred_at"] = "2025-05-20T10:00:00+05:00"
        assert error_of(registry.post(other))["code"] == "event_id_reused"

    # Overlapping retries

    def test_concurrent_identical_requests_all_get_the_receipt(
        self, registry: Registry, jv: str
    ) -> None:
        self.assert_overlapping_retries_replay([registry.client], registry.headers(), jv)

    def test_concurrent_identical_requests_across_two_registries(
        self, registry: Registry, settings: Settings, jv: str
    ) -> None:
        if settings.database_url is None:
            pytest.skip("two registries share an event store on PostgreSQL")
        second = Registry(settings, registry.keys)
        try:
            self.assert_overlapping_retries_replay([registry.client, second.client],
                                                   registry.headers(), jv)
        finally:
            second.close()

    @staticmethod
    def assert_overlapping_retries_replay(clients: list[TestClient], headers: dict[str, str],
                                          jv: str, rounds: int = 12, senders: int = 8) -> None:
        for round_ in range(rounds):
            bodies = [
                pledge(f"race-{round_}", jv, "mitsui-co", "1", "2"),  # a pledge: a deal's rule
                firm(f"race-firm-{round_}", f"race-co-{round_}"),  # a creation: a new firm
            ]
            for body in bodies:
                start = threading.Barrier(senders)

                def send(index: int, body: dict[str, Any] = body,
                         start: threading.Barrier = start) -> Any:
                    start.wait()
                    return clients[index % len(clients)].post("/v1/events", json=body,
                                                              headers=headers)

                with ThreadPoolExecutor(senders) as pool:
                    answers = list(pool.map(send, range(senders)))
                assert [a.status_code for a in answers] == [201] * senders, \
                    [a.text for a in answers if a.status_code != 201]
                receipts = [a.json() for a in answers]
                assert sum(not r["replayed"] for r in receipts) == 1
                assert len({(r["aggregate_id"], r["position"]) for r in receipts}) == 1


class TestDoorOnSQLite(DoorContract):
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return Settings(data_dir=tmp_path, projection_poll_seconds=0.05, projection_worker="thread")


@pytest.mark.integration
class TestDoorOnPostgres(DoorContract):
    @pytest.fixture
    def settings(self, tmp_path: Path, postgres_url: str) -> Settings:
        return Settings(data_dir=tmp_path, database_url=postgres_url,
                        projection_poll_seconds=0.05, projection_worker="thread")
