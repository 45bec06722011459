"""The pure fold of deal histories: the projector's rules, a log bound, a business-time bound."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID, uuid4

from contracts.events_v1 import EventEnvelope
from services.projections.read_model.deal_history import (
    DealState,
    HistoryEvent,
    PastBound,
    counted_totals,
    fold_deals,
)
from services.projections.read_model.tables import TotalsDimension
from tests.unit.projections.envelopes import START, EventLog, money, usd


def history(log: EventLog) -> list[HistoryEvent]:
    return [HistoryEvent.of_envelope(e) for e in log.envelopes]


def at(day: int) -> datetime:
    return START + timedelta(days=day)


def occurred(log: EventLog, day: int) -> EventEnvelope:
    """Give the last recorded event a business time of START + `day` days."""
    last = log.envelopes[-1].model_copy(update={"occurred_at": at(day)})
    log.envelopes[-1] = last
    return last


def only(states: dict[UUID, DealState], deal_id: UUID) -> DealState:
    assert set(states) == {deal_id}
    return states[deal_id]


def test_agreements_agree_a_deal_and_cancellation_uncounts_its_pledges() -> None:
    log = EventLog()
    log.firm("toyota", "JP")
    deal = log.deal("battery_manufacturing", "joint_venture", ["toyota"])
    log.pledge(deal, "p1", "toyota", money("100", "400", "USD"), usd("100", "400"))
    log.form_joint_venture(deal, "Battery JV", {"toyota": "0.50"})
    agreed = only(fold_deals(history(log)), deal)
    assert agreed.deal["status"] == "agreed"
    assert agreed.deal["joint_ventures"][0]["equity"] == {"toyota": "0.50"}
    assert agreed.pledges["p1"]["counted"] is True

    log.cancel(deal)
    log.announce_facility(deal, "Gujarat cells")  # a cancelled deal is never revived
    log.pledge(deal, "p2", "toyota", money("1", "2", "USD"), usd("1", "2"))
    cancelled = only(fold_deals(history(log)), deal)
    assert cancelled.deal["status"] == "cancelled"
    assert cancelled.deal["cancellation"]["reason"] == "parties withdrew"
    assert len(cancelled.deal["facilities"]) == 1
    assert [p["counted"] for p in cancelled.pledges.values()] == [False, False]
    assert (cancelled.deal["version"], cancelled.deal["last_position"]) == (6, 7)
    assert counted_totals([cancelled], TotalsDimension.SECTOR) == {}


def test_totals_count_revised_amounts_exactly_and_skip_withdrawn_pledges() -> None:
    log = EventLog()
    log.firm("tata-motors", "IN")
    log.firm("suzuki", "JP")
    deal = log.deal("recycling", "processing_facility", ["tata-motors", "suzuki"])
    log.pledge(deal, "p1", "tata-motors", money("8600000000", "35000000000", "INR"),
               usd("100000000", "406976744.186047", "86"))
    log.pledge(deal, "p2", "tata-motors", money("0.1", "0.2", "USD"), usd("0.1", "0.2"))
    log.pledge(deal, "p3", "suzuki", money("5", "5", "JPY"), usd("0.03", "0.03", "150"))
    log.revise(deal, "p2", money("0.7", "0.9", "USD"), usd("0.7", "0.9"))
    log.withdraw(deal, "p3")
    states = fold_deals(history(log))

    by_firm = counted_totals(states.values(), TotalsDimension.FIRM)
    assert list(by_firm) == ["tata-motors"]
    assert [(e["currency"], e["pledge_count"], e["low"], e["usd_high"])
            for e in by_firm["tata-motors"]] == [
        ("INR", 1, Decimal("8600000000"), Decimal("406976744.186047")),
        ("USD", 1, Decimal("0.7"), Decimal("0.9")),
    ]
    by_country = counted_totals(states.values(), TotalsDimension.COUNTRY)
    assert list(by_country) == ["IN"]
    assert states[deal].pledges["p2"]["revisions"] == 1
    assert states[deal].pledges["p3"]["status"] == "withdrawn"


def test_a_log_bound_keeps_only_the_prefix() -> None:
    log = EventLog()
    log.firm("toyota", "JP")
    deal = log.deal("battery_manufacturing", "joint_venture", ["toyota"])
    log.pledge(deal, "p1", "toyota", money("100", "400", "USD"), usd("100", "400"))
    log.withdraw(deal, "p1")
    assert fold_deals(history(log), PastBound(position=1)) == {}
    before_withdrawal = only(fold_deals(history(log), PastBound(position=3)), deal)
    assert before_withdrawal.pledges["p1"]["status"] == "active"
    assert before_withdrawal.deal["version"] == 2
    # The bound is what is applied, whatever else the caller passes in.
    assert fold_deals(history(log), PastBound(position=3)) == \
        fold_deals(history(log)[:3])


def test_business_time_applies_what_occurred_by_then_in_log_order() -> None:
    log = EventLog()
    log.firm("toyota", "JP")
    deal = log.deal("battery_manufacturing", "joint_venture", ["toyota"])
    occurred(log, 1)
    log.pledge(deal, "p1", "toyota", money("100", "400", "USD"), usd("100", "400"))
    occurred(log, 10)
    # A correction recorded later, dated between the proposal and the pledge: the pledge
    # did not exist then, so on day 5 there is nothing to revise.
    log.revise(deal, "p1", money("90", "90", "USD"), usd("90", "90"))
    occurred(log, 5)
    log.withdraw(deal, "p1")
    occurred(log, 20)

    assert fold_deals(history(log), PastBound(4, at(0))) == {}
    day_5 = only(fold_deals(history(log), PastBound(4, at(5))), deal)
    assert day_5.pledges == {}
    assert (day_5.deal["version"], day_5.deal["updated_at"]) == (1, at(1))
    # Later, the pledge exists and the revision, recorded after it, applies to it.
    day_15 = only(fold_deals(history(log), PastBound(5, at(15))), deal)
    assert day_15.pledges["p1"]["low"] == Decimal("90")
    assert day_15.pledges["p1"]["revised_at"] == at(5)
    assert day_15.deal["version"] == 3
    day_20 = only(fold_deals(history(log), PastBound(5, at(20))), deal)
    assert day_20.pledges["p1"]["counted"] is False


def test_events_without_their_deal_are_skipped_not_errors() -> None:
    log = EventLog()
    log.firm("toyota", "JP")
    orphan = uuid4()
    log.pledge(orphan, "p1", "toyota", money("1", "2", "USD"), usd("1", "2"))
    log.revise(orphan, "p1", money("1", "2", "USD"), usd("1", "2"))
    log.cancel(orphan)
    log.sign_tech_transfer(orphan, "solid-state cells")
    assert fold_deals(history(log)) == {}


def test_envelope_and_row_give_the_same_event() -> None:
    log = EventLog()
    deal = log.deal("recycling", "processing_facility", ["suzuki"])
    envelope = log.envelopes[0]
    row = {
        "position": envelope.position, "deal_id": deal, "aggregate_version": 1,
        "type": "deal_proposed", "occurred_at": envelope.occurred_at,
        "payload": envelope.payload,
    }
    assert HistoryEvent.of_row(row) == HistoryEvent.of_envelope(envelope)
