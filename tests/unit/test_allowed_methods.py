"""A 405 names every method served at its path, even when two routes share the path."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from starlette.exceptions import HTTPException

from services.shared.allowed_methods import allowed_methods


def test_allow_names_the_methods_of_every_route_at_the_path() -> None:
    router = APIRouter(prefix="/v1")
    router.get("/checkpoints")(lambda: {})
    router.post("/checkpoints")(lambda: {})
    router.get("/deals/{deal_id}")(lambda deal_id: {})
    app = FastAPI()
    app.include_router(router)

    @app.exception_handler(HTTPException)
    async def refuse(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({}, exc.status_code, {"Allow": allowed_methods(request)})

    client = TestClient(app)
    assert client.options("/v1/checkpoints").headers["Allow"] == "GET, POST"
    assert client.delete("/v1/checkpoints").headers["Allow"] == "GET, POST"
    assert client.put("/v1/deals/42").headers["Allow"] == "GET"
