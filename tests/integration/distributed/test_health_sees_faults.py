"""Readiness tells the truth: the relay's and the projections' /readyz turn 503 within seconds
of a stalled (SIGSTOP) or dead broker, name the dependency without addresses to anyone, give
the cause to an admin key, and turn 200 again when the broker is back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.projections.service import create_projection_app
from services.registry.relay.service import create_relay_app
from services.shared.api_keys import Role
from tests.integration.distributed.test_kafka_flow import cluster_settings, wait_until
from tests.kafka_broker import new_topic

pytestmark = pytest.mark.integration


def readiness(client: TestClient, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    response = client.get("/readyz", headers=headers or {})
    return response.status_code, response.json()


@pytest.mark.slow
def test_readiness_sees_a_stalled_and_a_dead_broker(
    tmp_path: Path, postgres_url: str, private_kafka_broker: Any
) -> None:
    topic = new_topic(private_kafka_broker.bootstrap, "health")
    settings = cluster_settings(tmp_path, postgres_url, topic)
    with TestClient(create_relay_app(settings)) as relay, \
            TestClient(create_projection_app(settings)) as projections:
        admin = projections.app.state.api_keys.create("health-admin", Role.ADMIN)  # type: ignore[attr-defined]
        as_admin = {"Authorization": f"Bearer {admin}"}
        both = {"relay": relay, "projections": projections}
        for name, client in both.items():
            wait_until(lambda c=client: readiness(c)[0] == 200, what=f"{name} is ready")

        private_kafka_broker.pause()  # SIGSTOP: connections stay open, nothing answers
        try:
            for name, client in both.items():
                wait_until(lambda c=client: readiness(c)[0] == 503, what=f"{name} sees the stall")
                status, body = readiness(client)
                assert body["checks"]["broker"] == "unreachable", body
                assert topic.bootstrap not in str(body) and "127.0.0.1" not in str(body)
            _, detailed = readiness(projections, as_admin)
            assert "broker" in detailed["details"], detailed
            assert readiness(projections, {"Authorization": "Bearer drk_nope"})[1].get(
                "details") is None
        finally:
            private_kafka_broker.resume()
        for name, client in both.items():
            wait_until(lambda c=client: readiness(c)[0] == 200, what=f"{name} sees the broker back")

        private_kafka_broker.stop()  # and now for good
        for name, client in both.items():
            wait_until(lambda c=client: readiness(c)[0] == 503, what=f"{name} sees the broker gone")
            assert readiness(client)[1]["checks"]["broker"] == "unreachable"
