"""Partners act for their firms: two partner keys, each bound to its own firms, can each do
everything with those firms and nothing with the other's; a refusal is a 403 naming the firms
and the rule, and records nothing. Admin keys act for every firm; partner keys bound to no
firm (made before keys carried firms) act for every firm unless the operator refuses them.
On SQLite and on PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from services.registry.application import authority
from services.shared.api_keys import Role
from services.shared.settings import Settings
from tests.integration.test_abuse_limits import refusal_lines
from tests.integration.test_http_api import Registry, T, deal, firm, pledge

TATA = ("tata-motors", "tata-autocomp")
SUZUKI = ("suzuki-motor", "maruti-suzuki")


def event(event_id: str, type_: str, **payload: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": type_, "occurred_at": T, "payload": payload}


def revision(event_id: str, deal_id: str, pledge_id: str, high: str) -> dict[str, Any]:
    return event(event_id, "pledge_revised", deal_id=deal_id, pledge_id=pledge_id,
                 amount={"low": "1", "high": high, "currency": "USD"})


def withdrawal(event_id: str, deal_id: str, pledge_id: str) -> dict[str, Any]:
    return event(event_id, "pledge_withdrawn", deal_id=deal_id, pledge_id=pledge_id)


def cancellation(event_id: str, deal_id: str) -> dict[str, Any]:
    return event(event_id, "deal_cancelled", deal_id=deal_id, reason="talks ended")


class Partners:
    """A registry with the two partners' keys, an admin's, and an older (unbound) partner's."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        store = registry.app.state.api_keys
        self.keys = {
            "tata": store.create("tata-erp", Role.PARTNER, firms=TATA),
            "suzuki": store.create("suzuki-erp", Role.PARTNER, firms=SUZUKI),
            "admin": registry.keys[Role.ADMIN],
            "unbound": registry.keys[Role.PARTNER],
        }

    def post(self, who: str, body: Any) -> Any:
        return self.registry.client.post(
            "/v1/events", json=body, headers={"Authorization": f"Bearer {self.keys[who]}"})

    def ok(self, who: str, body: Any) -> dict[str, Any]:
        response = self.post(who, body)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def refused(self, who: str, body: Any, field: str, rule: str,
                firms: list[str]) -> dict[str, Any]:
        """Assert the 403 and that nothing was recorded."""
        head = self.registry.head()
        response = self.post(who, body)
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert (error["code"], error["field"], error["rule"], error["firms"]) == \
            ("forbidden", field, rule, firms)
        assert all(code in error["message"] for code in firms)
        assert self.registry.head() == head
        return error  # type: ignore[no-any-return]

    def firms_registered(self) -> None:
        for who, codes in (("tata", TATA), ("suzuki", SUZUKI)):
            for code in codes:
                self.ok(who, firm(f"f-{code}", code))

    def deal_of(self, who: str, event_id: str, parties: list[str],
                fmt: str = "joint_venture") -> str:
        return str(self.ok(who, deal(event_id, parties, fmt))["aggregate_id"])

    def deal_version(self, deal_id: str) -> int:
        deal_ = self.registry.app.state.recording_service.store.repository.get(UUID(deal_id))
        return int(deal_.version)


class AuthorityContract:
    @pytest.fixture
    def settings(self) -> Settings:
        raise NotImplementedError

    @pytest.fixture
    def partners(self, settings: Settings) -> Iterator[Partners]:
        registry = Registry(settings)
        yield Partners(registry)
        registry.close()

    @pytest.fixture
    def registered(self, partners: Partners) -> Partners:
        partners.firms_registered()
        return partners

    def test_partners_register_only_their_own_firms(self, partners: Partners) -> None:
        partners.refused("tata", firm("f-toyota", "toyota-motor", "JP"), "payload.code",
                         "acts_for_firm", ["toyota-motor"])
        partners.refused("tata", firm("f-suzuki", "suzuki-motor", "JP"), "payload.code",
                         "acts_for_firm", ["suzuki-motor"])
        partners.refused("suzuki", firm("f-tata", "tata-motors"), "payload.code",
                         "acts_for_firm", ["tata-motors"])
        partners.firms_registered()

    def test_deals_are_proposed_only_with_an_own_firm_among_the_parties(
            self, registered: Partners) -> None:
        registered.refused("tata", deal("d-1", list(SUZUKI)), "payload.parties",
                           "party_to_deal", list(SUZUKI))
        registered.refused("suzuki", deal("d-2", list(TATA)), "payload.parties",
                           "party_to_deal", list(TATA))
        registered.deal_of("tata", "d-3", list(TATA))
        registered.deal_of("suzuki", "d-4", list(SUZUKI))
        # One's own firm among the parties is enough: a deal across the two partners.
        registered.deal_of("tata", "d-5", ["tata-motors", "maruti-suzuki"])

    def test_pledges_are_made_revised_and_withdrawn_only_for_own_firms(
            self, registered: Partners) -> None:
        shared = registered.deal_of("tata", "d-1", ["tata-motors", "maruti-suzuki"])
        registered.ok("tata", pledge("p-tata", shared, "tata-motors", "1", "2"))
        registered.ok("suzuki", pledge("p-suzuki", shared, "maruti-suzuki", "1", "2"))
        registered.refused("tata", pledge("p-x", shared, "maruti-suzuki", "1", "2"),
                           "payload.firm", "acts_for_firm", ["maruti-suzuki"])
        registered.refused("suzuki", pledge("p-y", shared, "tata-motors", "1", "2"),
                           "payload.firm", "acts_for_firm", ["tata-motors"])
        version = registered.deal_version(shared)
        for who, other in (("tata", "p-suzuki"), ("suzuki", "p-tata")):
            owner = "maruti-suzuki" if who == "tata" else "tata-motors"
            registered.refused(who, revision(f"r-{who}", shared, other, "3"),
                               "payload.pledge_id", "own_pledge", [owner])
            registered.refused(who, withdrawal(f"w-{who}", shared, other),
                               "payload.pledge_id", "own_pledge", [owner])
        assert registered.deal_version(shared) == version
        for who, own in (("tata", "p-tata"), ("suzuki", "p-suzuki")):
            registered.ok(who, revision(f"r-{who}", shared, own, "3"))
            registered.ok(who, withdrawal(f"w-{who}", shared, own))
        assert registered.deal_version(shared) == version + 4

    def test_agreements_are_signed_and_formed_only_by_a_party(
            self, registered: Partners) -> None:
        transfer = registered.deal_of("suzuki", "d-1", list(SUZUKI), "technology_transfer")
        signed = event("tt-1", "tech_transfer_signed", deal_id=transfer,
                       technology="hybrid drivetrain", licensor="suzuki-motor",
                       licensee="maruti-suzuki")
        registered.refused("tata", signed, "payload.licensor", "party_to_agreement",
                           list(SUZUKI))
        registered.ok("suzuki", signed)

        venture = registered.deal_of("tata", "d-2", list(TATA))
        formed = event("jv-1", "joint_venture_formed", deal_id=venture,
                       venture_name="Tata Recycling", equity={code: "50" for code in TATA})
        registered.refused("suzuki", formed, "payload.equity", "party_to_agreement",
                           list(TATA))
        registered.ok("tata", formed)

        plant = registered.deal_of("suzuki", "d-3", list(SUZUKI), "processing_facility")
        announced = event("fa-1", "facility_announced", deal_id=plant,
                          facility="black-mass plant", location="Gujarat")
        registered.refused("tata", announced, "payload.deal_id", "party_to_deal",
                           list(SUZUKI))
        registered.ok("suzuki", announced)

    def test_deals_are_cancelled_only_by_a_party(self, registered: Partners) -> None:
        tata_deal = registered.deal_of("tata", "d-1", list(TATA))
        suzuki_deal = registered.deal_of("suzuki", "d-2", list(SUZUKI))
        registered.refused("suzuki", cancellation("c-1", tata_deal), "payload.deal_id",
                           "party_to_deal", list(TATA))
        registered.refused("tata", cancellation("c-2", suzuki_deal), "payload.deal_id",
                           "party_to_deal", list(SUZUKI))
        assert registered.deal_version(tata_deal) == registered.deal_version(suzuki_deal) == 1
        registered.ok("tata", cancellation("c-1", tata_deal))
        registered.ok("suzuki", cancellation("c-2", suzuki_deal))

    def test_meetings_are_recorded_only_by_an_attendee(self, registered: Partners) -> None:
        def meeting(event_id: str, attendees: list[str]) -> dict[str, Any]:
            return event(event_id, "meeting_held", title="Delhi round table",
                         location="New Delhi", attendees=attendees)

        registered.refused("tata", meeting("m-1", list(SUZUKI)), "payload.attendees",
                           "attended_meeting", list(SUZUKI))
        registered.ok("tata", meeting("m-2", ["tata-motors", "suzuki-motor"]))
        registered.ok("suzuki", meeting("m-3", list(SUZUKI)))

    def test_admin_acts_for_every_firm(self, registered: Partners) -> None:
        registered.ok("admin", firm("f-toyota", "toyota-motor", "JP"))
        deal_id = registered.deal_of("admin", "d-1", ["toyota-motor", "tata-motors"])
        registered.ok("tata", pledge("p-tata", deal_id, "tata-motors", "1", "2"))
        registered.ok("admin", pledge("p-toyota", deal_id, "toyota-motor", "1", "2"))
        registered.ok("admin", revision("r-1", deal_id, "p-tata", "3"))
        registered.ok("admin", cancellation("c-1", deal_id))

    def test_an_unbound_partner_key_acts_for_every_firm_with_a_warning(
            self, registered: Partners, caplog: pytest.LogCaptureFixture,
            monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(authority, "_unbound_warnings", authority._UnboundKeyWarnings())
        with caplog.at_level(logging.WARNING, logger="dealreg.authority"):
            registered.ok("unbound", firm("f-toyota", "toyota-motor", "JP"))
            registered.deal_of("unbound", "d-1", list(SUZUKI))
        # The key's first write warns; the next, within the minute, does not.
        warnings = [r for r in caplog.records if r.name == "dealreg.authority"]
        assert len(warnings) == 1 and "test-partner" in warnings[0].getMessage()

    def test_a_retry_is_answered_even_after_the_key_lost_the_firm(
            self, registered: Partners) -> None:
        first = registered.ok("tata", firm("f-tata-motors", "tata-motors"))  # a replay already
        assert first["replayed"] is True
        admin = {"Authorization": f"Bearer {registered.keys['admin']}"}
        answer = registered.registry.client.put(
            "/v1/keys/tata-erp/firms", json={"firms": ["tata-autocomp"]}, headers=admin)
        assert answer.status_code == 200, answer.text
        again = registered.ok("tata", firm("f-tata-motors", "tata-motors"))
        assert {**again, "replayed": True} == first
        deal_id = registered.deal_of("suzuki", "d-1", ["maruti-suzuki", "tata-motors"])
        registered.refused("tata", pledge("p-1", deal_id, "tata-motors", "1", "2"),
                           "payload.firm", "acts_for_firm", ["tata-motors"])

    def test_a_batch_refuses_each_item_on_its_own(self, registered: Partners) -> None:
        head = registered.registry.head()
        response = registered.registry.client.post(
            "/v1/events/batch", headers={"Authorization": f"Bearer {registered.keys['tata']}"},
            json=[deal("d-1", list(TATA)), deal("d-2", list(SUZUKI)),
                  firm("f-toyota", "toyota-motor", "JP")])
        assert response.status_code == 200, response.text
        answer = response.json()
        assert [item["status"] for item in answer["items"]] == [201, 403, 403]
        assert [item["error"]["rule"] for item in answer["items"][1:]] == \
            ["party_to_deal", "acts_for_firm"]
        assert answer["items"][2]["error"]["firms"] == ["toyota-motor"]
        assert (answer["recorded"], answer["failed"]) == (1, 2)
        assert registered.registry.head() == head + 1  # the deal only

    def test_a_refusal_is_logged_and_counted(self, registered: Partners,
                                             caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.INFO, logger="dealreg.refusals"):
            registered.refused("tata", firm("f-toyota", "toyota-motor", "JP"),
                               "payload.code", "acts_for_firm", ["toyota-motor"])
        (line,) = refusal_lines(caplog)
        assert line["who"]["principal"] == "tata-erp"
        assert line["what"]["event_type"] == "firm_registered"
        assert line["why"] == {"status": 403, "code": "forbidden", "field": "payload.code",
                               "rule": "acts_for_firm"}
        metrics = registered.registry.client.get("/metrics").text
        assert 'dealreg_refusals_total{code="forbidden",rule="acts_for_firm"} 1.0' in metrics


class TestAuthorityOnSQLite(AuthorityContract):
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return Settings(data_dir=tmp_path, projection_poll_seconds=0.05)


@pytest.mark.integration
class TestAuthorityOnPostgres(AuthorityContract):
    @pytest.fixture
    def settings(self, tmp_path: Path, postgres_url: str) -> Settings:
        return Settings(data_dir=tmp_path, database_url=postgres_url,
                        projection_poll_seconds=0.05)


class TestRefusingUnboundPartnerKeys:
    """With DEALREG_UNBOUND_PARTNER_KEYS=refuse, a key bound to no firm writes nothing until an
    admin binds it; bound keys and admin keys are unaffected."""

    @pytest.fixture
    def partners(self, tmp_path: Path) -> Iterator[Partners]:
        registry = Registry(Settings(data_dir=tmp_path, projection_poll_seconds=0.05,
                                     unbound_partner_keys="refuse"))
        yield Partners(registry)
        registry.close()

    def test_an_unbound_key_is_refused_until_an_admin_binds_it(self, partners: Partners) -> None:
        error = partners.refused("unbound", firm("f-tata", "tata-motors"), "payload.code",
                                 "acts_for_firm", ["tata-motors"])
        assert "bound to no firm" in error["message"] and error["acts_for"] == []
        partners.ok("tata", firm("f-tata", "tata-motors"))
        partners.ok("admin", firm("f-toyota", "toyota-motor", "JP"))
        admin = {"Authorization": f"Bearer {partners.keys['admin']}"}
        answer = partners.registry.client.put(
            "/v1/keys/test-partner/firms", json={"firms": ["toyota-motor"]}, headers=admin)
        assert answer.status_code == 200, answer.text
        partners.ok("unbound", deal("d-1", ["toyota-motor", "tata-motors"]))
