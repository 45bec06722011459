"""`dealreg projections rebuild` in distributed mode: the topic is read from its beginning,
partition by partition, up to exactly the offsets the live consumer group has applied, while
the relay and the live consumer go on; the result equals the live read model and the live
consumer resumes from the switched-in tables' offsets."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cli import main
from services.projections.read_model.progress import stored_offsets
from services.projections.read_model.tables import READ_MODEL_PROJECTOR, TotalsDimension
from services.projections.rebuild.checksums import checksums
from tests.integration.distributed.test_kafka_flow import (
    Cluster,
    cluster_settings,
    topic_messages,
    wait_until,
)
from tests.integration.rebuild.test_rebuild_from_log import add_deal, checksum_lines, fill
from tests.kafka_broker import KafkaTopic

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str, kafka_topic: KafkaTopic,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    settings = cluster_settings(tmp_path, postgres_url, kafka_topic)
    for name, value in settings.model_dump(exclude_none=True).items():
        monkeypatch.setenv(f"DEALREG_{name.upper()}", str(value))
    running = Cluster(settings)
    yield running
    running.close()


def live_checksums(cluster: Cluster) -> dict[str, str]:
    with cluster.read_engine.connect() as conn:
        return checksums(conn)


def wait_consumed_to_the_end(cluster: Cluster) -> None:
    """With the relay stopped, wait until the live consumer has handled the topic's last
    record on every partition: its progress rows stop moving (the relay's heartbeat
    watermarks move them while it runs, even without new events)."""
    topic = cluster.settings.kafka_topic
    last: dict[int, int] = {}
    for message in topic_messages(cluster.settings.kafka_bootstrap, topic):
        last[message.partition] = max(last.get(message.partition, -1), message.offset)
    wait_until(lambda: stored_offsets(cluster.read_engine, READ_MODEL_PROJECTOR, topic) == last,
               60, f"the live consumer at offsets {last}")


def test_rebuild_from_the_topic_equals_the_live_model(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    relay = cluster.start_relay()
    cluster.start_consumer()
    cluster.record_scenario()
    fill(cluster.store, 300)
    cluster.wait_visible(cluster.store.head_position())
    totals = cluster.queries.pledge_totals(TotalsDimension.SECTOR)

    stop = threading.Event()

    def write() -> None:  # the relay and the live consumer keep moving during the rebuild
        n = 100
        while not stop.is_set():
            add_deal(cluster.store, n)
            n += 1
            time.sleep(0.02)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        code = main(["projections", "rebuild"])  # auto: the live model is fed by the topic
    finally:
        stop.set()
        writer.join(timeout=30)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"rebuilt from {cluster.settings.kafka_topic}:" in captured.out
    printed = checksum_lines(captured.out)
    assert printed and all(verdict == "equal" for _, _, verdict in printed.values())
    # The writes went on and were seen.
    assert cluster.queries.pledge_totals(TotalsDimension.SECTOR) != totals

    # The live consumer carries on from the rebuilt offsets: nothing lost, nothing twice.
    for n in range(5):
        add_deal(cluster.store, n)
    cluster.wait_visible(cluster.store.head_position())
    relay.stop()
    wait_consumed_to_the_end(cluster)
    sums = live_checksums(cluster)
    assert main(["projections", "rebuild", "--dry-run", "--source", "kafka"]) == 0
    assert live_checksums(cluster) == sums
