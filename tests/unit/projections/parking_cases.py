"""Parking assertions every read-model backend must pass; subclass once per backend with
`engine` (and `refuses_nul`: whether the backend refuses NUL in text, as PostgreSQL does)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import Engine, select

from contracts.events_v1 import EventEnvelope, EventType
from services.projections.projectors import read_model_projector
from services.projections.projectors.parking import ParkedEvent, SourceEntry, Unreadable
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.progress import LOG_SOURCE, SourceProgress
from services.projections.read_model.queries import ReadModelQueries
from services.projections.read_model.tables import (
    ParkedState,
    TotalsDimension,
    parked_events,
)
from tests.unit.projections.envelopes import EventLog, money, usd
from tests.unit.projections.projector_cases import ReadModelFixtures

# Offsets a partner's clock may send that leave the range of datetime once moved to UTC.
YEAR_ONE_IN_INDIA = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=30)))
LAST_SECOND_WEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(-timedelta(hours=23,
                                                                                  minutes=59)))


def occurring_at(log: EventLog, when: datetime) -> EventEnvelope:
    """Give the log's last envelope another business time (as an older registry accepted)."""
    log.envelopes[-1] = log.envelopes[-1].model_copy(update={"occurred_at": when})
    return log.envelopes[-1]


def with_payload(log: EventLog, **changes: Any) -> EventEnvelope:
    last = log.envelopes[-1]
    log.envelopes[-1] = last.model_copy(update={"payload": {**last.payload, **changes}})
    return log.envelopes[-1]


def parked_rows(engine: Engine) -> list[ParkedEvent]:
    with engine.connect() as conn:
        return [ParkedEvent.of_row(row) for row in conn.execute(
            select(parked_events).order_by(parked_events.c.id))]


def entries_of(envelopes: list[EventEnvelope]) -> list[SourceEntry]:
    return [SourceEntry.of_log(e) for e in envelopes]


def log_progress(envelopes: list[EventEnvelope]) -> list[SourceProgress]:
    return [SourceProgress.of_log(max(e.position for e in envelopes))]


class PoisonedLog:
    """Two firms and two deals; one deal (`poisoned`) gets a pledge the test poisons, then a
    revision that must wait behind it; the other deal (`healthy`) gets pledges after both."""

    def __init__(self) -> None:
        self.log = log = EventLog()
        log.firm("toyota", "JP", kind="automaker")
        log.firm("tata-motors", "IN", kind="automaker")
        self.poisoned = log.deal("battery_manufacturing", "joint_venture",
                                 ["toyota", "tata-motors"])
        self.healthy = log.deal("recycling", "processing_facility", ["toyota", "tata-motors"])

    def poison_pledge(self) -> EventEnvelope:
        self.log.pledge(self.poisoned, "p1", "toyota", money("100", "200", "USD"),
                        usd("100", "200"))
        return self.log.envelopes[-1]

    def then_more(self) -> None:
        """A later event of the poisoned deal, and later events of the healthy one."""
        self.log.revise(self.poisoned, "p1", money("150", "250", "USD"), usd("150", "250"))
        self.log.pledge(self.healthy, "h1", "tata-motors", money("7", "9", "USD"), usd("7", "9"))
        self.log.pledge(self.healthy, "h2", "toyota", money("1", "2", "USD"), usd("1", "2"))


class ParkingCases(ReadModelFixtures):
    refuses_nul = False

    def project(self, projector: ReadModelProjector, envelopes: list[EventEnvelope]) -> Any:
        return projector.project(entries_of(envelopes), log_progress(envelopes))

    def assert_healthy_deal_applied(self, queries: ReadModelQueries, scenario: PoisonedLog
                                    ) -> None:
        deal = queries.deal(scenario.healthy)
        assert deal is not None
        assert sorted(p["pledge_id"] for p in deal["pledges"]) == ["h1", "h2"]
        recycling = {g["sector"]: g for g in queries.pledge_totals(TotalsDimension.SECTOR)}
        assert recycling["recycling"]["pledge_count"] == 2

    def assert_poisoned_deal_waits(self, engine: Engine, queries: ReadModelQueries,
                                   scenario: PoisonedLog, reason: str) -> None:
        parked = parked_rows(engine)
        assert [(p.aggregate_id, p.aggregate_version, p.state) for p in parked] == [
            (scenario.poisoned, 2, ParkedState.FAILED),
            (scenario.poisoned, 3, ParkedState.WAITING),
        ]
        assert reason in parked[0].reason
        assert parked[0].position == scenario.log.envelopes[4].position
        deal = queries.deal(scenario.poisoned)
        assert deal is not None and deal["version"] == 1 and deal["pledges"] == []

    # What is parked, and what goes on

    @pytest.mark.parametrize("when", [YEAR_ONE_IN_INDIA, LAST_SECOND_WEST])
    def test_an_overflowing_business_time_is_parked_and_its_deal_waits(
        self, engine, projector, queries, when
    ) -> None:
        scenario = PoisonedLog()
        scenario.poison_pledge()
        occurring_at(scenario.log, when)
        scenario.then_more()

        projected = self.project(projector, scenario.log.envelopes)

        self.assert_poisoned_deal_waits(engine, queries, scenario, "OverflowError")
        self.assert_healthy_deal_applied(queries, scenario)
        assert projected.applied == len(scenario.log.envelopes) - 2
        # Parked events count as handled: readers waiting for the last position are served.
        assert projector.position() == scenario.log.envelopes[-1].position

    def test_an_overflowing_firm_is_parked_and_other_firms_are_applied(
        self, engine, projector, queries
    ) -> None:
        log = EventLog()
        log.firm("dotnet-min", "IN")
        occurring_at(log, YEAR_ONE_IN_INDIA)
        log.firm("maruti-suzuki", "IN")

        self.project(projector, log.envelopes)

        assert [f["code"] for f in queries.firms().items] == ["maruti-suzuki"]
        assert [(p.event_type, p.state) for p in parked_rows(engine)] == [
            ("firm_registered", ParkedState.FAILED)]

    def test_nul_in_a_text_field(self, engine, projector, queries) -> None:
        log = EventLog()
        log.firm("attero", "IN")
        with_payload(log, name="Attero\x00Recycling")
        log.firm("lohum", "IN")

        self.project(projector, log.envelopes)

        codes = [f["code"] for f in queries.firms().items]
        if self.refuses_nul:
            assert codes == ["lohum"]
            [parked] = parked_rows(engine)
            assert "NUL" in parked.reason
            assert parked.envelope() == log.envelopes[0]  # kept whole, NUL escaped in JSON
        else:
            assert codes == ["attero", "lohum"]
            assert parked_rows(engine) == []

    def test_a_failing_handler_is_parked_and_the_fix_is_retried_in_order(
        self, engine, projector, queries, monkeypatch
    ) -> None:
        scenario = PoisonedLog()
        scenario.poison_pledge()
        scenario.then_more()
        applier = read_model_projector.HANDLERS[EventType.PLEDGE_MADE]

        def bug(batch: Any, envelope: EventEnvelope, event: Any, payload: Any) -> None:
            if envelope.aggregate_id == scenario.poisoned:
                raise KeyError("a bug in the pledge handler")
            applier(batch, envelope, event, payload)

        monkeypatch.setitem(read_model_projector.HANDLERS, EventType.PLEDGE_MADE, bug)
        self.project(projector, scenario.log.envelopes)
        self.assert_poisoned_deal_waits(engine, queries, scenario, "a bug in the pledge handler")
        self.assert_healthy_deal_applied(queries, scenario)

        # Still broken: the retry keeps both, the first with its new reason.
        outcomes = projector.retry_parked()
        assert [(o.event.aggregate_version, o.applied) for o in outcomes] == [(2, False),
                                                                             (3, False)]
        first, second = parked_rows(engine)
        assert (first.state, first.attempts) == (ParkedState.FAILED, 1)
        assert second.state == ParkedState.WAITING

        monkeypatch.undo()  # the fix
        outcomes = projector.retry_parked(second.id)  # any of the deal's ids retries the deal
        assert [(o.event.aggregate_version, o.applied) for o in outcomes] == [(2, True),
                                                                             (3, True)]
        assert parked_rows(engine) == []
        deal = queries.deal(scenario.poisoned)
        assert deal is not None and deal["version"] == 3
        assert [(p["pledge_id"], p["revisions"]) for p in deal["pledges"]] == [("p1", 1)]
        assert deal["pledges"][0]["amount"]["low"] == "150"

    def test_later_batches_of_a_parked_deal_wait_too(
        self, engine, projector, queries, monkeypatch
    ) -> None:
        scenario = PoisonedLog()
        scenario.poison_pledge()
        occurring_at(scenario.log, LAST_SECOND_WEST)
        self.project(projector, scenario.log.envelopes)
        scenario.then_more()

        for envelope in scenario.log.envelopes[-3:]:  # one batch each, the fast path
            self.project(projector, [envelope])
        self.project(projector, scenario.log.envelopes)  # redelivered: parked once, not twice

        self.assert_poisoned_deal_waits(engine, queries, scenario, "OverflowError")
        self.assert_healthy_deal_applied(queries, scenario)

    def test_one_poison_in_a_large_batch_parks_only_its_deal(
        self, engine, projector, queries
    ) -> None:
        log = EventLog()
        log.firm("toyota", "JP")
        deals = [log.deal("recycling", "joint_venture", ["toyota"]) for _ in range(300)]
        for index, deal_id in enumerate(deals):
            log.pledge(deal_id, "p1", "toyota", money("1", "1", "USD"), usd("1", "1"))
            if index == 150:
                occurring_at(log, YEAR_ONE_IN_INDIA)

        self.project(projector, log.envelopes)

        [parked] = parked_rows(engine)
        assert parked.aggregate_id == deals[150] and parked.aggregate_version == 2
        totals = queries.pledge_totals(TotalsDimension.SECTOR)
        assert totals[0]["pledge_count"] == 299

    def test_an_unreadable_entry_parks_its_aggregate_until_it_can_be_read(
        self, engine, projector, queries
    ) -> None:
        scenario = PoisonedLog()
        pledge = scenario.poison_pledge()
        scenario.then_more()
        entries = entries_of(scenario.log.envelopes)
        entries[4] = SourceEntry(LOG_SOURCE, 0, pledge.position, unreadable=Unreadable(
            reason="cannot translate: AttributeError: no amount_low", raw='{"stored": 1}',
            position=pledge.position, aggregate_id=scenario.poisoned, aggregate_version=2,
            event_type="dealregistry:PledgeMade.v1"))

        projector.project(entries, log_progress(scenario.log.envelopes))
        self.assert_poisoned_deal_waits(engine, queries, scenario, "no amount_low")
        self.assert_healthy_deal_applied(queries, scenario)

        # No envelope to apply yet: still parked.
        assert not projector.retry_parked()[0].applied
        # Read again from the log after a fix: applied, and the revision behind it.
        reread_positions: list[int | None] = []

        def reread(event: ParkedEvent) -> SourceEntry:
            reread_positions.append(event.position)
            return SourceEntry.of_log(pledge)

        assert all(o.applied for o in projector.retry_parked(reread=reread))
        assert reread_positions == [pledge.position]
        assert parked_rows(engine) == []
        deal = queries.deal(scenario.poisoned)
        assert deal is not None and deal["version"] == 3

    def test_a_record_of_no_known_aggregate_is_parked_and_holds_up_nothing(
        self, engine, projector, queries
    ) -> None:
        log = EventLog()
        log.firm("toyota", "JP")
        entries = [SourceEntry("topic", 0, 0, unreadable=Unreadable(
            reason="invalid envelope: value: Invalid JSON", raw="{not json")),
            *(SourceEntry("topic", 0, 1 + i, e) for i, e in enumerate(log.envelopes))]
        progress = [SourceProgress("topic", 0, len(entries) - 1, log.envelopes[-1].position)]

        projector.project(entries, progress)
        projector.project(entries, progress)  # redelivered

        [parked] = parked_rows(engine)
        assert (parked.aggregate_id, parked.raw, parked.offset) == (None, "{not json", 0)
        assert [f["code"] for f in queries.firms().items] == ["toyota"]
        assert projector.resume_offsets("topic") == {0: 1}

    def test_apply_stays_all_or_nothing_and_respects_parked_deals(
        self, engine, projector, queries
    ) -> None:
        scenario = PoisonedLog()
        scenario.poison_pledge()
        occurring_at(scenario.log, LAST_SECOND_WEST)
        with pytest.raises(Exception, match="date value out of range"):
            projector.apply(scenario.log.envelopes)
        assert parked_rows(engine) == [] and queries.deals().total == 0

        self.project(projector, scenario.log.envelopes)
        scenario.then_more()
        projector.apply(scenario.log.envelopes[-3:])
        self.assert_poisoned_deal_waits(engine, queries, scenario, "OverflowError")

    def test_the_parked_list_pages_and_counts(self, engine, projector) -> None:
        log = EventLog()
        for index in range(5):
            log.firm(f"firm-{index}", "JP")
            occurring_at(log, YEAR_ONE_IN_INDIA)
        self.project(projector, log.envelopes)

        assert projector.parked.count() == 5
        page = projector.parked.page(limit=2, offset=2)
        assert page.total == 5
        assert [e.position for e in page.items] == [3, 4]

    @staticmethod
    def deal_ids(engine: Engine) -> set[UUID]:
        return {p.aggregate_id for p in parked_rows(engine) if p.aggregate_id}

    def test_retrying_one_aggregate_leaves_the_others_parked(
        self, engine, projector, monkeypatch
    ) -> None:
        log = EventLog()
        log.firm("toyota", "JP")
        first, second = (log.deal("recycling", "joint_venture", ["toyota"]),
                         log.deal("recycling", "joint_venture", ["toyota"]))
        applier = read_model_projector.HANDLERS[EventType.DEAL_PROPOSED]

        def broken(*_: Any) -> None:
            raise ValueError("broken")

        monkeypatch.setitem(read_model_projector.HANDLERS, EventType.DEAL_PROPOSED, broken)
        self.project(projector, log.envelopes)
        assert self.deal_ids(engine) == {first, second}

        monkeypatch.setitem(read_model_projector.HANDLERS, EventType.DEAL_PROPOSED, applier)
        [target] = [p for p in parked_rows(engine) if p.aggregate_id == first]
        assert [o.applied for o in projector.retry_parked(target.id)] == [True]
        assert self.deal_ids(engine) == {second}

    def test_a_parked_event_counts_as_handled_for_the_position(
        self, engine, projector
    ) -> None:
        log = EventLog()
        log.firm("toyota", "JP")
        log.firm("dotnet-min", "IN")
        occurring_at(log, LAST_SECOND_WEST)  # the last event of the batch fails alone

        projected = self.project(projector, log.envelopes)

        assert projected.position == projector.position() == log.envelopes[-1].position
        assert projector.applied.value == log.envelopes[-1].position  # readers are told
        assert [p.position for p in parked_rows(engine)] == [log.envelopes[-1].position]

    def test_an_event_parked_while_a_retry_runs_is_applied_by_it(
        self, engine, projector, queries
    ) -> None:
        scenario = PoisonedLog()
        pledge = scenario.poison_pledge()
        scenario.log.revise(scenario.poisoned, "p1", money("150", "250", "USD"),
                            usd("150", "250"))
        entries = entries_of(scenario.log.envelopes)
        entries[4] = SourceEntry(LOG_SOURCE, 0, pledge.position, unreadable=Unreadable(
            reason="cannot translate", raw="{}", position=pledge.position,
            aggregate_id=scenario.poisoned, aggregate_version=2))
        projector.project(entries, log_progress(scenario.log.envelopes))
        scenario.log.withdraw(scenario.poisoned, "p1")
        live = ReadModelProjector(engine)  # the running feed, beside the operator's retry

        def reread(event: ParkedEvent) -> SourceEntry:
            # The feed delivers the deal's next event while the retry is under way: it waits
            # behind the events being retried.
            live.project(entries_of(scenario.log.envelopes[-1:]),
                         log_progress(scenario.log.envelopes[-1:]))
            return SourceEntry.of_log(pledge)

        outcomes = projector.retry_parked(reread=reread)

        assert [(o.event.aggregate_version, o.applied) for o in outcomes] == [
            (2, True), (3, True), (4, True)]
        assert parked_rows(engine) == []
        deal = queries.deal(scenario.poisoned)
        assert deal is not None and deal["version"] == 4
        assert deal["pledges"][0]["status"] == "withdrawn"
