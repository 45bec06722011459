"""The same parking assertions on SQLite and on a real PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine

from services.shared.settings import sqlalchemy_url
from tests.unit.projections.parking_cases import ParkingCases

pytestmark = pytest.mark.integration


class TestSqliteParking(ParkingCases):
    refuses_nul = False  # SQLite stores NUL in text as it is

    @pytest.fixture
    def engine(self, tmp_path: Path) -> Iterator[Engine]:
        engine = create_engine(f"sqlite:///{tmp_path / 'read.db'}")
        yield engine
        engine.dispose()


class TestPostgresParking(ParkingCases):
    refuses_nul = True  # "PostgreSQL text fields cannot contain NUL (0x00) bytes"

    @pytest.fixture
    def engine(self, postgres_url: str) -> Iterator[Engine]:
        engine = create_engine(sqlalchemy_url(postgres_url))
        yield engine
        engine.dispose()
