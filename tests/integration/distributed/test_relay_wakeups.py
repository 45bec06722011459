"""The relay on PostgreSQL publishes a write made by any registry process at once: its poll is
set to 30 s, so only a LISTEN/NOTIFY wake-up can get the event to the broker within 2 s."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.registry.relay.relay import Relay
from services.registry.relay.service import build_relay
from services.shared.settings import Settings
from tests.integration.log_wakeups import (
    PROMPT_SECONDS,
    SLOW_POLL_SECONDS,
    IndependentWriter,
    seconds_until,
    terminate_backend,
    wait_for_listener,
)
from tests.kafka_broker import KafkaTopic

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(tmp_path: Path, postgres_url: str, kafka_topic: KafkaTopic) -> Settings:
    return Settings(
        data_dir=tmp_path, database_url=postgres_url, kafka_bootstrap=kafka_topic.bootstrap,
        kafka_topic=kafka_topic.name, kafka_dlq_topic=kafka_topic.dlq_name,
        kafka_group_id=f"group-{uuid.uuid4().hex[:8]}", relay_poll_seconds=SLOW_POLL_SECONDS,
        relay_max_backoff_seconds=1,
    )


@pytest.fixture
def running_relay(settings: Settings) -> Iterator[Relay]:
    relay = build_relay(settings)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    seconds_until(lambda: relay.status.leading, 10)
    yield relay
    started = time.monotonic()
    stop.set()
    thread.join(timeout=20)
    assert not thread.is_alive()
    # A 30 s safety-net poll must not hold up shutdown.
    assert time.monotonic() - started < 5
    relay.store.close()


def published_promptly(writer: IndependentWriter, relay: Relay) -> float:
    position = writer.register_firm()
    return seconds_until(lambda: relay.status.published_position >= position, PROMPT_SECONDS)


def test_a_write_by_another_process_wakes_the_relay(
    settings: Settings, running_relay: Relay, writer: IndependentWriter,
) -> None:
    wait_for_listener(settings.database_url or "")
    # The first publish also connects the producer; the ones after it show the wake-up alone.
    published_promptly(writer, running_relay)
    for _ in range(3):
        assert published_promptly(writer, running_relay) < PROMPT_SECONDS


def test_the_relay_still_wakes_after_its_listener_backend_is_terminated(
    settings: Settings, running_relay: Relay, writer: IndependentWriter,
) -> None:
    url = settings.database_url or ""
    published_promptly(writer, running_relay)
    first = wait_for_listener(url)
    terminate_backend(url, first)
    wait_for_listener(url, other_than={first})
    assert published_promptly(writer, running_relay) < PROMPT_SECONDS
