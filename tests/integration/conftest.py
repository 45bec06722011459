"""Fixtures shared by the integration tests of several folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.demo.scenario import scenario
from services.shared.settings import Settings
from tests.integration.log_wakeups import IndependentWriter
from tests.integration.test_http_api import Registry


@pytest.fixture
def writer(settings: Settings) -> Iterator[IndependentWriter]:
    """A second event store writing to the test's database (see IndependentWriter); the
    requesting module gives `settings`."""
    independent = IndependentWriter(settings)
    yield independent
    independent.close()


@pytest.fixture
def scenario_registry(tmp_path: Path) -> Iterator[Registry]:
    """The embedded app (SQLite) with the article's scenario recorded and projected."""
    running = Registry(Settings(data_dir=tmp_path / "data"))
    for body in scenario():
        assert running.post(body).status_code == 201
    running.get("/v1/deals", min_position=running.head())
    yield running
    running.close()
