"""PostgreSQL LISTEN/NOTIFY wake-ups: a write by another process wakes a follower of the log
within milliseconds, and the listener outlives its backend."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.registry.adapters.event_store import DealRegistryStore, open_event_store
from services.registry.adapters.log_notifications import LogNotifications, listen_for_appends
from services.shared.settings import Settings
from tests.integration.log_wakeups import (
    PROMPT_SECONDS,
    IndependentWriter,
    seconds_until,
    terminate_backend,
    wait_for_listener,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(tmp_path: Path, postgres_url: str) -> Settings:
    return Settings(data_dir=tmp_path, database_url=postgres_url)


@pytest.fixture
def follower_store(settings: Settings) -> Iterator[DealRegistryStore]:
    store = open_event_store(settings)
    yield store
    store.close()


@pytest.fixture
def listening(follower_store: DealRegistryStore) -> Iterator[tuple[LogNotifications,
                                                                    threading.Event]]:
    appended = threading.Event()
    listener = listen_for_appends(follower_store, appended.set)
    assert listener is not None
    yield listener, appended
    listener.stop()


def test_sqlite_has_no_listener(tmp_path: Path) -> None:
    store = open_event_store(Settings(data_dir=tmp_path))
    try:
        assert listen_for_appends(store, lambda: None) is None
    finally:
        store.close()


def test_a_write_by_another_store_notifies_the_listener(
    settings: Settings, writer: IndependentWriter,
    listening: tuple[LogNotifications, threading.Event],
) -> None:
    listener, appended = listening
    wait_for_listener(settings.database_url or "")
    assert appended.wait(5), "a new LISTEN starts with a wake-up"
    appended.clear()
    assert not appended.wait(0.3), "woken with nothing written"
    writer.register_firm()
    assert seconds_until(appended.is_set, PROMPT_SECONDS) < PROMPT_SECONDS


def test_the_listener_reconnects_after_its_backend_is_terminated(
    settings: Settings, writer: IndependentWriter,
    listening: tuple[LogNotifications, threading.Event],
) -> None:
    listener, appended = listening
    url = settings.database_url or ""
    first = wait_for_listener(url)
    assert appended.wait(5)
    appended.clear()
    terminate_backend(url, first)
    wait_for_listener(url, other_than={first})
    assert appended.wait(10), "listening again starts with a wake-up"
    assert listener.connections == 2
    appended.clear()
    assert not appended.wait(0.3), "woken with nothing written"
    writer.register_firm()
    assert seconds_until(appended.is_set, PROMPT_SECONDS) < PROMPT_SECONDS
