"""Submit the demo to a running registry: the article's scenario one `POST /v1/events` per
event, in order, then (with `--history`) a year of illustrative activity in batches."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

import httpx
from tqdm import tqdm

from services.demo.history import history as demo_history
from services.demo.scenario import expected_totals, scenario

SUCCESS = (200, 201)
# Events per `POST /v1/events/batch` of the history (the registry takes up to 1,000).
HISTORY_BATCH = 50


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
    history: bool = False,
    timeout: float = 10.0,
    out: Callable[[str], Any] = print,
    progress: TextIO | None = None,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """POST every scenario event to `{url}/v1/events` and return a summary.

    201 (recorded, or `replayed: true` for an event already recorded) and 200 count as
    success, so running the demo twice is harmless. Any other answer raises DemoFailed with the
    status, the error body and the event id; an unreachable registry raises DemoFailed naming
    the URL.

    With `history`, the year of illustrative activity (services.demo.history) follows through
    `{url}/v1/events/batch`, a batch at a time, its progress on `progress` (stderr by
    default); a repeated event is replayed, not recorded again. `client` lets a test pass an
    httpx client of its own (such as FastAPI's TestClient).
    """
    base = url.rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"}
    bodies = scenario()
    last_position: int | None = None
    own_client = client is None
    http = httpx.Client(timeout=timeout) if client is None else client
    try:
        for body in bodies:
            event_id = body["event_id"]
            try:
                response = http.post(base + "/v1/events", json=body, headers=headers)
            except httpx.HTTPError as exc:
                raise _unreachable(url, exc, event_id) from None
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
            was_replayed = response.status_code == 200 or (
                isinstance(receipt, dict) and receipt.get("replayed") is True)
            replayed = " (replayed)" if was_replayed else ""
            out(f"{body['type']:<22} {event_id:<58} position {position}{replayed}")
        summary: dict[str, Any] = {}
        if history:
            later = demo_history()
            summary = _post_history(http, base, url, headers, later,
                                    sys.stderr if progress is None else progress)
            bodies = bodies + later
            last_position = summary.pop("last_position") or last_position
    finally:
        if own_client:
            http.close()
    return {
        "events": len(bodies),
        "last_position": last_position,
        "expected_totals": expected_totals(bodies),
        **summary,
    }


def _unreachable(url: str, exc: httpx.HTTPError, event_id: str) -> DemoFailed:
    reason = str(exc) or type(exc).__name__
    return DemoFailed(f"cannot reach the registry at {url}: {reason}", event_id=event_id)


def _post_history(
    http: httpx.Client,
    base: str,
    url: str,
    headers: dict[str, str],
    bodies: list[dict[str, Any]],
    stream: TextIO,
) -> dict[str, Any]:
    """POST the history in batches; stop at the first refused item."""
    recorded = replayed = 0
    last_position: int | None = None
    bar = tqdm(total=len(bodies), unit=" events", desc="history", file=stream,
               disable=not stream.isatty())
    try:
        for start in range(0, len(bodies), HISTORY_BATCH):
            batch = bodies[start:start + HISTORY_BATCH]
            try:
                response = http.post(base + "/v1/events/batch", json=batch, headers=headers)
            except httpx.HTTPError as exc:
                raise _unreachable(url, exc, batch[0]["event_id"]) from None
            answer = _json_or_text(response)
            if response.status_code != 200 or not isinstance(answer, dict):
                raise DemoFailed(
                    f"history batch from {batch[0]['event_id']} refused with HTTP "
                    f"{response.status_code}: {answer}",
                    event_id=batch[0]["event_id"], status=response.status_code, body=answer,
                )
            for item in answer["items"]:
                body = batch[item["index"]]
                if item["status"] not in SUCCESS:
                    error = item.get("error", item)
                    raise DemoFailed(
                        f"{body['type']} {body['event_id']} refused with HTTP "
                        f"{item['status']}: {error}",
                        event_id=body["event_id"], status=item["status"], body=error,
                    )
                receipt = item["receipt"]
                last_position = receipt["position"]
                if receipt.get("replayed"):
                    replayed += 1
                else:
                    recorded += 1
            bar.update(len(batch))
            if bar.disable:  # not a terminal: a line a batch instead of a bar
                done = start + len(batch)
                stream.write(f"history: {done}/{len(bodies)} events "
                             f"({recorded} new, {replayed} already recorded)\n")
                stream.flush()
    finally:
        bar.close()
    return {"history_events": len(bodies), "history_recorded": recorded,
            "history_replayed": replayed, "last_position": last_position}
