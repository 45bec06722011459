"""Assertions every read-model backend must pass; subclass once per backend with `engine`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import Engine, event

from contracts.events_v1 import EventType
from services.projections.projectors.read_model_projector import (
    ProjectionError,
    ReadModelProjector,
)
from services.projections.read_model.progress import LOG_SOURCE, SourceProgress
from services.projections.read_model.queries import ReadModelQueries
from services.projections.read_model.tables import TotalsDimension, create_read_schema, read_model
from tests.unit.projections.envelopes import EventLog, money, usd


class Scenario:
    """Three firms, two deals, three pledges; later steps revise, withdraw and cancel."""

    def __init__(self) -> None:
        self.log = EventLog()
        log = self.log
        log.firm("toyota", "JP", kind="automaker")
        log.firm("tata-motors", "IN", kind="automaker")
        log.firm("suzuki", "JP", kind="automaker")
        log.meeting("Japan-India battery round table", ["battery_manufacturing"])
        self.battery = log.deal("battery_manufacturing", "joint_venture", ["toyota", "tata-motors"])
        log.pledge(self.battery, "p1", "toyota", money("8600000000", "35000000000", "INR"),
                   usd("100000000", "406976744.186047", "86"))
        log.pledge(self.battery, "p2", "tata-motors", money("100000000", "400000000", "USD"),
                   usd("100000000", "400000000"))
        self.recycling = log.deal("recycling", "processing_facility", ["suzuki", "tata-motors"])
        log.pledge(self.recycling, "p3", "suzuki", money("15000000000", "15000000000", "JPY"),
                   usd("100000000", "100000000", "150"))


def by_key(items: list[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    return {item[key] if key != "firm" else item["firm"]["code"]: item for item in items}


def currencies(group: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["currency"]: entry for entry in group["by_currency"]}


def everything(queries: ReadModelQueries, deal_ids: list[UUID]) -> dict[str, Any]:
    """Every answer the read model gives, for comparing two states."""
    return {
        "position": queries.position(),
        "sector": queries.pledge_totals(TotalsDimension.SECTOR),
        "firm": queries.pledge_totals(TotalsDimension.FIRM),
        "country": queries.pledge_totals(TotalsDimension.COUNTRY),
        "deals": queries.deals(limit=500),
        "deal": [queries.deal(deal_id) for deal_id in deal_ids],
        "events": [queries.deal_events(deal_id, limit=500) for deal_id in deal_ids],
        "firms": queries.firms(limit=500),
        "meetings": queries.meetings(limit=500),
    }


class ReadModelFixtures:
    """A projector and its queries over the engine a backend's test class provides."""

    @pytest.fixture
    def engine(self) -> Iterator[Engine]:
        raise NotImplementedError("a backend's test class provides the engine")

    @pytest.fixture
    def projector(self, engine: Engine) -> ReadModelProjector:
        create_read_schema(engine)
        return ReadModelProjector(engine)

    @pytest.fixture
    def queries(self, engine: Engine, projector: ReadModelProjector) -> ReadModelQueries:
        return ReadModelQueries(engine)


class ProjectorCases(ReadModelFixtures):

    @pytest.fixture
    def scenario(self) -> Scenario:
        return Scenario()

    # Totals

    def test_pledges_made_are_totalled_by_sector(self, projector, queries, scenario) -> None:
        projector.apply(scenario.log.envelopes)

        sectors = by_key(queries.pledge_totals(TotalsDimension.SECTOR), "sector")
        assert set(sectors) == {"battery_manufacturing", "recycling"}
        battery = sectors["battery_manufacturing"]
        assert battery["pledge_count"] == 2
        assert battery["usd"] == {"low": "200000000", "high": "806976744.186047"}
        assert currencies(battery) == {
            "INR": {"currency": "INR", "low": "8600000000", "high": "35000000000",
                    "crore": {"low": "860", "high": "3500"}, "display": "₹860–3,500 crore"},
            "USD": {"currency": "USD", "low": "100000000", "high": "400000000"},
        }
        assert sectors["recycling"]["pledge_count"] == 1
        assert list(currencies(sectors["recycling"])) == ["JPY"]

    def test_pledges_are_totalled_by_firm_and_country(self, projector, queries, scenario) -> None:
        projector.apply(scenario.log.envelopes)

        firms = by_key(queries.pledge_totals(TotalsDimension.FIRM), "firm")
        assert firms["toyota"]["firm"] == {"code": "toyota", "name": "Toyota", "country": "JP"}
        assert firms["tata-motors"]["usd"] == {"low": "100000000", "high": "400000000"}
        countries = by_key(queries.pledge_totals(TotalsDimension.COUNTRY), "country")
        assert countries["JP"]["pledge_count"] == 2
        assert countries["JP"]["usd"] == {"low": "200000000", "high": "506976744.186047"}
        assert set(currencies(countries["JP"])) == {"INR", "JPY"}
        assert countries["IN"]["pledge_count"] == 1

    def test_revision_replaces_the_amount(self, projector, queries, scenario) -> None:
        scenario.log.revise(scenario.battery, "p2", money("150000000", "250000000", "USD"),
                            usd("150000000", "250000000"))
        projector.apply(scenario.log.envelopes)

        battery = by_key(queries.pledge_totals(TotalsDimension.SECTOR),
                         "sector")["battery_manufacturing"]
        assert battery["pledge_count"] == 2
        assert battery["usd"] == {"low": "250000000", "high": "656976744.186047"}
        assert currencies(battery)["USD"]["high"] == "250000000"
        pledge = {p["pledge_id"]: p for p in queries.deal(scenario.battery)["pledges"]}["p2"]
        assert pledge["revisions"] == 1
        assert pledge["amount"] == {"currency": "USD", "low": "150000000", "high": "250000000"}

    def test_revision_may_change_the_currency(self, projector, queries, scenario) -> None:
        scenario.log.revise(scenario.recycling, "p3", money("830000000", "830000000", "INR"),
                            usd("10000000", "10000000", "83"))
        projector.apply(scenario.log.envelopes)

        recycling = by_key(queries.pledge_totals(TotalsDimension.SECTOR), "sector")["recycling"]
        assert recycling["pledge_count"] == 1
        assert currencies(recycling)["INR"]["display"] == "₹83 crore"
        assert "JPY" not in currencies(recycling)
        japan = by_key(queries.pledge_totals(TotalsDimension.COUNTRY), "country")["JP"]
        assert currencies(japan)["INR"]["low"] == "9430000000"

    def test_withdrawal_removes_the_pledge_from_totals_only(
        self, projector, queries, scenario
    ) -> None:
        scenario.log.withdraw(scenario.battery, "p1")
        projector.apply(scenario.log.envelopes)

        battery = by_key(queries.pledge_totals(TotalsDimension.SECTOR),
                         "sector")["battery_manufacturing"]
        assert battery["pledge_count"] == 1
        assert list(currencies(battery)) == ["USD"]
        assert "toyota" not in by_key(queries.pledge_totals(TotalsDimension.FIRM), "firm")
        pledges = {p["pledge_id"]: p for p in queries.deal(scenario.battery)["pledges"]}
        assert pledges["p1"]["status"] == "withdrawn"
        assert pledges["p1"]["counted"] is False
        assert pledges["p1"]["withdrawal_reason"] == "funding fell through"

    def test_cancelling_a_deal_removes_all_its_pledges_from_totals(
        self, projector, queries, scenario
    ) -> None:
        scenario.log.cancel(scenario.battery)
        projector.apply(scenario.log.envelopes)

        assert set(by_key(queries.pledge_totals(TotalsDimension.SECTOR), "sector")) == {"recycling"}
        assert set(by_key(queries.pledge_totals(TotalsDimension.COUNTRY), "country")) == {"JP"}
        deal = queries.deal(scenario.battery)
        assert deal["status"] == "cancelled"
        assert deal["cancellation"]["reason"] == "parties withdrew"
        assert {p["pledge_id"]: p["status"] for p in deal["pledges"]} == {
            "p1": "active", "p2": "active"
        }
        assert not any(p["counted"] for p in deal["pledges"])

    def test_withdrawal_then_cancellation_counts_nothing_twice(
        self, projector, queries, scenario
    ) -> None:
        scenario.log.withdraw(scenario.battery, "p1")
        scenario.log.cancel(scenario.battery)
        scenario.log.cancel(scenario.recycling)
        projector.apply(scenario.log.envelopes)

        assert queries.pledge_totals(TotalsDimension.SECTOR) == []
        assert queries.pledge_totals(TotalsDimension.FIRM) == []
        assert queries.pledge_totals(TotalsDimension.COUNTRY) == []

    def test_totals_are_exact_beyond_float_and_default_decimal_precision(
        self, projector, queries
    ) -> None:
        log = EventLog()
        log.firm("toyota", "JP")
        deal_id = log.deal("mineral_processing", "equity_investment", ["toyota"])
        huge = "123456789012345678901234.123456"
        for number in range(3):
            log.pledge(deal_id, f"small-{number}", "toyota", money("0.1", "0.1", "USD"),
                       usd("0.1", "0.1"))
        for number in range(2):
            log.pledge(deal_id, f"huge-{number}", "toyota", money(huge, huge, "EUR"),
                       usd(huge, huge))
        projector.apply(log.envelopes)

        group = queries.pledge_totals(TotalsDimension.SECTOR)[0]
        assert currencies(group)["USD"]["low"] == "0.3"
        assert currencies(group)["EUR"]["high"] == "246913578024691357802468.246912"
        assert group["usd"]["low"] == "246913578024691357802468.546912"

    # Deals, firms, meetings

    def test_deal_state_follows_its_events(self, projector, queries, scenario) -> None:
        scenario.log.form_joint_venture(scenario.battery, "Toyota Tata Cells",
                                        {"toyota": "51", "tata-motors": "49"})
        projector.apply(scenario.log.envelopes)

        deal = queries.deal(scenario.battery)
        assert deal["status"] == "agreed"
        assert deal["version"] == 4
        assert deal["parties"] == ["toyota", "tata-motors"]
        assert deal["joint_ventures"][0]["venture_name"] == "Toyota Tata Cells"
        assert deal["joint_ventures"][0]["equity"] == {"toyota": "51", "tata-motors": "49"}
        assert deal["pledges"][0]["amount"]["display"] == "₹860–3,500 crore"
        assert deal["pledges"][0]["firm"]["country"] == "JP"
        assert queries.deal(uuid4()) is None

    def test_deals_are_filtered_and_paged(self, projector, queries, scenario) -> None:
        scenario.log.announce_facility(scenario.recycling, "Catalyst recovery plant")
        projector.apply(scenario.log.envelopes)

        assert queries.deals().total == 2
        assert [d["sector"] for d in queries.deals(sector="recycling").items] == ["recycling"]
        assert queries.deals(format="joint_venture").items[0]["deal_id"] == str(scenario.battery)
        assert queries.deals(status="agreed").items[0]["deal_id"] == str(scenario.recycling)
        assert queries.deals(status="cancelled").total == 0
        assert queries.deals(party="tata-motors").total == 2
        assert queries.deals(party="toyota").total == 1
        first = queries.deals(limit=1)
        second = queries.deals(limit=1, offset=1)
        assert first.total == second.total == 2
        assert first.items[0]["deal_id"] == str(scenario.recycling)  # Newest first.
        assert second.items[0]["deal_id"] == str(scenario.battery)

    def test_deal_events_are_kept_in_version_order(self, projector, queries, scenario) -> None:
        scenario.log.sign_tech_transfer(scenario.battery, "solid-state cells")
        projector.apply(scenario.log.envelopes)

        page = queries.deal_events(scenario.battery, limit=2, offset=1)
        assert page.total == 4
        assert [e["aggregate_version"] for e in page.items] == [2, 3]
        assert [e["type"] for e in page.items] == ["pledge_made", "pledge_made"]
        assert page.items[0]["payload"]["amount"]["low"] == "8600000000"
        assert page.items[0]["hash"] == "x" * 64
        assert queries.deal_events(uuid4()) is None

    def test_firms_and_meetings(self, projector, queries, scenario) -> None:
        projector.apply(scenario.log.envelopes)

        assert [f["code"] for f in queries.firms().items] == ["suzuki", "tata-motors", "toyota"]
        assert [f["code"] for f in queries.firms(country="JP").items] == ["suzuki", "toyota"]
        assert queries.firms(kind="recycler").total == 0
        meetings = queries.meetings().items
        assert meetings[0]["government_bodies"] == ["METI"]
        assert meetings[0]["occurred_at"].endswith("+00:00")

    # Exactly-once effect and position tracking

    def test_position_is_zero_before_anything_is_applied(self, projector, queries) -> None:
        assert projector.position() == 0
        assert queries.position() == 0
        assert projector.apply([]) == 0

    def test_apply_records_and_returns_the_last_position(self, projector, queries, scenario):
        assert projector.apply(scenario.log.envelopes) == len(scenario.log.envelopes)
        assert projector.position() == queries.position() == len(scenario.log.envelopes)
        assert projector.apply([]) == len(scenario.log.envelopes)

    def test_log_progress_advances_past_entries_with_no_event(
        self, projector, queries, scenario
    ) -> None:
        envelopes = scenario.log.envelopes
        assert projector.apply(envelopes[:3], [SourceProgress.of_log(20)]) == 20
        assert queries.position() == 20
        assert projector.resume_offsets(LOG_SOURCE) == {0: 20}
        assert projector.apply([], [SourceProgress.of_log(5)]) == 20  # Never moves back.

    def test_republished_events_with_new_offsets_have_no_second_effect(
        self, projector, queries, scenario
    ) -> None:
        envelopes = scenario.log.envelopes
        first = [SourceProgress("topic", 0, offset=len(envelopes), position=len(envelopes))]
        projector.apply(envelopes, first)
        before = everything(queries, [scenario.battery, scenario.recycling])
        again = [SourceProgress("topic", 0, offset=2 * len(envelopes), position=len(envelopes))]
        projector.apply(envelopes, again)
        assert everything(queries, [scenario.battery, scenario.recycling]) == before
        assert projector.resume_offsets("topic") == {0: 2 * len(envelopes)}

    def test_position_is_the_lowest_complete_position_of_every_known_partition(
        self, projector, queries, scenario
    ) -> None:
        # Four partitions known, three read: the unread one holds the position at 0.
        projector.apply([], [SourceProgress("topic", 0, 10, 40),
                             SourceProgress("topic", 1, 7, 25),
                             SourceProgress("topic", 2, 3, 50),
                             *(SourceProgress.unread("topic", p) for p in range(4))])
        assert queries.position() == 0
        assert projector.resume_offsets("topic") == {0: 10, 1: 7, 2: 3}
        projector.apply([], [SourceProgress("topic", 3, 0, 60)])
        assert queries.position() == 25
        projector.apply([], [SourceProgress("topic", 1, 9, 31)])
        assert queries.position() == 31
        # Made known again, a partition keeps what its row says; nothing moves back.
        projector.apply([], [SourceProgress.unread("topic", 1),
                             SourceProgress("topic", 0, 8, 20)])
        assert queries.position() == 31
        assert projector.resume_offsets("topic") == {0: 10, 1: 9, 2: 3, 3: 0}

    def test_redelivery_has_no_effect(self, projector, queries, scenario) -> None:
        projector.apply(scenario.log.envelopes)
        deal_ids = [scenario.battery, scenario.recycling]
        before = everything(queries, deal_ids)

        assert projector.apply(scenario.log.envelopes) == len(scenario.log.envelopes)
        assert projector.apply(scenario.log.envelopes[3:7]) == len(scenario.log.envelopes)
        assert everything(queries, deal_ids) == before

    def test_a_partly_applied_batch_applies_only_the_rest(
        self, projector, queries, scenario
    ) -> None:
        scenario.log.withdraw(scenario.battery, "p1")
        scenario.log.cancel(scenario.recycling)
        envelopes = scenario.log.envelopes
        assert projector.apply(envelopes[:6]) == 6

        assert projector.apply(envelopes[4:]) == len(envelopes)

        # Events 5 and 6 (the battery deal's proposal and first pledge) applied once only.
        assert queries.deals().total == 2
        assert queries.firms().total == 3
        assert [e["aggregate_version"] for e in queries.deal_events(scenario.battery).items] \
            == [1, 2, 3, 4]
        assert [p["pledge_id"] for p in queries.deal(scenario.battery)["pledges"]] == ["p1", "p2"]
        sectors = by_key(queries.pledge_totals(TotalsDimension.SECTOR), "sector")
        assert set(sectors) == {"battery_manufacturing"}
        assert sectors["battery_manufacturing"]["pledge_count"] == 1
        assert sectors["battery_manufacturing"]["usd"] == {"low": "100000000", "high": "400000000"}

    def test_a_batch_is_applied_in_position_order(self, projector, queries, scenario) -> None:
        assert projector.apply(list(reversed(scenario.log.envelopes))) == len(
            scenario.log.envelopes
        )
        recycling = by_key(queries.pledge_totals(TotalsDimension.SECTOR), "sector")["recycling"]
        assert recycling["pledge_count"] == 1

    def test_a_failing_batch_changes_nothing(self, projector, queries, scenario) -> None:
        projector.apply(scenario.log.envelopes[:3])
        scenario.log.record(EventType.PLEDGE_WITHDRAWN, uuid4(), {"pledge_id": "nope"})

        with pytest.raises(ProjectionError):
            projector.apply(scenario.log.envelopes)

        assert projector.position() == 3
        assert queries.deals().total == 0
        assert queries.pledge_totals(TotalsDimension.SECTOR) == []

    # Batch shape: the same state whatever the batch boundaries, a bounded number of statements

    def test_one_batch_and_one_event_per_batch_give_the_same_read_model(
        self, engine, projector, queries
    ) -> None:
        whole, single = Scenario(), Scenario()
        for scenario in (whole, single):
            log = scenario.log
            log.revise(scenario.battery, "p2", money("150000000", "250000000", "USD"),
                       usd("150000000", "250000000"))
            log.withdraw(scenario.battery, "p1")
            log.form_joint_venture(scenario.battery, "Toyota Tata Cells",
                                   {"toyota": "51", "tata-motors": "49"})
            log.sign_tech_transfer(scenario.battery, "solid-state cells")
            log.announce_facility(scenario.recycling, "Catalyst recovery plant")
            log.revise(scenario.recycling, "p3", money("830000000", "830000000", "INR"),
                       usd("10000000", "10000000", "83"))
            log.cancel(scenario.recycling)
            log.announce_facility(scenario.recycling, "Second plant")
        # Same events, same ids: the second scenario replays the first's envelopes one by one
        # into a second projector of its own, so only the batch boundaries differ.
        projector.apply(whole.log.envelopes)
        expected = everything(queries, [whole.battery, whole.recycling])

        other = ReadModelProjector(engine, name="one-by-one")
        with engine.begin() as conn:
            for table in reversed(list(read_model.sorted_tables)):
                if table.name not in {"rm_source_progress", "rm_projector_lock"}:
                    conn.execute(table.delete())
        for envelope in whole.log.envelopes:
            other.apply([envelope])
        assert everything(queries, [whole.battery, whole.recycling]) | {
            "position": expected["position"]
        } == expected
        recycling = queries.deal(whole.recycling)
        assert recycling["status"] == "cancelled"
        assert [f["facility"] for f in recycling["facilities"]] == [
            "Catalyst recovery plant", "Second plant"
        ]
        assert not any(p["counted"] for p in recycling["pledges"])

    def test_cancelling_a_stored_deal_uncounts_its_stored_and_new_pledges(
        self, projector, queries, scenario
    ) -> None:
        projector.apply(scenario.log.envelopes)
        scenario.log.pledge(scenario.battery, "p4", "suzuki", money("5", "7", "USD"),
                            usd("5", "7"))
        scenario.log.cancel(scenario.battery)
        scenario.log.pledge(scenario.battery, "p5", "suzuki", money("1", "2", "USD"),
                            usd("1", "2"))
        projector.apply(scenario.log.envelopes[-3:])

        assert set(by_key(queries.pledge_totals(TotalsDimension.SECTOR), "sector")) == {"recycling"}
        assert set(by_key(queries.pledge_totals(TotalsDimension.FIRM), "firm")) == {"suzuki"}
        suzuki = by_key(queries.pledge_totals(TotalsDimension.FIRM), "firm")["suzuki"]
        assert suzuki["pledge_count"] == 1
        deal = queries.deal(scenario.battery)
        assert deal["version"] == 6
        assert {p["pledge_id"]: p["counted"] for p in deal["pledges"]} == {
            "p1": False, "p2": False, "p4": False, "p5": False
        }

    def test_unknown_pledge_of_a_stored_deal_fails_the_batch(
        self, projector, queries, scenario
    ) -> None:
        projector.apply(scenario.log.envelopes)
        scenario.log.withdraw(scenario.battery, "p1")
        scenario.log.withdraw(scenario.battery, "no-such-pledge")

        with pytest.raises(ProjectionError, match="no-such-pledge"):
            projector.apply(scenario.log.envelopes[-2:])

        pledges = {p["pledge_id"]: p for p in queries.deal(scenario.battery)["pledges"]}
        assert pledges["p1"]["status"] == "active"  # the whole batch rolled back

    def test_a_pledge_made_twice_fails_the_batch(self, projector, scenario) -> None:
        projector.apply(scenario.log.envelopes)
        twice = [money("1", "1", "USD"), usd("1", "1")]
        scenario.log.pledge(scenario.recycling, "p3", "suzuki", *twice)
        with pytest.raises(ProjectionError, match="second time"):
            projector.apply(scenario.log.envelopes[-1:])

        scenario.log.pledge(scenario.recycling, "p9", "suzuki", *twice)
        scenario.log.pledge(scenario.recycling, "p9", "suzuki", *twice)
        with pytest.raises(ProjectionError, match="second time"):
            projector.apply(scenario.log.envelopes[-2:])

    def test_statements_per_batch_do_not_grow_with_its_events(self, engine, projector) -> None:
        log = EventLog()  # one log for both runs, so positions never repeat

        def statements_for(deal_count: int, currency: str) -> int:
            # A currency of its own per run: every totals group is new in both runs.
            japanese, indian = f"jp-{deal_count}", f"in-{deal_count}"
            log.firm(japanese, "JP")
            log.firm(indian, "IN")
            deal_ids = [log.deal("recycling", "joint_venture", [japanese, indian])
                        for _ in range(deal_count)]
            projector.apply(log.envelopes)  # firms and deals stored, so the batch reads them
            stored = len(log.envelopes)
            for deal_id in deal_ids:
                log.pledge(deal_id, "p1", japanese, money("1", "4", currency), usd("1", "4"))
                log.pledge(deal_id, "p2", indian, money("2", "3", currency), usd("2", "3"))
                log.revise(deal_id, "p1", money("5", "6", currency), usd("5", "6"))
                log.withdraw(deal_id, "p2")
                log.form_joint_venture(deal_id, "JV", {japanese: "50", indian: "50"})
            counted: list[str] = []

            def count(*args: Any) -> None:
                counted.append(args[2])

            event.listen(engine, "before_cursor_execute", count)
            try:
                projector.apply(log.envelopes[stored:])
            finally:
                event.remove(engine, "before_cursor_execute", count)
            return len(counted)

        assert statements_for(40, "EUR") == statements_for(2, "USD")
