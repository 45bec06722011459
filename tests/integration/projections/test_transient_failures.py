"""A lost database connection is the database's fault, not the event's: the projector's
connection is killed for real (pg_terminate_backend) in the middle of a batch, and the
read model recovers with nothing parked."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy import Engine

from services.embedded.projection_feed import EmbeddedProjectionFeed, FeedThread
from services.projections.projectors.failures import is_transient
from services.projections.projectors.parking import SourceEntry
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.progress import SourceProgress
from services.projections.read_model.queries import ReadModelQueries
from services.projections.read_model.tables import TotalsDimension, create_read_schema
from services.registry.adapters.event_store import open_event_store
from services.shared.database import create_sql_engine
from services.shared.settings import Settings, sqlalchemy_url
from tests.integration.connection_killer import ConnectionKiller
from tests.integration.poisoned_log import propose_deal_with_pledge, register_firm
from tests.unit.projections.envelopes import EventLog, money, usd

pytestmark = pytest.mark.integration


@pytest.fixture
def read_engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_sql_engine(sqlalchemy_url(postgres_url))
    create_read_schema(engine)
    yield engine
    engine.dispose()


def test_a_killed_connection_mid_batch_is_raised_as_transient_and_parks_nothing(
    read_engine: Engine, postgres_url: str
) -> None:
    log = EventLog()
    log.firm("toyota", "JP")
    deal = log.deal("recycling", "joint_venture", ["toyota"])
    log.pledge(deal, "p1", "toyota", money("1", "2", "USD"), usd("1", "2"))
    entries = [SourceEntry.of_log(e) for e in log.envelopes]
    progress = [SourceProgress.of_log(len(entries))]
    projector = ReadModelProjector(read_engine)
    # The batch's pledges going in (an INSERT or a COPY, by the number of rows).
    killer = ConnectionKiller(read_engine, postgres_url, "rm_pledges (", times=1)

    with pytest.raises(Exception) as lost:
        projector.project(entries, progress)
    assert killer.kills == 1 and is_transient(lost.value)
    assert projector.parked.count() == 0 and projector.position() == 0

    projector.project(entries, progress)  # the caller's retry, on a new connection
    assert projector.position() == len(entries) and projector.parked.count() == 0
    totals = ReadModelQueries(read_engine).pledge_totals(TotalsDimension.SECTOR)
    assert totals[0]["pledge_count"] == 1
    killer.remove()


def test_the_embedded_feed_rides_out_an_outage_and_parks_nothing(
    tmp_path: Path, read_engine: Engine, postgres_url: str
) -> None:
    store = open_event_store(Settings(data_dir=tmp_path))  # the log in SQLite, read model here
    for code in ("toyota", "suzuki", "tata"):
        register_firm(store, code)
    last = propose_deal_with_pledge(store, uuid4(), "tata")
    projector = ReadModelProjector(read_engine)
    # Every attempt to write a pledge loses its connection, until the outage ends: were
    # that taken for the event's fault, the pledge would be parked.
    killer = ConnectionKiller(read_engine, postgres_url, "rm_pledges (")
    feed = FeedThread(EmbeddedProjectionFeed(store, projector, poll_seconds=0.05))
    try:
        feed.start()  # its first catch-up loses the connection; the follower retries
        killer.wait_for_kills(4)
        assert projector.position() < last
        killer.end()
        deadline = time.monotonic() + 30
        while projector.position() < last and time.monotonic() < deadline:
            time.sleep(0.05)
        assert projector.position() == last
        assert projector.parked.count() == 0
        assert [f["code"] for f in ReadModelQueries(read_engine).firms().items] == [
            "suzuki", "tata", "toyota"]
    finally:
        feed.stop()
        killer.remove()
        store.close()
