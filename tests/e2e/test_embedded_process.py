"""As a new user would: `dealreg up` as a process, keys from its first output, `dealreg demo`,
the by-sector totals, a restart, and the same totals again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from services.demo.scenario import expected_totals

pytestmark = pytest.mark.e2e
DEALREG = [sys.executable, "-m", "services.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    def __init__(self, data_dir: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "DEALREG_PROJECTION_POLL_SECONDS": "0.05"}
        self.process = subprocess.Popen(
            [*DEALREG, "up", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE, stderr=log.open("ab"), text=True, env=env,
        )
        self.banner: list[str] = []
        deadline = time.monotonic() + 30
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"dealreg up exited: {log.read_text()[-2000:]}")
            self.banner.append(line.rstrip())
            if line.startswith("Deal Registry on"):
                break
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("dealreg up never became ready")

    def keys(self) -> dict[str, str]:
        return {parts[0]: parts[1] for line in self.banner
                if len(parts := line.split()) == 2 and parts[1].startswith("drk_")}

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def service(data_dir: Path, tmp_path: Path) -> Iterator[Service]:
    running = Service(data_dir, tmp_path / "service.log")
    yield running
    running.stop()


def by_sector(url: str, key: str, min_position: int = 0) -> dict:
    response = httpx.get(f"{url}/v1/pledges/by-sector", params={"min_position": min_position},
                         headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
def test_new_user_flow_survives_a_restart(service: Service, data_dir: Path,
                                          tmp_path: Path) -> None:
    keys = service.keys()
    assert set(keys) == {"partner", "reader", "auditor", "admin"}

    demo = subprocess.run([*DEALREG, "demo", "--url", service.url, "--api-key", keys["partner"]],
                          capture_output=True, text=True, timeout=120)
    assert demo.returncode == 0, demo.stderr
    last_position = int(demo.stdout.strip().splitlines()[-1].rsplit(" ", 1)[-1])

    totals = by_sector(service.url, keys["reader"], last_position)
    expected = expected_totals()["by_sector"]
    for item in totals["items"]:
        assert Decimal(item["usd"]["low"]) == expected[item["sector"]]["low"]
        assert Decimal(item["usd"]["high"]) == expected[item["sector"]]["high"]
    assert sum(Decimal(i["usd"]["high"]) for i in totals["items"]) == Decimal(400_000_000)

    service.stop()
    restarted = Service(data_dir, tmp_path / "service2.log")
    try:
        assert not restarted.keys(), "keys are printed only for a new data folder"
        again = by_sector(restarted.url, keys["reader"], last_position)
        assert again["items"] == totals["items"]
        assert again["position"] == totals["position"]
    finally:
        restarted.stop()


def test_keys_create_prints_the_key_on_its_last_line(data_dir: Path) -> None:
    result = subprocess.run([*DEALREG, "keys", "create", "--role", "reader", "--name", "dash",
                             "--data-dir", str(data_dir)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("drk_") and " " not in key
    duplicate = subprocess.run([*DEALREG, "keys", "create", "--role", "reader", "--name",
                                "dash", "--data-dir", str(data_dir)], capture_output=True,
                               text=True, timeout=60)
    assert duplicate.returncode == 2 and "exists already" in duplicate.stderr


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "DEALREG_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}
    result = subprocess.run([*DEALREG, "keys", "create", "--role", "reader", "--name", "x"],
                            capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "unreachable" in result.stderr
    assert "Traceback" not in result.stderr
