"""The projector's assertions on a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine

from tests.unit.projections.projector_cases import ProjectorCases


class TestSqliteReadModelProjector(ProjectorCases):
    @pytest.fixture
    def engine(self, tmp_path: Path) -> Iterator[Engine]:
        engine = create_engine(f"sqlite:///{tmp_path / 'read.db'}")
        yield engine
        engine.dispose()
