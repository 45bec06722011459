"""Submit the demo scenario to a running registry, one `POST /v1/events` per event, in order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from services.demo.scenario import expected_totals, scenario

SUCCESS = (200, 201)


class DemoFailed(Exception):
    """The demo could not be submitted: the registry refused an event or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        event_id: str | None = None,
        status: int | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.event_id = event_id
        self.status = status
        self.body = body


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500]


def run_demo(
    url: str,
    api_key: str,
    *,
    timeout: float = 10.0,
    out: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """POST every scenario event to `{url}/v1/events` and return a summary.

    201 (recorded) and 200 (a repeat of an event already recorded) count as success, so running
    the demo twice is harmless. Any other answer raises DemoFailed with the status, the error
    body and the event id; an unreachable registry raises DemoFailed naming the URL.
    """
    endpoint = url.rstrip("/") + "/v1/events"
    headers = {"Authorization": f"Bearer {api_key}"}
    bodies = scenario()
    last_position: int | None = None
    with httpx.Client(timeout=timeout, headers=headers) as client:
        for body in bodies:
            event_id = body["event_id"]
            try:
                response = client.post(endpoint, json=body)
            except httpx.HTTPError as exc:
                reason = str(exc) or type(exc).__name__
                raise DemoFailed(
                    f"cannot reach the registry at {url}: {reason}", event_id=event_id
                ) from None
            if response.status_code not in SUCCESS:
                error = _json_or_text(response)
                raise DemoFailed(
                    f"{body['type']} {event_id} refused with HTTP {response.status_code}: {error}",
                    event_id=event_id,
                    status=response.status_code,
                    body=error,
                )
            receipt = _json_or_text(response)
            position = receipt.get("position") if isinstance(receipt, dict) else None
            if isinstance(position, int):
                last_position = position
            replayed = " (replayed)" if response.status_code == 200 else ""
            out(f"{body['type']:<22} {event_id:<58} position {position}{replayed}")
    return {
        "events": len(bodies),
        "last_position": last_position,
        "expected_totals": expected_totals(bodies),
    }
