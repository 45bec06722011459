"""One thread decides for every waiting request: the write API's way in.

Requests (one event, or a batch) queue their commands; the thread takes everything queued
and records it with `RecordingService.record_commands`: one unit of work, one transaction,
each command answered as `record` would have answered it alone. Busy, many requests share
one decision pass and one commit; idle, a request is decided at once.

Why one thread rather than one per request: deciding is short Python work that holds the
interpreter lock. Thirty-two requests deciding in thirty-two threads spent more CPU handing
the lock and waking each other than deciding, and two of them on one deal made each other's
commit fail. Requests await their future on the event loop, so none holds a thread while
it waits.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from contracts.submissions_v1 import Receipt
from services.registry.application.commands import RecordPartnerEvent
from services.registry.application.handlers import RecordingService

log = logging.getLogger("dealreg.recording_queue")

Outcome = Receipt | Exception
# What the write API adds to a pass's outcomes before they are handed back (the tree size
# that covers each receipt), once per pass rather than once per request.
Finish = Callable[[list[Outcome]], list[Outcome]]


@dataclass
class _Job:
    commands: Sequence[RecordPartnerEvent]
    outcomes: Future[list[Outcome]] = field(default_factory=Future)


class RecordingQueue:
    def __init__(self, service: RecordingService, finish: Finish | None = None,
                 max_commands: int = 1000) -> None:
        self.service = service
        self.finish = finish
        # A pass takes whole jobs up to this many commands (always at least one job).
        self.max_commands = max_commands
        self.passes = 0
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="recording", daemon=True)
        self._thread.start()

    def submit(self, commands: Sequence[RecordPartnerEvent]) -> Future[list[Outcome]]:
        """Queue commands to be recorded in order; the future holds one outcome each, or the
        error that stopped the whole pass (the store down)."""
        job = _Job(commands)
        self._queue.put(job)
        return job.outcomes

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        held: _Job | None = None
        stopping = False
        while not stopping:
            first = held or self._queue.get()
            held = None
            if first is None:
                return
            jobs, count = [first], len(first.commands)
            while count < self.max_commands:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True  # once this pass is answered
                    break
                if count + len(more.commands) > self.max_commands:
                    held = more
                    break
                jobs.append(more)
                count += len(more.commands)
            self._record(jobs)

    def _record(self, jobs: list[_Job]) -> None:
        # A request whose waiter went away before its pass (its task cancelled) is not
        # recorded; once running, a future can no longer be cancelled, so every answer
        # below can be set.
        jobs = [job for job in jobs if job.outcomes.set_running_or_notify_cancel()]
        if not jobs:
            return
        self.passes += 1
        commands = [command for job in jobs for command in job.commands]
        try:
            outcomes = self.service.record_commands(commands)
            if self.finish is not None:
                outcomes = self.finish(outcomes)
        except Exception as exc:  # noqa: BLE001 - every waiting request answers with it
            log.debug("recording pass of %d commands failed", len(commands), exc_info=True)
            for job in jobs:
                job.outcomes.set_exception(exc)
            return
        start = 0
        for job in jobs:
            job.outcomes.set_result(outcomes[start:start + len(job.commands)])
            start += len(job.commands)
