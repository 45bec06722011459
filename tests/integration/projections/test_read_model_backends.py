"""The same projector assertions on SQLite and on a real PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine

from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.queries import ReadModelQueries
from services.projections.read_model.tables import TotalsDimension, create_read_schema
from services.shared.settings import sqlalchemy_url
from tests.unit.projections.projector_cases import ProjectorCases, Scenario

pytestmark = pytest.mark.integration


class TestSqliteReadModel(ProjectorCases):
    @pytest.fixture
    def engine(self, tmp_path: Path) -> Iterator[Engine]:
        engine = create_engine(f"sqlite:///{tmp_path / 'read.db'}")
        yield engine
        engine.dispose()


class TestPostgresReadModel(ProjectorCases):
    @pytest.fixture
    def engine(self, postgres_url: str) -> Iterator[Engine]:
        engine = create_engine(sqlalchemy_url(postgres_url))
        yield engine
        engine.dispose()

    def test_concurrent_projectors_apply_each_event_once(self, engine: Engine) -> None:
        create_read_schema(engine)
        scenario = Scenario()
        projectors = [ReadModelProjector(engine) for _ in range(4)]

        with ThreadPoolExecutor(max_workers=4) as pool:
            reached = list(pool.map(lambda p: p.apply(scenario.log.envelopes), projectors))

        assert reached == [len(scenario.log.envelopes)] * 4
        queries = ReadModelQueries(engine)
        assert queries.deals().total == 2
        by_sector = queries.pledge_totals(TotalsDimension.SECTOR)
        battery = {g["sector"]: g for g in by_sector}["battery_manufacturing"]
        assert battery["pledge_count"] == 2
