"""The audit API on the write service: auditor and admin keys only, reports as JSON, and
the tree-head follower running for the app's lifetime."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from unittest.mock import ANY

import pytest
from fastapi.testclient import TestClient

from services.registry.audit.signing import SigningKeyMissing
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
        assert taken.json()["event_count"] == 1 and taken.json()["reason"] == "on_demand"
        assert taken.json()["signed"] is True

        report = client.get("/v1/audit/verify", headers=auth(Role.AUDITOR))
        assert report.status_code == 200
        body = report.json()
        assert body["ok"] is True and body["first_failure"] is None
        assert body["events_checked"] == 1 and body["signatures_checked"] is True
        assert body["leaf_formats"] == [{"from": 1, "to": 1, "format": 2, "meaning": ANY}]

        recorded = client.post("/v1/events", json=firm_body("toyota-tsusho"),
                               headers=auth(Role.PARTNER)).json()
        assert recorded["tree_size"] == 2
        listed: dict = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            listed = client.get("/v1/audit/checkpoints", headers=auth(Role.AUDITOR)).json()
            if listed["checkpoints"][-1]["event_count"] == 2:
                break
            time.sleep(0.05)
        assert [c["reason"] for c in listed["checkpoints"]][-1] == "continuous"
        assert listed["checkpoints"][-1]["event_count"] == 2
        first = client.get("/v1/audit/checkpoints", headers=auth(Role.AUDITOR),
                           params={"limit": 1}).json()
        assert first["total"] == len(listed["checkpoints"]) >= 2
        assert first["checkpoints"] == listed["checkpoints"][:1]
        assert client.get("/v1/audit/checkpoints", headers=auth(Role.AUDITOR),
                          params={"limit": 0}).status_code == 422


def test_the_registry_refuses_to_start_on_postgres_without_a_signing_key(
        tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEALREG_SIGNING_KEY")
    with pytest.raises(SigningKeyMissing, match="dealreg audit new-signing-key"):
        create_registry_app(Settings(data_dir=tmp_path, database_url=postgres_url))
    assert not (tmp_path / "tree-head-signing.pem").exists()


def test_readiness_sees_a_tree_head_that_cannot_follow(tmp_path: Path) -> None:
    """A real fault: the leaves table is dropped under the running service, so the follower
    cannot extend the tree; writes still succeed, and /readyz says the head is behind."""
    app = create_registry_app(Settings(data_dir=tmp_path, database_url=None))
    with TestClient(app) as client:
        partner = app.state.api_keys.create("k-partner", Role.PARTNER)
        auth = {"Authorization": f"Bearer {partner}"}
        assert client.post("/v1/events", json=firm_body("attero", "IN", "recycler"),
                           headers=auth).status_code == 201
        assert client.get("/readyz").status_code == 200
        with sqlite3.connect(tmp_path / "events.db") as db:
            db.execute("DROP TABLE dealreg_audit_leaves")
        assert client.post("/v1/events", json=firm_body("lohum", "IN", "recycler"),
                           headers=auth).status_code == 201
        deadline = time.monotonic() + 30
        while (ready := client.get("/readyz")).status_code == 200:
            assert time.monotonic() < deadline, ready.json()
            time.sleep(0.05)
        body = ready.json()
        assert ready.status_code == 503 and body["checks"]["tree_head"] == "unreachable"
        assert body["checks"]["event_store"] == "ok"
        assert "dealreg_audit_leaves" in body["tree_head"]["error"]
        assert body["tree_head"]["uncovered_seconds"] > 1
