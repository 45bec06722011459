"""The embedded projection feed on PostgreSQL sees writes made by any process at once: its
poll is set to 30 s, so only a LISTEN/NOTIFY wake-up can make them visible within 2 s."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.embedded.projection_feed import EmbeddedProjectionFeed, FeedProcess, FeedThread
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.progress import AppliedPosition
from services.projections.read_model.queries import ReadModelQueries
from services.projections.read_model.tables import create_read_schema
from services.registry.adapters.event_store import open_event_store
from services.shared.database import create_sql_engine
from services.shared.settings import Settings
from tests.integration.log_wakeups import (
    PROMPT_SECONDS,
    SLOW_POLL_SECONDS,
    IndependentWriter,
    seconds_until,
    terminate_backend,
    wait_for_listener,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(tmp_path: Path, postgres_url: str) -> Settings:
    return Settings(data_dir=tmp_path, database_url=postgres_url,
                    projection_poll_seconds=SLOW_POLL_SECONDS)


@pytest.fixture
def queries(settings: Settings) -> Iterator[ReadModelQueries]:
    engine = create_sql_engine(settings.read_model_url())
    create_read_schema(engine)
    yield ReadModelQueries(engine)
    engine.dispose()


@pytest.fixture
def feed_thread(settings: Settings, queries: ReadModelQueries) -> Iterator[FeedThread]:
    store = open_event_store(settings)
    thread = FeedThread(EmbeddedProjectionFeed(store, ReadModelProjector(queries.engine),
                                               poll_seconds=settings.projection_poll_seconds))
    thread.start()
    yield thread
    thread.stop()
    store.close()


def visible_promptly(writer: IndependentWriter, queries: ReadModelQueries) -> float:
    position = writer.register_firm()
    return seconds_until(lambda: queries.position() >= position, PROMPT_SECONDS)


def test_a_write_by_another_process_wakes_the_feed_thread(
    settings: Settings, feed_thread: FeedThread, writer: IndependentWriter,
    queries: ReadModelQueries,
) -> None:
    wait_for_listener(settings.database_url or "")
    for _ in range(3):
        assert visible_promptly(writer, queries) < PROMPT_SECONDS


def test_the_feed_still_wakes_after_its_listener_backend_is_terminated(
    settings: Settings, feed_thread: FeedThread, writer: IndependentWriter,
    queries: ReadModelQueries,
) -> None:
    url = settings.database_url or ""
    first = wait_for_listener(url)
    terminate_backend(url, first)
    wait_for_listener(url, other_than={first})
    assert visible_promptly(writer, queries) < PROMPT_SECONDS


def test_a_write_by_another_process_wakes_the_feed_process(
    settings: Settings, writer: IndependentWriter, queries: ReadModelQueries,
) -> None:
    applied = AppliedPosition()
    feed = FeedProcess(settings, applied)
    feed.start()
    try:
        wait_for_listener(settings.database_url or "")
        for _ in range(3):
            assert visible_promptly(writer, queries) < PROMPT_SECONDS
            # The feed process shares what it committed with this one's readers.
            assert applied.value == queries.position() > 0
    finally:
        feed.stop()
