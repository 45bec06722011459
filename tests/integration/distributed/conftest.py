"""The distributed parts of one test, on the session broker and a fresh database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.distributed.test_kafka_flow import Cluster, cluster_settings
from tests.kafka_broker import KafkaTopic


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str, kafka_topic: KafkaTopic) -> Iterator[Cluster]:
    running = Cluster(cluster_settings(tmp_path, postgres_url, kafka_topic))
    yield running
    running.close()
