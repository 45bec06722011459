"""The audit API on the write service: auditor and admin keys only, reports as JSON, and
the interval checkpointer running for the app's lifetime."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.registry.service import create_registry_app
from services.shared.api_keys import Role
from services.shared.settings import Settings
from tests.unit.registry.support import firm_body

pytestmark = pytest.mark.integration


def test_verify_and_checkpoints_over_http(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=None, checkpoint_interval_seconds=0.2)
    app = create_registry_app(settings)
    with TestClient(app) as client:
        keys = {role: app.state.api_keys.create(f"k-{role.value}", role) for role in Role}

        def auth(role: Role) -> dict[str, str]:
            return {"Authorization": f"Bearer {keys[role]}"}

        assert client.post("/v1/events", json=firm_body("attero", "IN", "recycler"),
                           headers=auth(Role.PARTNER)).status_code == 201
        assert client.get("/v1/audit/verify").status_code == 401
        refused = client.get("/v1/audit/verify", headers=auth(Role.PARTNER))
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
        assert client.post("/v1/audit/checkpoints",
                           headers=auth(Role.READER)).status_code == 403

        taken = client.post("/v1/audit/checkpoints", headers=auth(Role.ADMIN))
        assert taken.status_code == 201
        assert taken.json()["event_count"] == 2 and taken.json()["reason"] == "on_demand"

        report = client.get("/v1/audit/verify", headers=auth(Role.AUDITOR))
        assert report.status_code == 200
        body = report.json()
        assert body["ok"] is True and body["first_failure"] is None
        assert (body["events_checked"], body["checkpoints_checked"]) == (2, 1)

        client.post("/v1/events", json=firm_body("toyota-tsusho"), headers=auth(Role.PARTNER))
        deadline = time.monotonic() + 10
        reasons: list[str] = []
        while time.monotonic() < deadline and "interval" not in reasons:
            time.sleep(0.1)
            listed = client.get("/v1/audit/checkpoints", headers=auth(Role.AUDITOR)).json()
            reasons = [c["reason"] for c in listed["checkpoints"]]
        assert "interval" in reasons
        assert listed["checkpoints"][-1]["event_count"] == 4
        first = client.get("/v1/audit/checkpoints", headers=auth(Role.AUDITOR),
                           params={"limit": 1}).json()
        assert first["total"] == len(listed["checkpoints"]) >= 2
        assert first["checkpoints"] == listed["checkpoints"][:1]
        assert client.get("/v1/audit/checkpoints", headers=auth(Role.AUDITOR),
                          params={"limit": 0}).status_code == 422
