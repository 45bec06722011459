"""How a partition's progress row moves (`read_model.progress.record_progress`): offsets and
stamps only forward within an epoch, a new epoch's first records replace them, an older
epoch's late batch changes nothing but what stays true, a rewind sets them as given; and a
read model made before stamps existed gains their columns at start-up."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, inspect, select, text

from contracts.stream_v1 import StreamStamp
from services.projections.read_model.progress import (
    NOT_READ,
    SourceProgress,
    record_progress,
    stored_offsets,
    stored_stamps,
)
from services.projections.read_model.tables import (
    READ_MODEL_PROJECTOR,
    create_read_schema,
    source_progress,
)
from services.shared.database import create_sql_engine
from services.shared.settings import sqlalchemy_url

pytestmark = pytest.mark.integration
TOPIC = "events"


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_sql_engine(sqlalchemy_url(postgres_url))
    create_read_schema(engine)
    yield engine
    engine.dispose()


def record(engine: Engine, *items: SourceProgress) -> tuple[int, int, StreamStamp | None]:
    with engine.begin() as conn:
        for item in items:
            record_progress(conn, READ_MODEL_PROJECTOR, item)
        row = conn.execute(select(source_progress)).one()
    return row.offset, row.position, stored_stamps(engine, READ_MODEL_PROJECTOR, TOPIC).get(0)


def batch(offset: int, position: int, epoch: int, seq: int) -> SourceProgress:
    return SourceProgress(TOPIC, 0, offset, position, StreamStamp(epoch, seq))


def test_within_an_epoch_offsets_stamps_and_positions_only_move_forward(engine: Engine) -> None:
    assert record(engine, batch(40, 90, 1, 38)) == (40, 90, StreamStamp(1, 38))
    # A late batch of an instance that lost the partition in a rebalance.
    assert record(engine, batch(30, 70, 1, 29)) == (40, 90, StreamStamp(1, 38))


def test_a_new_epoch_replaces_offset_and_stamp_and_keeps_the_position(engine: Engine) -> None:
    record(engine, batch(400, 900, 1, 390))
    # The relay's new epoch, read on a recreated topic at lower offsets.
    assert record(engine, batch(12, 150, 2, 10)) == (12, 900, StreamStamp(2, 10))
    # The old epoch's late batch: nothing it says about offsets or stamps is current.
    assert record(engine, batch(401, 950, 1, 391)) == (12, 950, StreamStamp(2, 10))


def test_a_rewind_sets_offset_and_stamp_as_given(engine: Engine) -> None:
    record(engine, batch(400, 900, 1, 390))
    rewound = record(engine, SourceProgress.rewind(TOPIC, 0, StreamStamp(2, -1)))
    assert rewound == (NOT_READ, 900, StreamStamp(2, -1))
    assert stored_offsets(engine, READ_MODEL_PROJECTOR, TOPIC) == {}  # read from the start
    assert record(engine, batch(3, 20, 2, 0)) == (3, 900, StreamStamp(2, 0))


def test_a_read_model_from_before_stamps_gains_their_columns(postgres_url: str) -> None:
    engine = create_sql_engine(sqlalchemy_url(postgres_url))
    try:
        with engine.begin() as conn:
            conn.execute(text(
                'CREATE TABLE rm_source_progress (projector VARCHAR(100), source VARCHAR(255), '
                '"partition" INTEGER, "offset" BIGINT NOT NULL, position BIGINT NOT NULL, '
                'caught_up BOOLEAN NOT NULL, PRIMARY KEY (projector, source, "partition"))'))
            conn.execute(text("INSERT INTO rm_source_progress VALUES "
                              "('read_model', 'events', 0, 41, 77, true)"))
        create_read_schema(engine)
        columns = {c["name"] for c in inspect(engine).get_columns("rm_source_progress")}
        assert {"epoch", "seq"} <= columns and "caught_up" not in columns
        assert stored_offsets(engine, READ_MODEL_PROJECTOR, TOPIC) == {0: 41}
        assert stored_stamps(engine, READ_MODEL_PROJECTOR, TOPIC) == {}  # none yet
        assert record(engine, batch(42, 80, 1, 0)) == (42, 80, StreamStamp(1, 0))
    finally:
        engine.dispose()
