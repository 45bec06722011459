"""A direct route answers as the FastAPI route it stands in for would: the same errors from
the app's own handlers, the same metrics, headers and limits from the app's middlewares, and
every other method or path left to FastAPI."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from services.shared.direct_route import install_direct_route
from services.shared.errors import ApiError
from services.shared.http_basics import HttpMetrics
from services.shared.service_app import create_service_app
from services.shared.settings import Settings

router = APIRouter(prefix="/v1")


@router.post("/things", status_code=201)
async def declared(request: Request) -> Response:
    """Only the direct route ever runs this: FastAPI would answer 201 itself."""
    return Response(b'{"via": "fastapi"}', 201, media_type="application/json")


async def direct(request: Request) -> Response:
    body = await request.body()
    if body == b"refuse":
        raise ApiError(422, "invalid_request", "refused", field="body", rule="demo")
    if body == b"bug":
        raise RuntimeError("a bug in the direct route")
    return Response(b'{"via": "direct"}', 201, media_type="application/json")


def client(tmp_path: Path) -> TestClient:
    metrics = HttpMetrics()
    app = create_service_app("t", "t", Settings(data_dir=tmp_path, max_body_bytes=1024),
                             metrics, {})
    app.include_router(router)
    route = next(r for r in router.routes if isinstance(r, APIRoute))
    install_direct_route(app, route, "POST", direct)
    return TestClient(app, raise_server_exceptions=False)


def test_the_direct_route_answers_its_method_and_path(tmp_path: Path) -> None:
    http = client(tmp_path)
    answer = http.post("/v1/things", content=b"ok")
    assert (answer.status_code, answer.json()) == (201, {"via": "direct"})
    # The app's middlewares saw it: security headers, and metrics under the route's path.
    assert answer.headers["x-content-type-options"] == "nosniff"
    counted = [line for line in http.get("/metrics").text.splitlines()
               if line.startswith("dealreg_http_requests_total") and 'route="/v1/things"' in line]
    assert len(counted) == 1 and 'status="201"' in counted[0], counted


def test_its_errors_are_the_apps_own_answers(tmp_path: Path) -> None:
    http = client(tmp_path)
    refused = http.post("/v1/things", content=b"refuse")
    assert refused.status_code == 422
    assert refused.json()["error"] == {"status": 422, "code": "invalid_request",
                                       "message": "refused", "field": "body", "rule": "demo"}
    broken = http.post("/v1/things", content=b"bug")
    assert broken.status_code == 503
    assert broken.json()["error"]["code"] == "unavailable"
    assert "a bug" not in broken.text
    too_big = http.post("/v1/things", content=b"x" * 1025)
    assert too_big.status_code == 413  # the size limits, outside it, still apply


def test_other_methods_and_paths_are_left_to_fastapi(tmp_path: Path) -> None:
    http = client(tmp_path)
    wrong_method = http.get("/v1/things")
    assert wrong_method.status_code == 405
    assert "POST" in wrong_method.headers["allow"]
    # FastAPI's own answer to a trailing slash: a redirect to the route's path.
    assert http.post("/v1/things/", content=b"ok", follow_redirects=False).status_code == 307
    assert http.get("/healthz").status_code == 200
