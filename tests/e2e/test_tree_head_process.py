"""The signed tree head across a kill and a restart of `dealreg up`, as an operator would
meet them: a write acknowledged, the process killed with SIGKILL, the tail of the log edited
in the stopped store, `dealreg audit verify` failing at that position; and writes no
follower saw, covered by the restarted service before it serves."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.registry.adapters.event_store import open_event_store
from services.registry.application.handlers import RecordingService
from services.shared.settings import Settings
from tests.e2e.test_embedded_process import DEALREG, Service
from tests.unit.registry.support import firm_body, record

pytestmark = pytest.mark.e2e


def post_firm(service: Service, key: str, code: str) -> dict[str, Any]:
    answer = httpx.post(f"{service.url}/v1/events", json=firm_body(code, "IN", "recycler"),
                        headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.json()


def tree_head(service: Service, key: str) -> dict[str, Any]:
    answer = httpx.get(f"{service.url}/v1/audit/tree-head",
                       headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_covered(service: Service, key: str, tree_size: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (head := tree_head(service, key))["tree_size"] < tree_size:
        assert time.monotonic() < deadline, head
        time.sleep(0.02)
    return head


def kill(service: Service) -> None:
    service.process.send_signal(signal.SIGKILL)
    service.process.wait(timeout=15)


def verify(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEALREG, "audit", "verify", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_a_killed_service_leaves_its_tail_covered(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    service = Service(data_dir, tmp_path / "service.log")
    try:
        keys = service.keys()
        post_firm(service, keys["partner"], "attero")
        receipt = post_firm(service, keys["partner"], "lohum")
        wait_covered(service, keys["reader"], receipt["tree_size"])
    finally:
        kill(service)
    assert verify(data_dir).returncode == 0

    with sqlite3.connect(data_dir / "events.db") as db:
        state = db.execute("SELECT state FROM stored_events WHERE rowid=?",
                           (receipt["position"],)).fetchone()[0]
        edited = state.replace(b'"lohum"', b'"lohun"')
        assert edited != state
        db.execute("UPDATE stored_events SET state=? WHERE rowid=?",
                   (edited, receipt["position"]))
    failed = verify(data_dir)
    assert failed.returncode == 1
    assert f"FAILED at position {receipt['position']}" in failed.stderr


@pytest.mark.slow
def test_writes_no_follower_saw_are_covered_at_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    service = Service(data_dir, tmp_path / "service.log")
    keys = service.keys()
    try:
        wait_covered(service, keys["reader"], post_firm(service, keys["partner"],
                                                        "lohum")["tree_size"])
    finally:
        kill(service)
    # Writes acknowledged by a process whose follower never ran (a replica killed right
    # after its commit): the store has them, no signed head covers them.
    store = open_event_store(Settings(data_dir=data_dir))
    recording = RecordingService(store)
    receipt = record(recording, firm_body("attero", "IN", "recycler"))
    recording.committer.close()
    store.close()
    # The restarted follower's first poll is almost a second away: only its start can cover.
    monkeypatch.setenv("DEALREG_TREE_HEAD_POLL_SECONDS", "0.9")
    restarted = Service(data_dir, tmp_path / "service2.log")
    try:
        head = tree_head(restarted, keys["reader"])
        assert head["last_position"] >= receipt.position
    finally:
        restarted.stop()
    assert verify(data_dir).returncode == 0
