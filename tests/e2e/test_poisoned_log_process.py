"""`dealreg up` as a process over a data folder whose log holds poison, written as an older
version could have (past today's door): it starts, parks the poison, serves fresh reads of
every other deal, and `dealreg projections parked` shows what it parked."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from services.registry.adapters.event_store import open_event_store
from services.shared.settings import Settings
from tests.e2e.test_embedded_process import DEALREG, Service
from tests.integration.poisoned_log import (
    YEAR_ONE_IN_INDIA,
    propose_deal_with_pledge,
    register_firm,
    store_untranslatable_deal,
)

pytestmark = pytest.mark.e2e
T = "2025-08-29T10:30:00+05:30"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    store = open_event_store(Settings(data_dir=folder))
    try:
        register_firm(store, "tata-motors")
        propose_deal_with_pledge(store, uuid4(), "tata-motors", YEAR_ONE_IN_INDIA)
        store_untranslatable_deal(store, uuid4(), "tata-motors")
    finally:
        store.close()
    return folder


@pytest.fixture
def service(data_dir: Path, tmp_path: Path) -> Iterator[Service]:
    running = Service(data_dir, tmp_path / "service.log")  # returns once /readyz is 200
    yield running
    running.stop()


def parked_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEALREG, "projections", "parked", *args, "--data-dir",
                           str(data_dir)], capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_a_poisoned_log_is_parked_and_every_other_deal_stays_fresh(
    service: Service, data_dir: Path, tmp_path: Path
) -> None:
    keys = service.keys()
    partner = {"Authorization": f"Bearer {keys['partner']}"}
    reader = {"Authorization": f"Bearer {keys['reader']}"}

    ready = httpx.get(f"{service.url}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["parked_events"] == 4

    deal_id = str(uuid4())
    position = 0
    for body in (
        {"event_id": "firm-attero", "type": "firm_registered", "occurred_at": T,
         "payload": {"code": "attero", "name": "Attero", "country": "IN", "kind": "recycler"}},
        {"event_id": "deal-new", "type": "deal_proposed", "occurred_at": T,
         "payload": {"deal_id": deal_id, "title": "Catalyst recovery", "format":
                     "joint_venture", "sector": "recycling", "parties": ["attero"]}},
    ):
        response = httpx.post(f"{service.url}/v1/events", json=body, headers=partner,
                              timeout=10)
        assert response.status_code == 201, response.text
        position = response.json()["position"]
    fresh = httpx.get(f"{service.url}/v1/deals/{deal_id}", params={"min_position": position},
                      headers=reader, timeout=10)
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["title"] == "Catalyst recovery"

    listed = parked_cli(data_dir, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert lines[-1] == "4 parked events (2 failed, 2 waiting behind them)"
    assert "OverflowError: date value out of range" in lines[0]
    assert "no attribute 'title'" in lines[2]

    admin = {"Authorization": f"Bearer {keys['admin']}"}
    page = httpx.get(f"{service.url}/v1/admin/parked", headers=admin, timeout=10).json()
    assert page["total"] == 4
    assert "dealreg_events_parked 4.0" in httpx.get(f"{service.url}/metrics", timeout=5).text

    # Retrying beside the running service: nothing is fixed, so all four stay.
    retried = parked_cli(data_dir, "retry", "--all")
    assert retried.returncode == 1, retried.stderr
    assert retried.stdout.strip().splitlines()[-1] == (
        "retried 4 parked events: 0 applied, 4 still parked")

    # One ERROR line per parked event, naming position, aggregate and reason.
    deadline = time.monotonic() + 10
    parked_lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(parked_lines) < 4:
        parked_lines = [
            entry for line in (tmp_path / "service.log").read_text().splitlines()
            if line.startswith("{") and (entry := json.loads(line)).get("level") == "error"
            and entry["msg"].startswith("parked event #")
        ]
        time.sleep(0.1)
    assert len(parked_lines) == 4
    assert [(e["position"], e["aggregate_version"], e["state"]) for e in parked_lines] == [
        (2, 1, "failed"), (3, 2, "waiting"), (4, 1, "failed"), (5, 2, "waiting")]
    assert "OverflowError" in parked_lines[0]["reason"]
