"""The OpenAPI document is one SDK generators can use: every refusal has the real error body,
every read a typed answer and the header it sends, every query parameter its bounds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.embedded.app import create_embedded_app
from services.shared.settings import Settings

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
# The read side's operations; the write side's are checked by its own tests.
READS = {
    "/v1/pledges/by-sector", "/v1/pledges/by-firm", "/v1/pledges/by-country", "/v1/deals",
    "/v1/deals/{deal_id}", "/v1/deals/{deal_id}/events", "/v1/firms", "/v1/meetings",
    "/v1/audit/events",
}
AUDIT = {("get", "/v1/audit/verify"), ("get", "/v1/audit/checkpoints"),
         ("post", "/v1/audit/checkpoints")}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    app = create_embedded_app(Settings(data_dir=tmp_path_factory.mktemp("openapi")))
    yield TestClient(app).get("/openapi.json").json()  # no lifespan: nothing is served


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield method, path, operation


def test_no_error_is_documented_as_fastapis_detail(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    for method, path, operation in operations(document):
        for status, answer in operation["responses"].items():
            if status.startswith(("4", "5")):
                assert answer["content"]["application/json"]["schema"] == ERROR_BODY, \
                    (method, path, status)


def test_reads_declare_their_answer_header_and_every_refusal(document: dict[str, Any]) -> None:
    for path in READS:
        read = document["paths"][path]["get"]
        ok = read["responses"]["200"]
        assert ok["content"]["application/json"]["schema"]["$ref"].startswith(
            "#/components/schemas/"), path
        assert "X-Log-Position" in ok["headers"], path
        assert {"401", "409", "422", "503"} <= set(read["responses"]), path
        assert read["security"] == [{"ApiKey": []}], path
    for path in ("/v1/deals/{deal_id}", "/v1/deals/{deal_id}/events"):
        assert "404" in document["paths"][path]["get"]["responses"]
    assert "403" in document["paths"]["/v1/audit/events"]["get"]["responses"]


def test_audit_operations_declare_their_answers(document: dict[str, Any]) -> None:
    for method, path in AUDIT:
        operation = document["paths"][path][method]
        answers = operation["responses"]
        success = "201" if method == "post" else "200"
        assert answers[success]["content"]["application/json"]["schema"]["$ref"]
        assert {"401", "403", "503"} <= set(answers), (method, path)
    assert "422" in document["paths"]["/v1/audit/checkpoints"]["get"]["responses"]


def test_every_read_parameter_is_bounded(document: dict[str, Any]) -> None:
    for path in READS | {path for _, path in AUDIT}:
        for parameter in document["paths"][path].get("get", {}).get("parameters", []):
            schema = parameter["schema"]
            kinds = [schema, *schema.get("anyOf", [])]
            for kind in kinds:
                if kind.get("type") == "integer":
                    assert "maximum" in kind and "minimum" in kind, (path, parameter["name"])
                if kind.get("type") == "string":
                    assert "enum" in kind or "pattern" in kind or "format" in kind, \
                        (path, parameter["name"])
                    assert "maxLength" in kind or "enum" in kind or "format" in kind, \
                        (path, parameter["name"])
                if "$ref" in kind:  # an enum, defined once
                    name = kind["$ref"].rsplit("/", 1)[1]
                    assert "enum" in document["components"]["schemas"][name]


def test_closed_vocabularies_are_enums(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for name, values in (("Sector", "recycling"), ("DealFormat", "joint_venture"),
                         ("FirmKind", "automaker"), ("DealStatus", "cancelled"),
                         ("PledgeStatus", "withdrawn"), ("EventType", "pledge_made")):
        assert values in schemas[name]["enum"], name
    summary = schemas["DealSummary"]["properties"]
    assert summary["sector"] == {"$ref": "#/components/schemas/Sector"}
    assert summary["status"] == {"$ref": "#/components/schemas/DealStatus"}
    assert "detail" not in json.dumps(schemas["ErrorBody"])
