"""The follower that keeps the signed tree head at the log's head.

It runs beside the write service: woken after every commit, and polling in between for
writes by other processes sharing the store, it extends the tree over whatever the log gained
(`extend_tree`). An acknowledged write is therefore covered within `poll_seconds` plus one
extension, well inside the one-second bound the README promises; at start the follower
covers what was written while no follower ran, and at a stop it covers the last writes
before the store closes.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from services.registry.adapters.event_store import DealRegistryStore
from services.registry.audit.checkpoints import Checkpoint, CheckpointStore, extend_tree
from services.registry.audit.tree_head_key import TreeHeadSigner

log = logging.getLogger("dealreg.audit")

# Wait after a failed extension before the next try (the database may be down).
RETRY_SECONDS = 1.0
# What the README promises: an acknowledged write is covered within this.
COVERAGE_BOUND_SECONDS = 1.0
# After a wake-up, the follower waits this long for more commits to cover at once: under
# load one extension (a few queries and a signature) then serves many commits, not one.
COALESCE_SECONDS = 0.02


class TreeHeadFollower:
    def __init__(self, store: DealRegistryStore, checkpoints: CheckpointStore,
                 signer: TreeHeadSigner, poll_seconds: float = 0.25,
                 keep_seconds: float = 300.0) -> None:
        self.store = store
        self.checkpoints = checkpoints
        self.signer = signer
        self.poll_seconds = poll_seconds
        self.keep_seconds = keep_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-head", daemon=True)
        self.last_error: str | None = None
        # The newest head this follower recorded or found: (tree size, last position).
        self.known_head: tuple[int, int] | None = None
        # The newest checkpoint as this follower last wrote or read it (see extend_tree).
        self._last_written: Checkpoint | None = None
        # When an extension last brought the tree to the log's head, by monotonic clock.
        self._covered_at = time.monotonic()

    def start(self) -> None:
        self.extend_once()
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        self.extend_once()

    def extend_once(self) -> Checkpoint | None:
        try:
            extended = extend_tree(self.store, self.checkpoints, self.signer, "continuous",
                                   self.keep_seconds, last_known=self._last_written)
        except Exception as exc:  # noqa: BLE001 - reported by health; the next round retries
            if self.last_error is None:
                log.exception("could not extend the signed tree head")
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            return None
        if self.last_error is not None:
            log.info("the signed tree head is extended again")
        self.last_error = None
        self._covered_at = time.monotonic()
        # Nothing to extend: another process (or an auditor's on-demand head) got there.
        head = extended or self.checkpoints.latest()
        self._last_written = head
        if head is not None:
            self.known_head = (head.event_count, head.last_position)
        return extended

    def lag_seconds(self) -> float:
        """0 while the signed head covers the log; else how long since the follower last
        brought it to the head: what grows when it cannot (a database fault, a dead thread)."""
        latest = self.checkpoints.latest()
        covered = 0 if latest is None else latest.last_position
        if self.store.head_position() <= covered:
            return 0.0
        return time.monotonic() - self._covered_at

    def status(self) -> dict[str, Any]:
        latest = self.checkpoints.latest()
        return {"covered_position": 0 if latest is None else latest.last_position,
                "tree_size": 0 if latest is None else latest.event_count,
                "uncovered_seconds": round(self.lag_seconds(), 3), "error": self.last_error}

    def check_covered(self) -> None:
        """Raises while the log has held an uncovered event for longer than the bound."""
        lag = self.lag_seconds()
        if lag > COVERAGE_BOUND_SECONDS:
            raise RuntimeError(f"events written {lag:.1f} s ago are not covered by a signed "
                               f"tree head: {self.last_error or 'the follower is behind'}")

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._wake.wait(self.poll_seconds):
                self._stop.wait(COALESCE_SECONDS)
            self._wake.clear()
            if self._stop.is_set():
                return
            if self.extend_once() is None and self.last_error is not None:
                self._stop.wait(RETRY_SECONDS)
