"""Pledge instruments and tranches (event schema v2) over HTTP, on SQLite and PostgreSQL: v1
and v2 submissions side by side, every rule refused naming its field and rule, the
deprecation of v1 pledge submissions, the read answers, past states and pages of both, and
`audit verify` clean over a log that mixes pledge events stored at v1 with v2 ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from contracts.submissions_v2 import V1_PLEDGES_DEPRECATED_AT
from services.registry.adapters.event_store import open_event_store
from services.registry.application.handlers import RecordingService
from services.registry.domain.deal import Deal
from services.registry.domain.recorded import Provenance
from services.registry.domain.values import AmountRange, UsdConversion
from services.shared.api_keys import Role
from services.shared.settings import Settings
from tests.integration.test_http_api import Registry, T, deal, firm, pledge, record_jv
from tests.integration.test_pages import sign_in
from tests.unit.registry.support import record

pytestmark = pytest.mark.integration

DEPRECATION = f"@{int(V1_PLEDGES_DEPRECATED_AT.timestamp())}"
SCHEDULE = [{"due_date": "2026-03-31", "amount": "10000000"},
            {"due_date": "2027-03-31", "amount": "30000000"}]


def pledge_v2(event_id: str, deal_id: str, firm_code: str, low: str, high: str,
              instrument: Any = "equity", tranches: Any = None, **extra: Any) -> dict:
    submission = pledge(event_id, deal_id, firm_code, low, high, schema_version=2, **extra)
    submission["payload"]["instrument"] = instrument
    if tranches is not None:
        submission["payload"]["tranches"] = tranches
    return submission


def revision(event_id: str, deal_id: str, pledge_id: str, low: str, high: str,
             version: int | None = None, occurred_at: str = T, **terms: Any) -> dict:
    submission: dict[str, Any] = {
        "event_id": event_id, "type": "pledge_revised", "occurred_at": occurred_at,
        "payload": {"deal_id": deal_id, "pledge_id": pledge_id, "reason": "re-estimate",
                    "amount": {"low": low, "high": high, "currency": "USD"}, **terms}}
    if version is not None:
        submission["schema_version"] = version
    return submission


def pledges_of(registry: Registry, deal_id: str, **params: Any) -> dict[str, dict[str, Any]]:
    answer = registry.get(f"/v1/deals/{deal_id}", min_position=registry.head(), **params)
    assert answer.status_code == 200, answer.text
    return {p["pledge_id"]: p for p in answer.json()["pledges"]}


class PledgeTermsContract:
    @pytest.fixture
    def settings(self) -> Settings:
        raise NotImplementedError

    @pytest.fixture
    def registry(self, settings: Settings) -> Iterator[Registry]:
        running = Registry(settings)
        yield running
        running.close()

    @pytest.fixture
    def jv(self, registry: Registry) -> str:
        return record_jv(registry)

    # The refusals share one registry per backend: each checks that its refusal recorded
    # nothing (the head stays), so each finds the registry as `jv` left it.
    @pytest.fixture(scope="class")
    def shared_settings(self) -> Settings:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    def refusing(self, shared_settings: Settings) -> Iterator[tuple[Registry, str]]:
        running = Registry(shared_settings)
        yield running, record_jv(running)
        running.close()

    def test_v1_and_v2_pledges_side_by_side(self, registry: Registry, jv: str) -> None:
        v1 = registry.post(pledge("p-1", jv, "mitsui-co", "10000000", "40000000"))
        assert v1.status_code == 201, v1.text
        assert v1.headers["Deprecation"] == DEPRECATION
        v2 = registry.post(pledge_v2("p-2", jv, "tata-motors", "20000000", "50000000",
                                     tranches=SCHEDULE))
        assert v2.status_code == 201, v2.text
        assert "Deprecation" not in v2.headers
        unversioned_firm = registry.post(firm("f-3", "attero"))
        assert "Deprecation" not in unversioned_firm.headers
        v2_firm = registry.post({**firm("f-4", "lohum"), "schema_version": 2})
        assert v2_firm.status_code == 201 and "Deprecation" not in v2_firm.headers
        shown = pledges_of(registry, jv)
        assert (shown["p-1"]["instrument"], shown["p-1"]["tranches"]) == (None, [])
        assert shown["p-2"]["instrument"] == "equity"
        assert shown["p-2"]["tranches"] == [{"due_date": "2026-03-31", "amount": "10000000"},
                                            {"due_date": "2027-03-31", "amount": "30000000"}]
        events = registry.get(f"/v1/deals/{jv}/events").json()["items"]
        assert [(e["payload"].get("instrument"), len(e["payload"].get("tranches", [])))
                for e in events[1:]] == [(None, 0), ("equity", 2)]
        # A retry of each answers its receipt; the v1 one still says it is deprecated.
        again = registry.post(pledge("p-1", jv, "mitsui-co", "10000000", "40000000"))
        assert again.json()["replayed"] is True and again.headers["Deprecation"] == DEPRECATION
        assert registry.post(pledge_v2("p-2", jv, "tata-motors", "20000000", "50000000",
                                       tranches=SCHEDULE)).json()["replayed"] is True
        # The same event id with other terms is another event.
        changed = registry.post(pledge_v2("p-2", jv, "tata-motors", "20000000", "50000000",
                                          instrument="debt", tranches=SCHEDULE))
        assert changed.status_code == 409
        assert changed.json()["error"]["code"] == "event_id_reused"

    @pytest.mark.parametrize(("submission", "status", "field", "rule"), [
        (lambda jv: pledge_v2("x", jv, "tata-motors", "1", "100", instrument=None), 422,
         "payload.instrument", "enum"),
        (lambda jv: {**pledge_v2("x", jv, "tata-motors", "1", "100"),
                     "payload": {k: v for k, v in pledge_v2(
                         "x", jv, "tata-motors", "1", "100")["payload"].items()
                         if k != "instrument"}}, 422, "payload.instrument", "missing"),
        (lambda jv: pledge_v2("x", jv, "tata-motors", "1", "100", instrument="loan"), 422,
         "payload.instrument", "enum"),
        (lambda jv: pledge_v2("x", jv, "tata-motors", "1", "100",
                              tranches=[{"due_date": "2026-01-01", "amount": "0"}]), 422,
         "payload.tranches[0].amount", "positive"),
        (lambda jv: pledge_v2("x", jv, "tata-motors", "1", "100",
                              tranches=[{"due_date": "2026-01-01", "amount": "1"},
                                        {"due_date": "2026-01-01", "amount": "1"}]), 422,
         "payload.tranches[1].due_date", "ascending"),
        (lambda jv: pledge_v2("x", jv, "tata-motors", "1", "100",
                              tranches=[{"due_date": "2026-01-01", "amount": "60"},
                                        {"due_date": "2026-01-02", "amount": "40.000001"}]),
         422, "payload.tranches", "sum_le_high"),
        (lambda jv: pledge_v2("x", jv, "tata-motors", "1", "100", tranches=[
            {"due_date": date.fromordinal(738000 + n).isoformat(), "amount": "0.1"}
            for n in range(121)]), 422, "payload.tranches", "too_long"),
        (lambda jv: pledge_v2("x", jv, "tata-motors", "1", "100",
                              tranches=[{"due_date": "2200-01-01", "amount": "1"}]), 422,
         "payload.tranches.0.due_date", "date_format"),
        (lambda jv: pledge_v2("x", jv, "tata-motors", "1", "100",
                              tranches=[{"due_date": "1899-12-31", "amount": "1"}]), 422,
         "payload.tranches.0.due_date", "date_format"),
        (lambda jv: pledge_v2("x", jv, "tata-motors", "1", "100",
                              tranches=[{"due_date": "2100-02-29", "amount": "1"}]), 422,
         "payload.tranches.0.due_date", "date_format"),
        (lambda jv: {**pledge("x", jv, "tata-motors", "1", "100"),
                     "payload": {**pledge("x", jv, "tata-motors", "1", "100")["payload"],
                                 "instrument": "debt"}}, 422, "payload.instrument",
         "extra_forbidden"),
        (lambda jv: {**pledge_v2("x", jv, "tata-motors", "1", "100"), "schema_version": 3},
         422, "schema_version", "literal_error"),
    ], ids=["null-instrument", "no-instrument", "unknown-instrument", "zero-tranche",
            "same-day", "above-high", "too-many", "after-2199", "before-1900", "not-leap",
            "v1-with-instrument", "version-3"])
    def test_each_rule_is_refused_naming_field_and_rule(
            self, refusing: tuple[Registry, str], submission: Any, status: int, field: str,
            rule: str) -> None:
        registry, jv = refusing
        head = registry.head()
        answer = registry.post(submission(jv))
        assert answer.status_code == status, answer.text
        error = answer.json()["error"]
        assert (error["field"], error["rule"]) == (field, rule), error
        assert error["message"]
        assert registry.head() == head

    def test_revisions_of_either_version(self, registry: Registry, jv: str) -> None:
        assert registry.post(pledge_v2("p-1", jv, "tata-motors", "20000000", "50000000",
                                       tranches=SCHEDULE)).status_code == 201
        # v1: a new amount, the instrument and schedule kept; deprecated.
        kept = registry.post(revision("r-1", jv, "p-1", "20000000", "60000000"))
        assert kept.status_code == 201, kept.text
        assert kept.headers["Deprecation"] == DEPRECATION
        shown = pledges_of(registry, jv)["p-1"]
        assert (shown["instrument"], len(shown["tranches"])) == ("equity", 2)
        assert shown["amount"]["high"] == "60000000"
        # v1 below the kept schedule: refused, naming the amount that no longer covers it.
        below = registry.post(revision("r-2", jv, "p-1", "20000000", "39999999"))
        assert below.status_code == 422 and below.headers["Deprecation"] == DEPRECATION
        assert (below.json()["error"]["field"], below.json()["error"]["rule"]) == (
            "payload.amount.high", "covers_tranches")
        # v2: the terms in full; the same amount with new terms is a revision.
        grant = registry.post(revision("r-3", jv, "p-1", "20000000", "60000000", version=2,
                                       instrument="grant"))
        assert grant.status_code == 201, grant.text
        assert "Deprecation" not in grant.headers
        shown = pledges_of(registry, jv)["p-1"]
        assert (shown["instrument"], shown["tranches"]) == ("grant", [])
        same = registry.post(revision("r-4", jv, "p-1", "20000000", "60000000", version=2,
                                      instrument="grant"))
        assert same.status_code == 409
        assert (same.json()["error"]["field"], same.json()["error"]["rule"]) == (
            "payload.amount", "changed")
        no_terms = registry.post(revision("r-5", jv, "p-1", "1", "2", version=2))
        assert no_terms.status_code == 422
        assert no_terms.json()["error"]["field"] == "payload.instrument"

    def test_a_batch_with_a_v1_pledge_is_answered_as_deprecated(
            self, registry: Registry, jv: str) -> None:
        headers = registry.headers()
        mixed = registry.client.post("/v1/events/batch", headers=headers, json=[
            pledge("b-1", jv, "mitsui-co", "1", "2"),
            pledge_v2("b-2", jv, "tata-motors", "1", "2")])
        assert mixed.status_code == 200 and mixed.json()["recorded"] == 2, mixed.text
        assert mixed.headers["Deprecation"] == DEPRECATION
        only_v2 = registry.client.post("/v1/events/batch", headers=headers, json=[
            pledge_v2("b-3", jv, "tata-motors", "1", "2"), firm("b-4", "attero")])
        assert only_v2.status_code == 200 and "Deprecation" not in only_v2.headers
        bad = registry.client.post("/v1/events/batch", headers=headers, json=[
            pledge_v2("b-5", jv, "tata-motors", "1", "2", tranches=[
                {"due_date": "2026-01-01", "amount": "3"}])])
        item = bad.json()["items"][0]
        assert (item["status"], item["error"]["field"], item["error"]["rule"]) == (
            422, "payload.tranches", "sum_le_high")

    def test_past_states_and_totals_by_instrument(self, registry: Registry, jv: str) -> None:
        made = registry.post(pledge("p-1", jv, "mitsui-co", "10000000", "40000000"))
        registry.post(pledge_v2("p-2", jv, "tata-motors", "20000000", "50000000",
                                tranches=SCHEDULE,
                                occurred_at="2025-06-01T10:00:00+05:30"))
        revised = registry.post(revision("r-1", jv, "p-2", "20000000", "50000000", version=2,
                                         instrument="debt", occurred_at="2025-07-01T10:00:00Z"))
        assert revised.status_code == 201, revised.text
        # A deal's versions: 1 proposed, 2 the v1 pledge, 3 the v2 pledge, 4 its revision.
        then = pledges_of(registry, jv, version=3)
        assert (then["p-1"]["instrument"], then["p-2"]["instrument"]) == (None, "equity")
        assert len(then["p-2"]["tranches"]) == 2
        assert pledges_of(registry, jv, version=4)["p-2"]["tranches"] == []
        assert pledges_of(registry, jv, as_of="2025-06-15")["p-2"]["instrument"] == "equity"
        assert pledges_of(registry, jv, as_of="2025-07-02")["p-2"]["instrument"] == "debt"
        recorded = pledges_of(registry, jv, recorded_as_of=str(made.json()["position"]))
        assert set(recorded) == {"p-1"}

        def by_instrument(**params: Any) -> dict[str, tuple[int, str]]:
            answer = registry.get("/v1/pledges/by-instrument", min_position=registry.head(),
                                  **params)
            assert answer.status_code == 200, answer.text
            return {i["instrument"]: (i["pledge_count"], i["usd"]["high"])
                    for i in answer.json()["items"]}

        assert by_instrument() == {"debt": (1, "50000000"), "not_stated": (1, "40000000")}
        assert by_instrument(as_of="2025-06-15") == {"equity": (1, "50000000"),
                                                      "not_stated": (1, "40000000")}
        assert by_instrument(as_of="2025-06-15T12:00:00Z") == by_instrument(as_of="2025-06-15")
        over = registry.get("/v1/pledges/over-time", dimension="instrument", **{
            "from": "2025-05-01", "to": "2025-07-31"}).json()
        assert over["dimension"] == "instrument"
        assert [g["instrument"] for g in over["items"]] == ["debt", "equity", "not_stated"]

    def test_the_deal_and_firm_pages_show_the_terms(self, registry: Registry, jv: str) -> None:
        registry.post(pledge("p-1", jv, "mitsui-co", "10000000", "40000000"))
        registry.post(pledge_v2("p-2", jv, "tata-motors", "20000000", "50000000",
                                instrument="in_kind_technology", tranches=SCHEDULE))
        registry.get("/v1/deals", min_position=registry.head())
        sign_in(registry)
        page = registry.client.get(f"/deals/{jv}")
        assert page.status_code == 200
        assert "Tranche schedules" in page.text
        assert "in-kind technology" in page.text and "not stated" in page.text
        assert "2 tranches, 2026-03-31 to 2027-03-31" in page.text
        assert "USD 30,000,000" in page.text
        csv = registry.client.get(f"/deals/{jv}", params={"download": "tranches"})
        assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
        assert csv.text.splitlines()[1:] == ["p-2,in-kind technology,2026-03-31,USD 10000000",
                                             "p-2,in-kind technology,2027-03-31,USD 30000000"]
        firm_page = registry.client.get("/firms/tata-motors")
        assert firm_page.status_code == 200 and "in-kind technology" in firm_page.text
        past = registry.client.get(f"/deals/{jv}", params={"version": "2"})
        assert past.status_code == 200


@pytest.mark.integration
class TestPledgeTermsOnSQLite(PledgeTermsContract):
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return Settings(data_dir=tmp_path, projection_poll_seconds=0.05)

    @pytest.fixture(scope="class")
    def shared_settings(self, tmp_path_factory: pytest.TempPathFactory) -> Settings:
        return Settings(data_dir=tmp_path_factory.mktemp("terms"), projection_poll_seconds=0.05)


@pytest.mark.integration
class TestPledgeTermsOnPostgres(PledgeTermsContract):
    @pytest.fixture
    def settings(self, tmp_path: Path, postgres_url: str) -> Settings:
        return Settings(data_dir=tmp_path, database_url=postgres_url,
                        projection_poll_seconds=0.05)

    @pytest.fixture(scope="class")
    def shared_settings(self, tmp_path_factory: pytest.TempPathFactory,
                        module_postgres_url: str) -> Settings:
        return Settings(data_dir=tmp_path_factory.mktemp("terms"),
                        database_url=module_postgres_url, projection_poll_seconds=0.05)


# A log that mixes pledge events stored at v1 with v2 ones.


def store_as_v1(store: Any, event: Any) -> None:
    """Append `event` as the registry stored it before v2: no terms, no class version."""
    stored = store.mapper.to_stored_event(event)
    fields = json.loads(stored.state)
    for name in ("instrument", "tranches", "class_version"):
        fields.pop(name)
    store.recorder.insert_events([type(stored)(
        stored.originator_id, stored.originator_version, stored.topic,
        json.dumps(fields, separators=(",", ":")).encode())])


def v1_history(settings: Settings) -> str:
    """Firms and a deal recorded as ever, then two pledges and a revision stored at v1."""
    store = open_event_store(settings)
    service = RecordingService(store)
    try:
        for submission in (firm("f-tata", "tata-motors"),
                           firm("f-mitsui", "mitsui-co", "JP", "trading_house"),
                           deal("d-jv", ["tata-motors", "mitsui-co"])):
            receipt = record(service, submission)
        deal_id = receipt.aggregate_id
        for step in ("old-1", "old-2", "revise-old-1"):
            loaded: Deal = store.repository.get(deal_id)
            value = AmountRange.of(Decimal("100"), Decimal("300" if step[0] == "r" else "200"),
                                   "USD")
            usd = UsdConversion.of(value, Decimal(1), "test rates")
            provenance = _provenance(step)
            if step.startswith("revise"):
                loaded.revise_pledge("old-1", value, usd, "before the upgrade", provenance)
            else:
                loaded.make_pledge(step, "mitsui-co", "JP", value, usd, provenance)
            (event,) = loaded.collect_events()
            store_as_v1(store, event)
        return str(deal_id)
    finally:
        service.committer.close()
        store.close()


def _provenance(event_id: str) -> Provenance:
    return Provenance(datetime(2025, 5, 1, tzinfo=UTC), "test-admin", event_id)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_audit_verify_is_clean_over_a_log_mixing_v1_and_v2(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    database_url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    settings = Settings(data_dir=tmp_path, database_url=database_url,
                        projection_poll_seconds=0.05)
    deal_id = v1_history(settings)
    registry = Registry(settings)
    try:
        # New events chain onto the v1 ones: a v2 revision of a v1 pledge, a v2 pledge, and
        # a v1 revision that keeps the terms.
        for submission in (
                revision("r-v2", deal_id, "old-2", "100", "200", version=2, instrument="debt",
                         tranches=[{"due_date": "2026-01-31", "amount": "150"}]),
                pledge_v2("new-1", deal_id, "tata-motors", "1000", "2000",
                          tranches=[{"due_date": "2026-06-30", "amount": "500"}]),
                revision("r-v1", deal_id, "new-1", "1000", "2500")):
            answer = registry.post(submission, role=Role.ADMIN)
            assert answer.status_code == 201, answer.text
        shown = pledges_of(registry, deal_id)
        assert {k: (p["instrument"], len(p["tranches"])) for k, p in shown.items()} == {
            "old-1": (None, 0), "old-2": ("debt", 1), "new-1": ("equity", 1)}
        assert shown["old-1"]["amount"]["high"] == "300"
        verified = registry.get("/v1/audit/verify", role=Role.AUDITOR)
        assert verified.status_code == 200, verified.text
        report = verified.json()
        assert report["ok"], report["failures"]
        assert report["events_checked"] == registry.head()
        history = registry.get(f"/v1/deals/{deal_id}/events", role=Role.AUDITOR).json()["items"]
        for before, after in zip(history, history[1:], strict=False):
            assert after["previous_hash"] == before["hash"]
    finally:
        registry.close()
