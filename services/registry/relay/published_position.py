"""How far the relay has published the log, kept beside the events, and how it numbers its
records in each partition (`contracts.stream_v1`).

The position is written only after the broker acknowledged everything up to it: a crash in
between publishes those events again (at least once), never skips one. With it are kept the
epoch, and per partition the next seq and the highest offset the broker acknowledged, from
which the relay sees a topic younger than its records (`RelayStream.younger_topic`).

Every save names the epoch it was published in and is dropped if another epoch started
meanwhile (`dealreg relay republish`, or a leader that found the topic lost): a page of the
old epoch must not move the new epoch's position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
    text,
    update,
)

from contracts.stream_v1 import FIRST_EPOCH, StreamStamp
from services.shared.database import dialect_insert, upgrade_columns

relay_tables = MetaData()
relay_positions = Table(
    "dealreg_relay_position",
    relay_tables,
    Column("topic", String(255), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("epoch", BigInteger, nullable=False, server_default=text(str(FIRST_EPOCH))),
    # How many partitions the topic had when the relay numbered its records; 0: not yet.
    Column("partitions", Integer, nullable=False, server_default=text("0")),
)
relay_partitions = Table(
    "dealreg_relay_partitions",
    relay_tables,
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("next_seq", BigInteger, nullable=False),
    # The highest offset the broker acknowledged for the relay in this partition; -1: none.
    Column("acked_offset", BigInteger, nullable=False),
)


@dataclass(frozen=True)
class TopicLoss:
    """The broker acknowledged `offset` in `partition`, at or below `before`, an offset it
    acknowledged earlier: the topic is younger than the relay's records."""

    partition: int
    offset: int
    before: int

    def describe(self) -> str:
        return (f"partition {self.partition} acknowledged offset {self.offset}, at or below "
                f"offset {self.before} it acknowledged before")


class TopicReshaped(Exception):
    """The topic has other partitions than those the relay numbered its records in: each
    deal's partition would change, and with it the order consumers rely on."""


@dataclass
class RelayStream:
    """The relay's numbering of its records, per partition, within one epoch, and the
    offsets the broker acknowledged: as saved, and as seen since."""

    epoch: int = FIRST_EPOCH
    partitions: int = 0  # the topic's partition count when numbered; 0: not known yet
    next_seq: dict[int, int] = field(default_factory=dict)
    acked: dict[int, int] = field(default_factory=dict)  # as saved
    seen_low: dict[int, int] = field(default_factory=dict)  # since loaded
    seen_high: dict[int, int] = field(default_factory=dict)

    def check_partitions(self, topic: str, partitions: list[int]) -> None:
        """Raise TopicReshaped unless the topic has as many partitions as when the relay
        numbered its records (the first time, remember how many it has)."""
        known = self.partitions
        if known and known != len(partitions):
            raise TopicReshaped(
                f"topic {topic} has {len(partitions)} partitions, the relay published to "
                f"{known}: recreate it with {known} partitions (`dealreg topics "
                f"create --partitions {known}`); publishing waits until then")
        self.partitions = len(partitions)

    def stamp(self, partition: int) -> StreamStamp:
        """The stamp of the next record sent to `partition`."""
        seq = self.next_seq.get(partition, 0)
        self.next_seq[partition] = seq + 1
        return StreamStamp(self.epoch, seq)

    def acknowledged(self, partition: int, offset: int) -> None:
        if offset < 0:
            return  # the client did not learn the offset (a duplicate it re-sent)
        self.seen_low[partition] = min(offset, self.seen_low.get(partition, offset))
        self.seen_high[partition] = max(offset, self.seen_high.get(partition, offset))

    def younger_topic(self) -> TopicLoss | None:
        """On the topic the relay wrote before, every new record gets an offset above all
        it acknowledged; a lower one proves the records behind it are gone."""
        for partition, low in sorted(self.seen_low.items()):
            before = self.acked.get(partition)
            if before is not None and low <= before:
                return TopicLoss(partition, low, before)
        return None

    def highest_acked(self) -> dict[int, int]:
        return {p: max(self.acked.get(p, -1), self.seen_high.get(p, -1))
                for p in {*self.acked, *self.seen_high}}


class PublishedPosition:
    def __init__(self, engine: Engine, topic: str) -> None:
        self.engine = engine
        self.topic = topic

    def create_schema(self) -> None:
        relay_tables.create_all(self.engine)
        upgrade_columns(self.engine, relay_positions)

    def load(self) -> int:
        with self.engine.connect() as conn:
            stored = conn.execute(
                select(relay_positions.c.position).where(relay_positions.c.topic == self.topic)
            ).scalar()
        return int(stored or 0)

    def load_stream(self) -> RelayStream:
        with self.engine.connect() as conn:
            saved = conn.execute(
                select(relay_positions.c.epoch, relay_positions.c.partitions)
                .where(relay_positions.c.topic == self.topic)
            ).first()
            rows = conn.execute(select(relay_partitions).where(
                relay_partitions.c.topic == self.topic)).all()
        return RelayStream(
            epoch=int(saved.epoch) if saved else FIRST_EPOCH,
            partitions=int(saved.partitions) if saved else 0,
            next_seq={row.partition: row.next_seq for row in rows},
            acked={row.partition: row.acked_offset for row in rows if row.acked_offset >= 0},
        )

    def save(self, position: int | None, stream: RelayStream | None = None) -> bool:
        """Record the published position (None: keep it) and the stream's numbering, in one
        transaction; False, saving nothing, if `stream`'s epoch is no longer the current."""
        with self.engine.begin() as conn:
            self._ensure_row(conn)
            guard = [relay_positions.c.topic == self.topic]
            if stream is not None:
                guard.append(relay_positions.c.epoch == stream.epoch)
            values: dict[str, Any] = {"position": position} if position is not None else \
                {"position": relay_positions.c.position}
            if stream is not None and stream.partitions:
                values["partitions"] = stream.partitions
            if conn.execute(update(relay_positions).where(*guard).values(values)).rowcount == 0:
                return False
            if stream is not None:
                self._write_partitions(conn, stream.next_seq, stream.highest_acked())
        return True

    def start_epoch(self, acked: dict[int, int] | None = None) -> int:
        """Begin a new epoch: the log is to be published again from its start, numbered from
        0 in every partition. `acked`: the offsets known on the topic now (by default the
        saved ones stay). Returns the new epoch."""
        with self.engine.begin() as conn:
            self._ensure_row(conn)
            current = int(conn.execute(select(relay_positions.c.epoch).where(
                relay_positions.c.topic == self.topic)).scalar_one())
            if acked is None:
                acked = {row.partition: row.acked_offset for row in conn.execute(
                    select(relay_partitions).where(relay_partitions.c.topic == self.topic))}
            conn.execute(update(relay_positions).where(relay_positions.c.topic == self.topic)
                         .values(position=0, epoch=current + 1))
            self._write_partitions(conn, {p: 0 for p in acked}, acked)
        return current + 1

    def _ensure_row(self, conn: Connection) -> None:
        conn.execute(dialect_insert(conn, relay_positions).values(
            topic=self.topic, position=0, epoch=FIRST_EPOCH).on_conflict_do_nothing())

    def _write_partitions(self, conn: Connection, next_seq: dict[int, int],
                          acked: dict[int, int]) -> None:
        conn.execute(delete(relay_partitions).where(relay_partitions.c.topic == self.topic))
        rows = [{"topic": self.topic, "partition": p, "next_seq": next_seq.get(p, 0),
                 "acked_offset": acked.get(p, -1)} for p in sorted({*next_seq, *acked})]
        if rows:
            conn.execute(insert(relay_partitions), rows)
