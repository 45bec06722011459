"""The server's own limits, as `dealreg up` serves: a request head that never ends is cut off
after a bounded read, not taken in to its end, and no answer names the server."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import httpx
import pytest

from services.shared.http_server import MAX_REQUEST_HEAD_BYTES
from tests.e2e.test_embedded_process import Service

pytestmark = pytest.mark.e2e

HEADER_BYTES = 50 * 1024 * 1024
CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("limits")
    running = Service(folder / "data", folder / "service.log")
    yield running
    running.stop()


def send_endless_header(port: int) -> tuple[int, bytes]:
    """Send a request whose one header is HEADER_BYTES long, a chunk at a time, until the
    server answers or closes; the bytes sent by then, and what it answered."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        try:
            while sent < HEADER_BYTES:
                readable, _, _ = select.select([connection], [], [], 0)
                if readable:
                    break
                connection.sendall(b"a" * CHUNK)
                sent += CHUNK
            return sent, connection.recv(4096)
        except (BrokenPipeError, ConnectionResetError):
            return sent, b""  # closed while we sent: refused just the same


def test_a_header_that_never_ends_is_cut_off_early(service: Service) -> None:
    sent, answer = send_endless_header(service.port)
    # Socket buffers on both sides take in a few MB before the sender notices the answer.
    assert sent < HEADER_BYTES // 4, f"the server read {sent} bytes of a header"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert MAX_REQUEST_HEAD_BYTES < HEADER_BYTES // 100
    # The server is still serving.
    assert httpx.get(f"{service.url}/healthz", timeout=5).status_code == 200


def test_answers_name_no_server_and_carry_the_security_headers(service: Service) -> None:
    for path in ("/healthz", "/v1/deals", "/sign-in", "/no/such/path"):
        answer = httpx.get(f"{service.url}{path}", timeout=5)
        assert "server" not in answer.headers, path
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert "no-store" in answer.headers["cache-control"], path
    big = httpx.get(f"{service.url}/healthz", headers={"X-Pad": "a" * 20_000}, timeout=5)
    assert (big.status_code, big.json()["error"]["code"]) == (431, "headers_too_large")

