"""The projector's cheaper writes (`statements.execute_many`: the driver's executemany on
SQLite, COPY on PostgreSQL) store every value exactly as SQLAlchemy's own insert would, on
both backends and in a rebuild's schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.tables import create_read_schema, read_model
from services.shared.database import create_sql_engine
from services.shared.settings import sqlalchemy_url
from tests.unit.projections.envelopes import money, usd
from tests.unit.projections.projector_cases import Scenario

pytestmark = pytest.mark.integration


def stored(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every read-model table's rows as the driver hands them back (no type processing)."""
    found = {}
    with engine.connect() as conn:
        for table in read_model.sorted_tables:
            key = ", ".join(f'"{c.name}"' for c in table.primary_key.columns)
            name = conn.dialect.identifier_preparer.format_table(table)
            translate = conn.get_execution_options().get("schema_translate_map") or {}
            if translate.get(None):
                name = f'"{translate[None]}".{name}'
            found[table.name] = [tuple(row) for row in conn.exec_driver_sql(
                f"SELECT * FROM {name} ORDER BY {key}")]
    return found


def copied_by_sqlalchemy(source: Engine, target: Engine) -> None:
    """Every row of `source`, read as Python values and inserted into `target` by
    SQLAlchemy's own insert."""
    with source.connect() as reading, target.begin() as writing:
        for table in read_model.sorted_tables:
            rows = [dict(row._mapping) for row in reading.execute(select(table))]
            if rows:
                writing.execute(insert(table), rows)


def project_everything(engine: Engine) -> None:
    """Every kind of row: firms, a meeting, deals with agreements, pledges revised,
    withdrawn and cancelled, totals and ledger rows, in two batches."""
    scenario = Scenario()
    log = scenario.log
    first = len(log.envelopes)
    log.revise(scenario.battery, "p1", money("9000000000", "36000000000", "INR"),
               usd("100000000", "400000000", "90"))
    log.form_joint_venture(scenario.battery, "Cells JV", {"toyota": "0.5"})
    log.announce_facility(scenario.recycling, "Plant 1")
    log.withdraw(scenario.battery, "p2")
    log.cancel(scenario.recycling)
    projector = ReadModelProjector(engine)
    projector.apply(log.envelopes[:first])
    projector.apply(log.envelopes[first:])


def assert_same_as_sqlalchemy(projected: Engine, copied: Engine) -> None:
    # The plain side first: a translated schema's creation looks at the plain one's columns,
    # as a rebuild's does beside the live tables.
    create_read_schema(copied)
    create_read_schema(projected)
    project_everything(projected)
    copied_by_sqlalchemy(projected, copied)
    ours, theirs = stored(projected), stored(copied)
    assert any(ours.values())
    assert ours == theirs


def test_sqlite_rows_are_stored_as_sqlalchemy_stores_them(tmp_path: Path) -> None:
    projected = create_sql_engine(f"sqlite:///{tmp_path / 'projected.db'}")
    copied = create_sql_engine(f"sqlite:///{tmp_path / 'copied.db'}")
    try:
        assert_same_as_sqlalchemy(projected, copied)
    finally:
        projected.dispose()
        copied.dispose()


@pytest.fixture
def postgres(postgres_url: str) -> Iterator[Engine]:
    engine = create_sql_engine(sqlalchemy_url(postgres_url))
    yield engine
    engine.dispose()


def test_postgres_rows_are_stored_as_sqlalchemy_stores_them(postgres: Engine) -> None:
    with postgres.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA fresh")
    # The projected side in a schema of its own, as a rebuild writes its fresh tables.
    projected = postgres.execution_options(schema_translate_map={None: "fresh"})
    assert_same_as_sqlalchemy(projected, postgres)
