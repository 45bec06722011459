"""Envelopes of both schema versions on one topic, read by the consumer and projected, on
SQLite and PostgreSQL: v1 pledge events (published before event schema v2) as pledges that
state no instrument, v2 ones with their instrument and tranches, revisions of either kind;
now, in the past (business and recorded time, a deal's version), and in the instrument
totals, which the ledger and the history fold agree on."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import pytest
from kafka import TopicPartition
from sqlalchemy import Engine, create_engine, select

from contracts import events_v1, events_v2
from contracts.events_v1 import EventType
from services.projections.consumer.kafka_consumer import entry_of
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.deal_history import PastBound
from services.projections.read_model.progress import SourceProgress
from services.projections.read_model.queries import Interval, ReadModelQueries, buckets
from services.projections.read_model.tables import (
    TotalsDimension,
    create_read_schema,
    deal_events,
    pledges,
)
from services.shared.settings import sqlalchemy_url

pytestmark = pytest.mark.integration

TOPIC = "t.versions"
START = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'read.db'}" if request.param == "sqlite" \
        else sqlalchemy_url(request.getfixturevalue("postgres_url"))
    engine = create_engine(url)
    create_read_schema(engine)
    yield engine
    engine.dispose()


class Topic:
    """Records as the relay publishes them (the envelope's JSON), one partition, each
    envelope's payload at the version it names; a v1 one by the v1 model, as before v2."""

    def __init__(self) -> None:
        self.records: list[Any] = []
        self.versions: dict[UUID, int] = {}

    def publish(self, type_: EventType, aggregate: UUID, payload: dict[str, Any],
                version: int, day: int) -> int:
        self.versions[aggregate] = self.versions.get(aggregate, 0) + 1
        position = len(self.records) + 1
        fields: dict[str, Any] = dict(
            event_id=f"evt-{position}", type=type_, aggregate_id=aggregate,
            aggregate_version=self.versions[aggregate], position=position,
            occurred_at=START + day * DAY, recorded_at=START + timedelta(days=40, seconds=position),
            recorded_by="partner", previous_hash="0" * 64, hash=f"{position:064x}",
            payload=payload)
        model = events_v1.EventEnvelope if version == 1 else events_v2.EventEnvelope
        envelope = model(**fields, schema_version=version)  # type: ignore[arg-type]
        self.records.append(SimpleNamespace(offset=position - 1, key=str(aggregate).encode(),
                                            value=envelope.model_dump_json().encode(),
                                            headers=[]))
        return position

    def entries(self) -> list[Any]:
        """What the consumer makes of the records (`entry_of`, as it polls them)."""
        return [entry_of(TopicPartition(TOPIC, 0), record) for record in self.records]


def money(low: str, high: str) -> dict[str, Any]:
    return {"amount": {"low": low, "high": high, "currency": "USD"},
            "usd": {"low": low, "high": high, "units_per_usd": "1", "rate_source": "t"}}


def mixed_topic() -> tuple[Topic, UUID]:
    """A deal's history across the upgrade: before it, a v1 pledge (`old`) and its v1
    revision; after it, a v2 pledge (`new`, equity in two tranches), a v2 revision of `new`
    (debt, one tranche) and one of `old` (now a grant)."""
    topic, deal = Topic(), uuid4()
    for code, country in (("toyota", "JP"), ("tata-motors", "IN")):
        topic.publish(EventType.FIRM_REGISTERED, uuid4(), {
            "code": code, "name": code.title(), "country": country, "kind": "automaker"}, 1, 0)
    topic.publish(EventType.DEAL_PROPOSED, deal, {
        "title": "Cells", "format": "joint_venture", "sector": "battery_manufacturing",
        "parties": ["toyota", "tata-motors"]}, 1, 0)
    topic.publish(EventType.PLEDGE_MADE, deal, {
        "pledge_id": "old", "firm": "toyota", "firm_country": "JP", **money("100", "200")}, 1, 1)
    topic.publish(EventType.PLEDGE_REVISED, deal, {
        "pledge_id": "old", **money("100", "300"), "reason": "v1 revision"}, 1, 2)
    topic.publish(EventType.PLEDGE_MADE, deal, {
        "pledge_id": "new", "firm": "tata-motors", "firm_country": "IN", **money("50", "90"),
        "instrument": "equity", "tranches": [{"due_date": "2026-03-31", "amount": "40"},
                                             {"due_date": "2027-03-31", "amount": "50"}]}, 2, 3)
    topic.publish(EventType.PLEDGE_REVISED, deal, {
        "pledge_id": "new", **money("50", "90"), "reason": "now a loan",
        "instrument": "debt", "tranches": [{"due_date": "2026-09-30", "amount": "90"}]}, 2, 4)
    topic.publish(EventType.PLEDGE_REVISED, deal, {
        "pledge_id": "old", **money("100", "300"), "reason": "a grant after all",
        "instrument": "grant", "tranches": []}, 2, 5)
    return topic, deal


def project(engine: Engine, topic: Topic) -> ReadModelQueries:
    entries = topic.entries()
    assert all(entry.envelope is not None for entry in entries), \
        [entry.unreadable for entry in entries if entry.unreadable]
    assert [entry.envelope.schema_version for entry in entries] == [1, 1, 1, 1, 1, 2, 2, 2]
    last = entries[-1]
    done = ReadModelProjector(engine).project(
        entries, [SourceProgress(TOPIC, 0, last.offset, last.envelope.position)])
    assert not done.parked, [p.reason for p in done.parked]
    return ReadModelQueries(engine)


def terms(deal: dict[str, Any]) -> dict[str, tuple[Any, list[dict[str, str]]]]:
    return {p["pledge_id"]: (p["instrument"], p["tranches"]) for p in deal["pledges"]}


def test_v1_and_v2_envelopes_both_project(engine: Engine) -> None:
    topic, deal_id = mixed_topic()
    queries = project(engine, topic)
    deal = queries.deal(deal_id)
    assert deal is not None
    assert terms(deal) == {"old": ("grant", []),
                           "new": ("debt", [{"due_date": "2026-09-30", "amount": "90"}])}
    amounts = {p["pledge_id"]: p["amount"]["high"] for p in deal["pledges"]}
    assert amounts == {"old": "300", "new": "90"}
    with engine.connect() as conn:
        stored = {row.pledge_id: (row.instrument, row.tranches)
                  for row in conn.execute(select(pledges))}
        history = [row.payload for row in conn.execute(
            select(deal_events).order_by(deal_events.c.position))]
    assert stored["old"] == ("grant", [])
    # Each event kept in its type's newest shape: the v1 pledge with no instrument.
    assert (history[1]["instrument"], history[1]["tranches"]) == (None, [])
    assert history[3]["tranches"] == [{"due_date": "2026-03-31", "amount": "40"},
                                      {"due_date": "2027-03-31", "amount": "50"}]


def test_past_states_give_the_terms_as_they_stood(engine: Engine) -> None:
    topic, deal_id = mixed_topic()
    queries = project(engine, topic)

    def as_of(day: int) -> dict[str, Any]:
        until = datetime.combine((START + day * DAY).date(), datetime.max.time(), tzinfo=UTC)
        found = queries.deal_as_of(deal_id, PastBound(len(topic.records), until))
        assert found is not None
        return terms(found)

    assert as_of(2) == {"old": (None, [])}
    assert as_of(3) == {"old": (None, []), "new": ("equity", [
        {"due_date": "2026-03-31", "amount": "40"}, {"due_date": "2027-03-31", "amount": "50"}])}
    assert as_of(4)["new"] == ("debt", [{"due_date": "2026-09-30", "amount": "90"}])
    assert as_of(5)["old"] == ("grant", [])
    # Recorded time: the log up to the v2 pledge.
    recorded = queries.deal_as_of(deal_id, PastBound(6))
    assert recorded is not None and terms(recorded)["new"][0] == "equity"


def instruments(items: list[dict[str, Any]]) -> dict[str, tuple[int, str]]:
    return {item["instrument"]: (item["pledge_count"], item["usd"]["high"]) for item in items}


def test_totals_by_instrument_now_and_then(engine: Engine) -> None:
    topic, _ = mixed_topic()
    queries = project(engine, topic)
    now = queries.pledge_totals(TotalsDimension.INSTRUMENT)
    assert instruments(now) == {"debt": (1, "90"), "grant": (1, "300")}
    position = queries.position()
    assert position == len(topic.records)
    for day, expected in ((1, {"not_stated": (1, "200")}),
                          (3, {"not_stated": (1, "300"), "equity": (1, "90")}),
                          (4, {"not_stated": (1, "300"), "debt": (1, "90")}),
                          (5, {"grant": (1, "300"), "debt": (1, "90")})):
        on = (START + day * DAY).date()
        until = datetime.combine(on, datetime.max.time(), tzinfo=UTC)
        folded = queries.pledge_totals_as_of(TotalsDimension.INSTRUMENT,
                                             PastBound(position, until))
        assert instruments(folded) == expected, day
        assert queries.pledge_totals_on(TotalsDimension.INSTRUMENT, on, position) == folded
    spans = buckets(date(2025, 6, 1), date(2025, 6, 30), Interval.DAY)
    items, total = queries.pledges_over_time(TotalsDimension.INSTRUMENT, spans, position,
                                             100, 0)
    assert total == 4
    assert {item["instrument"] for item in items} == {"debt", "equity", "grant", "not_stated"}
