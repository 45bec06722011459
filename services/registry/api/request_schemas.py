"""The write API's request bodies in the OpenAPI document.

The routes read their bodies themselves (after the key is checked, with exact decimals), so
FastAPI does not see a body parameter to document; these declare the same models instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import TypeAdapter

REF = "#/components/schemas/{model}"


def json_request_body(schema: str, batch_of: int | None = None) -> dict[str, Any]:
    """`openapi_extra` for a route whose body is the named component (or a batch of it: a JSON
    array, or NDJSON with one such object per line)."""
    one = {"$ref": REF.format(model=schema)}
    if batch_of is None:
        return {"requestBody": {"required": True, "content": {"application/json": {
            "schema": one}}}}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "array", "items": one, "minItems": 1,
                                        "maxItems": batch_of}},
        "application/x-ndjson": {"schema": {
            "type": "string", "description": f"Up to {batch_of} lines, each one {schema} "
                                             "object as JSON"}},
    }}}


def install_request_schemas(app: FastAPI, schemas: dict[str, TypeAdapter[Any]]) -> None:
    """Add each named schema (and the models it refers to) to the document's components."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for name, adapter in schemas.items():
            schema = adapter.json_schema(ref_template=REF)
            components.update(schema.pop("$defs", {}))
            components[name] = schema
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
