"""Creates the event topic and its dead-letter topic with an explicit partition count.

Partitions bound how many projection instances can share the work; one deal's events always
share a partition. Create topics before the first relay runs: a broker that auto-creates
topics would pick its own count.
"""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.errors import TopicAlreadyExistsError


def create_topics(bootstrap: str, topic: str, dead_letter_topic: str, partitions: int,
                  replication: int = 1) -> list[str]:
    """Create whichever of the two topics is missing; return the names created."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=10_000)
    created = []
    try:
        for name, count in ((topic, partitions), (dead_letter_topic, 1)):
            try:
                admin.create_topics(
                    {name: {"num_partitions": count, "replication_factor": replication}}
                )
                created.append(name)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    return created
