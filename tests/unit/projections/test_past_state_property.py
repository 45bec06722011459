"""Property: the read model as of log position P equals a read model built from the first P
events alone, for random valid histories of firms, deals and pledges."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, event

from contracts.events_v1 import EventEnvelope
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.deal_history import PastBound
from services.projections.read_model.queries import ReadModelQueries
from services.projections.read_model.tables import TotalsDimension, create_read_schema
from tests.unit.projections.envelopes import EventLog, money, usd

FIRMS = (("toyota", "JP"), ("tata-motors", "IN"), ("suzuki", "JP"), ("mitsui-co", "JP"))
SECTORS = ("battery_manufacturing", "recycling", "mineral_processing")
CURRENCIES = (("USD", "1"), ("INR", "86"), ("JPY", "150"))
KINDS = ("firm", "deal", "pledge", "pledge", "revise", "withdraw", "cancel", "agreement")

step = st.tuples(
    st.sampled_from(KINDS),
    st.integers(0, 50),  # picks a firm, deal or pledge among those that exist
    st.integers(0, 50),
    st.integers(1, 10**9),  # low amount, in hundredths
    st.integers(0, 10**9),  # high minus low
)


class History:
    """Turns random steps into a valid log: events only on live deals and active pledges."""

    def __init__(self) -> None:
        self.log = EventLog()
        self.firms: list[str] = []
        self.deals: list[UUID] = []
        self.live: list[UUID] = []
        self.active: list[tuple[UUID, str]] = []
        self.pledge_count = 0

    def apply(self, kind: str, a: int, b: int, low: int, spread: int) -> None:
        if kind == "firm" and len(self.firms) < len(FIRMS):
            code, country = FIRMS[len(self.firms)]
            self.log.firm(code, country)
            self.firms.append(code)
        elif kind == "deal" and self.firms:
            deal = self.log.deal(SECTORS[a % len(SECTORS)], "joint_venture",
                                 [self.firms[b % len(self.firms)]])
            self.deals.append(deal)
            self.live.append(deal)
        elif kind == "pledge" and self.live and self.firms:
            deal = self.live[a % len(self.live)]
            self.pledge_count += 1
            pledge_id = f"p{self.pledge_count}"
            self.log.pledge(deal, pledge_id, self.firms[b % len(self.firms)],
                            *self.amounts(b, low, spread))
            self.active.append((deal, pledge_id))
        elif kind == "revise" and self.active:
            deal, pledge_id = self.active[a % len(self.active)]
            self.log.revise(deal, pledge_id, *self.amounts(b, low, spread))
        elif kind == "withdraw" and self.active:
            deal, pledge_id = self.active.pop(a % len(self.active))
            self.log.withdraw(deal, pledge_id)
        elif kind == "cancel" and self.live:
            deal = self.live.pop(a % len(self.live))
            self.log.cancel(deal)
            self.active = [(d, p) for d, p in self.active if d != deal]
        elif kind == "agreement" and self.live:
            deal = self.live[a % len(self.live)]
            [lambda: self.log.form_joint_venture(deal, "JV", {"toyota": "0.5"}),
             lambda: self.log.announce_facility(deal, "Plant"),
             lambda: self.log.sign_tech_transfer(deal, "cells")][b % 3]()

    @staticmethod
    def amounts(b: int, low: int, spread: int) -> tuple[dict[str, str], dict[str, str]]:
        currency, rate = CURRENCIES[b % len(CURRENCIES)]
        low_text, high_text = f"{low / 100:.2f}", f"{(low + spread) / 100:.2f}"
        usd_low, usd_high = f"{low / 10_000:.4f}", f"{(low + spread) / 10_000:.4f}"
        return money(low_text, high_text, currency), usd(usd_low, usd_high, rate)


@contextmanager
def read_model(folder: Path, name: str, envelopes: list[EventEnvelope]
               ) -> Iterator[ReadModelQueries]:
    engine = create_engine(f"sqlite:///{folder / name}")
    # Throwaway files: waiting for the disk would make most of the test's time.
    event.listen(engine, "connect", lambda conn, _: conn.execute("PRAGMA synchronous=OFF"))
    try:
        create_read_schema(engine)
        if envelopes:
            ReadModelProjector(engine).apply(envelopes)
        yield ReadModelQueries(engine)
    finally:
        engine.dispose()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=40), cuts=st.lists(st.floats(0, 1),
                                                                    min_size=1, max_size=3))
def test_as_of_position_equals_the_read_model_of_the_prefix(
    steps: list[tuple[str, int, int, int, int]], cuts: list[float]
) -> None:
    history = History()
    for item in steps:
        history.apply(*item)
    envelopes = history.log.envelopes
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with read_model(folder, "full.db", envelopes) as full:
            for index, cut in enumerate(cuts):
                position = round(cut * len(envelopes))
                bound = PastBound(position)
                with read_model(folder, f"prefix-{index}.db", envelopes[:position]) as prefix:
                    for deal_id in history.deals:
                        assert full.deal_as_of(deal_id, bound) == prefix.deal(deal_id)
                    for dimension in TotalsDimension:
                        assert full.pledge_totals_as_of(dimension, bound) == \
                            prefix.pledge_totals(dimension)
