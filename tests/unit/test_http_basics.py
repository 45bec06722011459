"""What every service's HTTP shell promises: limits answered in the one error shape, and
metrics that count the status the client got."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from services.shared.http_basics import MAX_HEADER_BYTES, HttpMetrics
from services.shared.service_app import create_service_app
from services.shared.settings import Settings


def app_with_a_failing_route(tmp_path: Path) -> tuple[TestClient, HttpMetrics]:
    metrics = HttpMetrics()
    app = create_service_app("t", "t", Settings(data_dir=tmp_path), metrics, {})

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    return TestClient(app, raise_server_exceptions=False), metrics


def test_an_unexpected_error_is_a_503_and_counted_as_one(tmp_path: Path) -> None:
    client, _ = app_with_a_failing_route(tmp_path)
    response = client.get("/boom")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert "a bug" not in response.text
    counted = [line for line in client.get("/metrics").text.splitlines()
               if line.startswith("dealreg_http_requests_total") and 'route="/boom"' in line]
    assert len(counted) == 1 and 'status="503"' in counted[0], counted


def test_oversized_headers_are_431_in_the_error_shape(tmp_path: Path) -> None:
    client, _ = app_with_a_failing_route(tmp_path)
    response = client.get("/healthz", headers={"x-pad": "x" * (MAX_HEADER_BYTES + 1)})
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "headers_too_large"
    assert client.get("/healthz", headers={"x-pad": "x" * 1000}).status_code == 200
