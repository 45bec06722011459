"""Reading a request body as JSON the registry can keep: strict UTF-8, no duplicate keys, no
floats, bounded nesting. Each refusal is an ApiError naming the field and the rule.

The body is read here, after the key was checked, never by FastAPI before it: a request with
no key or the wrong role is refused for that, whatever its body.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from fastapi import Request

from services.shared.errors import ApiError

JSON = "application/json"
NDJSON = "application/x-ndjson"
# Deeper than any submission needs (a pledge's amount sits at depth 3), far below recursion.
MAX_DEPTH = 16


class DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise DuplicateKey(key)
        found[key] = value
    return found


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def media_type(request: Request, accepted: tuple[str, ...]) -> str:
    """The request's media type if it is one of `accepted` (in UTF-8), else 415."""
    header = request.headers.get("content-type", "")
    kind, *parameters = (part.strip().lower() for part in header.split(";"))
    charset_ok = all(
        not p.startswith("charset=") or p.removeprefix("charset=").strip('"') in ("utf-8", "utf8")
        for p in parameters
    )
    if kind not in accepted or not charset_ok:
        raise ApiError(
            415, "unsupported_media_type",
            f"send the body as {' or '.join(accepted)} in UTF-8, not {header or 'no type'!r}",
            field="Content-Type", rule="media_type", accepted=list(accepted),
        )
    return kind


def parse_json(body: bytes, field: str = "body") -> Any:
    """The JSON value of `body`; numbers with a fraction become exact Decimals, never floats."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "malformed_body", f"{field} is not UTF-8 (byte {exc.start})",
                       field=field, rule="utf8") from None
    try:
        value = json.loads(text, object_pairs_hook=_refuse_duplicates,
                           parse_float=Decimal, parse_constant=_refuse_constant)
    except DuplicateKey as exc:
        raise ApiError(422, "invalid_request", f"{field}: the key {exc.key!r} appears twice",
                       field=field, rule="duplicate_key", key=exc.key) from None
    except RecursionError:
        raise _too_deep(field) from None
    except ValueError as exc:  # JSONDecodeError, or an integer of thousands of digits
        raise ApiError(422, "invalid_request", f"{field} is not JSON: {exc}"[:300],
                       field=field, rule="json") from None
    if _depth(value) > MAX_DEPTH:
        raise _too_deep(field)
    return value


def _too_deep(field: str) -> ApiError:
    return ApiError(422, "invalid_request", f"{field} nests deeper than {MAX_DEPTH} levels",
                    field=field, rule="max_depth", max_depth=MAX_DEPTH)


def _depth(value: Any) -> int:
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest
