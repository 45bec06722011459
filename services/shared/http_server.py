"""How every service is served: uvicorn on httptools, with a bound on request heads and no
`server` banner; in one process, or in several worker processes on one socket."""

from __future__ import annotations

import gc
import json
import logging
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from services.shared.errors import error_body
from services.shared.http_basics import MAX_HEADER_BYTES

log = logging.getLogger("dealreg.http")

# A request line and headers longer than this are cut off by the server. The apps refuse
# heads over MAX_HEADER_BYTES themselves (431, JSON, logged); this bound is for the heads they
# never get to see: httptools keeps none, and read a 50 MB header to its end.
MAX_REQUEST_HEAD_BYTES = 4 * MAX_HEADER_BYTES


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, counting the bytes each request's head takes to arrive:
    past MAX_REQUEST_HEAD_BYTES it answers 431 and closes the connection, so at most one
    read (of up to 256 KiB) more than the bound is ever taken in."""

    _head_bytes = 0
    _awaiting_head = True

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._awaiting_head or self.transport.is_closing():
            return
        # A read that ends one request and starts the next counts whole: the bound is not
        # meant to be exact, only to stop a head that never ends.
        self._head_bytes += len(data)
        if self._head_bytes > MAX_REQUEST_HEAD_BYTES:
            self._refuse_head()

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_head, self._head_bytes = True, 0

    def _refuse_head(self) -> None:
        client = self.client[0] if self.client else "unknown"
        log.warning("request head over %d bytes from %s: closed", MAX_REQUEST_HEAD_BYTES,
                    client, extra={"fields": {"client": client, "status": 431}})
        body = json.dumps(error_body(
            431, "headers_too_large", f"the request head exceeds {MAX_REQUEST_HEAD_BYTES} bytes",
            field="headers", rule="max_bytes")).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.transport.close()


def settle_collector() -> None:
    """For a serving process, once its app is built. What is loaded by now (modules, the
    app, its schemas) lives as long as the process: frozen, full collections stop walking
    it, which were the slow reads' pauses (bench/over_time.py: 20-40 ms each at a million
    events). Requests make many short-lived objects that reference counting frees anyway:
    collecting the young generation every 20,000 allocations instead of 700 took a fifth
    off the service's CPU per recorded event (bench/append.py c32: 2.8 -> 2.3 ms)."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def serve(app: Any, host: str, port: int) -> None:
    uvicorn.run(app, host=host, port=port, log_config=None, http=BoundedHeadProtocol,
                server_header=False)


def serve_workers(factory: str, host: str, port: int, workers: int) -> int:
    """`workers` processes serving one socket, each building its own app by calling
    `factory` (an import string, `module:function`); uvicorn's supervisor replaces a worker
    that dies. Returns the exit status: 2 if a worker could not start, else 0."""
    config = uvicorn.Config(factory, factory=True, host=host, port=port, workers=workers,
                            log_config=None, http=BoundedHeadProtocol, server_header=False)
    supervisor = FirstWorkerFirst(config, sockets=[config.bind_socket()])
    supervisor.run()
    return 2 if supervisor.failed_to_start() else 0


class FirstWorkerFirst(Multiprocess):
    """uvicorn's supervisor, starting one worker alone until it serves, then the others.

    The first worker creates the schemas (tables, indexes) the others then find: workers
    creating them at once make PostgreSQL refuse all but one (duplicate type or relation).
    And a worker that cannot start (database unreachable, signing key missing) stops the
    service before any other has tried."""

    first_died_starting = False

    def init_processes(self) -> None:
        first = Process(self.config, self.sockets)
        first.start()
        self.processes.append(first)
        # Signals wait in a queue until the supervisor's loop handles them: handled here
        # too, so Ctrl-C during a long start-up is not ignored.
        while not self.should_exit.is_set():
            self.handle_signals()
            if not first.process.is_alive():
                first.join()
                self.first_died_starting = True
                self.should_exit.set()
                return
            if first.is_ready(timeout=0.5):
                break
        if self.should_exit.is_set():
            return
        for _ in range(self.processes_num - 1):
            process = Process(self.config, self.sockets)
            process.start()
            self.processes.append(process)

    def failed_to_start(self) -> bool:
        """Whether a worker ended before it served (the first, or one the supervisor
        started again and that failed, which stops every worker)."""
        return self.first_died_starting or any(
            process.exitcode == STARTUP_FAILURE for process in self.processes)
