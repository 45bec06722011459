"""Whether the Kafka broker answers, seen from a thread of its own.

A client's own view is not enough: a consumer whose broker is stopped (SIGSTOP) or silently
gone just polls and gets nothing, and a producer only learns it when a send times out. The
watch asks the broker for its topics every `interval` seconds, with a short timeout, and the
broker counts as healthy while its last answer is at most `stale_after` seconds old.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaAdminClient

log = logging.getLogger("dealreg.broker_health")


class BrokerUnavailable(ConnectionError):
    """The broker has not answered lately; the message says for how long and why."""


class BrokerWatch:
    def __init__(
        self,
        bootstrap: str,
        interval: float = 1.0,
        timeout: float = 2.0,
        stale_after: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bootstrap = bootstrap
        self.interval = interval
        self.timeout = timeout
        self.stale_after = stale_after
        self.clock = clock
        self.last_answer: float | None = None
        self.last_error = "no answer yet"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._admin: Any = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="broker-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + self.interval + 1)
        self._close()

    def watching(self, loop: Callable[[threading.Event], None]
                 ) -> Callable[[threading.Event], None]:
        """`loop`, with this watch running beside it for as long as it runs."""

        def run(stop: threading.Event) -> None:
            self.start()
            try:
                loop(stop)
            finally:
                self.stop()

        return run

    def check(self) -> None:
        """Raise BrokerUnavailable unless the broker answered within `stale_after` seconds."""
        if self.last_answer is None:
            raise BrokerUnavailable(f"the broker has not answered yet: {self.last_error}")
        silent = self.clock() - self.last_answer
        if silent > self.stale_after:
            raise BrokerUnavailable(
                f"the broker has not answered for {silent:.1f}s: {self.last_error}")

    def _run(self) -> None:
        healthy = True
        while not self._stop.is_set():
            try:
                self._ask()
                self.last_answer = self.clock()
                if not healthy:
                    log.warning("broker answers again")
                healthy = True
            except Exception as exc:  # noqa: BLE001 - any failure means "not answering"
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                if healthy:
                    log.warning("broker did not answer: %s", self.last_error)
                healthy = False
                self._close()  # a fresh connection next time, not a stuck one
            self._stop.wait(self.interval)

    def _ask(self) -> None:
        if self._admin is None:
            timeout_ms = int(self.timeout * 1000)
            self._admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap.split(","), client_id="dealreg-broker-watch",
                request_timeout_ms=timeout_ms, connections_max_idle_ms=60_000,
            )
        self._admin.list_topics()

    def _close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                admin.close()
            except Exception:  # noqa: BLE001 - closing a broken client may fail too
                log.debug("closing the broker watch's client failed", exc_info=True)
