"""How far the relay has published the log, kept beside the events.

It is written only after the broker acknowledged everything up to it: a crash in between
publishes those events again (at least once), never skips one.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Engine, MetaData, String, Table, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

relay_tables = MetaData()
relay_positions = Table(
    "dealreg_relay_position",
    relay_tables,
    Column("topic", String(255), primary_key=True),
    Column("position", BigInteger, nullable=False),
)


class PublishedPosition:
    def __init__(self, engine: Engine, topic: str) -> None:
        self.engine = engine
        self.topic = topic

    def create_schema(self) -> None:
        relay_tables.create_all(self.engine)

    def load(self) -> int:
        with self.engine.connect() as conn:
            stored = conn.execute(
                select(relay_positions.c.position).where(relay_positions.c.topic == self.topic)
            ).scalar()
        return int(stored or 0)

    def save(self, position: int) -> None:
        with self.engine.begin() as conn:
            insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            conn.execute(insert(relay_positions).values(topic=self.topic, position=0)
                         .on_conflict_do_nothing())
            conn.execute(update(relay_positions)
                         .where(relay_positions.c.topic == self.topic)
                         .values(position=position))
