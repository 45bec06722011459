"""`dealreg registry --workers N` and `dealreg projections --workers N` as an operator runs
them: worker processes on one port, over a real PostgreSQL (and the tests' broker). Writes
through both registry workers to one deal land once each, in consecutive versions; retries
replay across workers; a killed worker is replaced while the other answers; SIGTERM stops
them all; two projection workers share the consumer group and reach the log's head."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.demo.scenario import scenario
from services.registry.adapters.event_store import open_event_store
from services.registry.application.commands import RecordPartnerEvent
from services.registry.application.handlers import RecordingService
from services.registry.relay.service import build_relay
from services.shared.api_keys import ApiKeyStore, Role
from services.shared.database import create_sql_engine
from services.shared.settings import Settings, sqlalchemy_url
from tests.e2e.test_embedded_process import DEALREG, free_port
from tests.integration.distributed.test_kafka_flow import SUBMISSIONS, cluster_settings
from tests.kafka_broker import KafkaTopic

pytestmark = pytest.mark.e2e
T = "2025-07-01T10:00:00+05:30"
FIRMS = ("wk-jp", "wk-in")


def wait_until(check: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


class Workers:
    """`dealreg <command> --workers N` as a process: its supervisor, its worker processes
    and its JSON log lines (each names the process that wrote it)."""

    def __init__(self, command: str, count: int, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.count = count
        with log.open("ab") as stderr:
            self.process = subprocess.Popen(
                [*DEALREG, command, "--workers", str(count), "--host", "127.0.0.1",
                 "--port", str(self.port)],
                stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, **env})
        # Workers start one after another, each importing and building its app: on a loaded
        # machine (the suite's other worker starting services too) that takes a while.
        wait_until(lambda: len(self.started_pids()) >= count or self.process.poll() is not None,
                   timeout=180, what=f"{count} workers started")
        assert self.process.poll() is None, self.log.read_text()[-3000:]

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line still being written
        return found

    def started_pids(self) -> set[int]:
        return {line["pid"] for line in self.lines()
                if line["msg"] == "Application startup complete."}

    def pids_answering(self, method: str, path: str, status: int) -> set[int]:
        return {line["pid"] for line in self.lines() if line["logger"] == "dealreg.http"
                and line.get("method") == method and line.get("path") == path
                and line.get("status") == status}

    def worker_pids(self) -> set[int]:
        """The supervisor's worker processes (beside them it has multiprocessing's resource
        tracker)."""
        found = set()
        for task in os.listdir(f"/proc/{self.process.pid}/task"):
            with open(f"/proc/{self.process.pid}/task/{task}/children") as children:
                for child in children.read().split():
                    try:
                        with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                            if b"spawn_main" in cmdline.read():
                                found.add(int(child))
                    except FileNotFoundError:
                        continue
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def registry_env(postgres_url: str, tmp_path: Path) -> dict[str, str]:
    return {"DEALREG_DATABASE_URL": postgres_url, "DEALREG_DATA_DIR": str(tmp_path)}


@pytest.fixture
def registry(postgres_url: str, tmp_path: Path) -> Iterator[Workers]:
    running = Workers("registry", 2, registry_env(postgres_url, tmp_path),
                      tmp_path / "registry.log")
    yield running
    running.stop()


def partner_key(database_url: str) -> dict[str, str]:
    """A key made once the service made the key tables: the workers made them, not a test."""
    engine = create_sql_engine(sqlalchemy_url(database_url))
    try:
        key = ApiKeyStore(engine).create(f"partner-{uuid.uuid4().hex[:6]}", Role.PARTNER, FIRMS)
    finally:
        engine.dispose()
    return {"Authorization": f"Bearer {key}"}


def pledge(deal_id: str, event_id: str) -> dict[str, Any]:
    return {"event_id": event_id, "type": "pledge_made", "occurred_at": T,
            "payload": {"deal_id": deal_id, "pledge_id": event_id, "firm": FIRMS[0],
                        "amount": {"low": "1000000", "high": "2000000", "currency": "USD"}}}


def post_on_new_connection(url: str, headers: dict[str, str], body: dict[str, Any]
                           ) -> httpx.Response:
    # A connection of its own is accepted by whichever worker is free, so a burst of them
    # reaches both.
    return httpx.post(f"{url}/v1/events", json=body, headers=headers, timeout=60)


@pytest.mark.integration
@pytest.mark.slow
def test_writes_through_both_workers_to_one_deal_land_once_in_consecutive_versions(
        registry: Workers, postgres_url: str, tmp_path: Path) -> None:
    headers = partner_key(postgres_url)
    for code in FIRMS:
        assert post_on_new_connection(registry.url, headers, {
            "event_id": f"firm-{code}", "type": "firm_registered", "occurred_at": T,
            "payload": {"code": code, "name": code, "country": "JP",
                        "kind": "manufacturer"}}).status_code == 201
    deal_id = str(uuid.uuid4())
    assert post_on_new_connection(registry.url, headers, {
        "event_id": "deal", "type": "deal_proposed", "occurred_at": T,
        "payload": {"deal_id": deal_id, "title": "two workers", "format": "equity_investment",
                    "sector": "electric_vehicles", "parties": list(FIRMS)}}).status_code == 201

    answers: dict[str, httpx.Response] = {}
    with ThreadPoolExecutor(16) as pool:
        def both_workers_took_writes() -> set[int]:
            """After another 32 pledges at once, on fresh connections: the pids that took
            writes, once they are two."""
            ids = [f"p-{len(answers) + n}" for n in range(32)]
            answers.update(zip(ids, pool.map(lambda event_id: post_on_new_connection(
                registry.url, headers, pledge(deal_id, event_id)), ids), strict=True))
            writers = registry.pids_answering("POST", "/v1/events", 201)
            return writers if len(writers) == 2 else set()

        writers = wait_until(both_workers_took_writes, what="writes taken by both workers")
        assert writers == registry.worker_pids()

        # Every pledge again, at once and through both workers: the original answers.
        replays = list(pool.map(lambda event_id: post_on_new_connection(
            registry.url, headers, pledge(deal_id, event_id)), list(answers)))
        # And new pledges sent twice at once, the second while the first is in flight.
        twins = list(pool.map(lambda n: post_on_new_connection(
            registry.url, headers, pledge(deal_id, f"twin-{n // 2}")), range(32)))

    assert {event_id: a.status_code for event_id, a in answers.items()} \
        == dict.fromkeys(answers, 201)
    for first, again in zip(answers.values(), replays, strict=True):
        assert again.status_code == 201 and again.json()["replayed"] is True
        assert again.json()["position"] == first.json()["position"]
    assert [t.status_code for t in twins] == [201] * 32
    for n in range(16):
        pair = twins[2 * n].json(), twins[2 * n + 1].json()
        assert pair[0]["position"] == pair[1]["position"]
        assert sorted([pair[0]["replayed"], pair[1]["replayed"]]) == [False, True]

    store = open_event_store(Settings(data_dir=tmp_path, database_url=postgres_url))
    try:
        events = list(store.events.get(uuid.UUID(deal_id)))
    finally:
        store.close()
    assert [e.originator_version for e in events] == list(range(1, len(events) + 1))
    pledged = [e.pledge_id for e in events if hasattr(e, "pledge_id")]
    assert sorted(pledged) == sorted([*answers, *(f"twin-{n}" for n in range(16))])


@pytest.mark.integration
@pytest.mark.slow
def test_a_killed_worker_is_replaced_while_the_other_answers(registry: Workers) -> None:
    before = registry.worker_pids()
    assert len(before) == 2
    killed = min(before)
    os.kill(killed, signal.SIGKILL)

    answered = []

    def replaced() -> set[int]:
        # Fresh connections all along: none may fail while one worker is down. Liveness,
        # not readiness: on a loaded machine a worker may report its tree head lagging.
        answer = httpx.get(f"{registry.url}/healthz", timeout=30)
        answered.append(answer.status_code)
        now = registry.worker_pids()
        return now - before if len(now) == 2 and killed not in now else set()

    (replacement,) = wait_until(replaced, what="the killed worker replaced")
    assert answered and set(answered) == {200}

    def replacement_ready() -> bool:
        httpx.get(f"{registry.url}/readyz", timeout=30).raise_for_status()
        return replacement in registry.pids_answering("GET", "/readyz", 200)

    wait_until(replacement_ready, what=f"the replacement {replacement} answers /readyz")
    assert any(line["msg"] == f"Child process [{killed}] died" for line in registry.lines())


@pytest.mark.integration
@pytest.mark.slow
def test_sigterm_stops_every_worker(registry: Workers) -> None:
    workers = registry.worker_pids()
    assert len(workers) == 2
    registry.process.send_signal(signal.SIGTERM)
    assert registry.process.wait(timeout=60) == 0
    finished = {line["pid"] for line in registry.lines()
                if line["msg"].startswith("Finished server process")}
    assert finished == workers
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)
    with socket.socket() as freed:
        freed.bind(("127.0.0.1", registry.port))


def test_a_worker_that_cannot_start_stops_the_service_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "DEALREG_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none",
           "DEALREG_DATA_DIR": str(tmp_path)}
    result = subprocess.run([*DEALREG, "registry", "--workers", "2", "--port", str(free_port())],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unreachable" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("arguments", [["registry", "--workers", "0"],
                                       ["projections", "--workers", "-1"],
                                       ["registry", "--workers", "two"]])
def test_fewer_than_one_worker_is_refused(arguments: list[str]) -> None:
    result = subprocess.run([*DEALREG, *arguments], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "argument --workers:" in result.stderr and "Traceback" not in result.stderr


def test_the_embedded_mode_refuses_workers(tmp_path: Path) -> None:
    result = subprocess.run([*DEALREG, "up", "--workers", "2", "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "dealreg registry --workers N" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "events.db").exists()


@pytest.mark.integration
@pytest.mark.slow
def test_two_projection_workers_share_the_group_and_reach_the_head(
        tmp_path: Path, postgres_url: str, kafka_topic: KafkaTopic) -> None:
    settings = cluster_settings(tmp_path, postgres_url, kafka_topic)
    store = open_event_store(settings)
    recording = RecordingService(store)
    try:
        last = max(recording.record(RecordPartnerEvent(
            "partner-a", SUBMISSIONS.validate_python(body))).position for body in scenario())
    finally:
        recording.committer.close()
        store.close()
    relay = build_relay(settings)
    while relay.publish_page():
        pass

    env = {**registry_env(postgres_url, tmp_path),
           "DEALREG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "DEALREG_KAFKA_TOPIC": settings.kafka_topic,
           "DEALREG_KAFKA_DLQ_TOPIC": str(settings.kafka_dlq_topic),
           "DEALREG_KAFKA_GROUP_ID": settings.kafka_group_id,
           "DEALREG_KAFKA_SESSION_TIMEOUT_MS": "2000",
           "DEALREG_KAFKA_HEARTBEAT_INTERVAL_MS": "500"}
    projections = Workers("projections", 2, env, tmp_path / "projections.log")
    try:
        def assignments() -> dict[int, set[int]]:
            """Each worker's latest assignment, from its log lines."""
            latest: dict[int, set[int]] = {}
            for line in projections.lines():
                if line["msg"].startswith("assigned partitions "):
                    latest[line["pid"]] = set(json.loads(line["msg"].split(" ", 2)[2]))
            return latest

        def split_between_both() -> dict[int, set[int]] | None:
            latest = assignments()
            if len(latest) != 2 or not all(latest.values()):
                return None
            first, second = latest.values()
            return latest if not first & second and first | second == {0, 1, 2, 3} else None

        split = wait_until(split_between_both, what="the partitions split between both workers")
        assert set(split) == projections.worker_pids()

        reader = ApiKeyStore(create_sql_engine(sqlalchemy_url(postgres_url))).create(
            "dashboard", Role.READER)

        def at_head() -> bool:
            answer = httpx.get(f"{projections.url}/v1/pledges/by-sector",
                               headers={"Authorization": f"Bearer {reader}"}, timeout=30)
            return answer.status_code == 200 and answer.json()["position"] >= last

        wait_until(at_head, what=f"the read model at the log's head, {last}")
        ready = wait_until(lambda: httpx.get(f"{projections.url}/readyz", timeout=30)
                           .status_code == 200, what="projections ready")
        assert ready
    finally:
        projections.stop()
    assert projections.process.returncode == 0
