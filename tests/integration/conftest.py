"""Fixtures shared by the integration tests of several folders."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.shared.settings import Settings
from tests.integration.log_wakeups import IndependentWriter


@pytest.fixture
def writer(settings: Settings) -> Iterator[IndependentWriter]:
    """A second event store writing to the test's database (see IndependentWriter); the
    requesting module gives `settings`."""
    independent = IndependentWriter(settings)
    yield independent
    independent.close()
