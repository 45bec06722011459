"""The response models describe the read API's JSON without changing it: every answer is the
views' JSON as it was before the models, key for key (no key dropped, none added as null)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from services.demo.scenario import scenario
from services.embedded.app import create_embedded_app
from services.projections.read_model.deal_history import PastBound
from services.projections.read_model.queries import Page, ReadModelQueries
from services.projections.read_model.tables import TotalsDimension
from services.projections.read_model.visibility import Viewer, event_for, meeting_for
from services.shared.api_keys import Role
from services.shared.settings import Settings

AS_OF = "2025-08-01T00:00:00+05:30"
# The answers' key, an admin's: it sees every field (read_model/visibility).
ADMIN = Viewer("admin", sees_everything=True)


class Demo:
    def __init__(self, client: TestClient, headers: dict[str, str], head: int) -> None:
        self.client = client
        self.headers = headers
        self.head = head
        self.queries: ReadModelQueries = client.app.state.read_queries  # type: ignore[attr-defined]

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params={"min_position": self.head, **params},
                                   headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("demo"), projection_worker="thread",
                        projection_poll_seconds=0.05)
    app = create_embedded_app(settings)
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {app.state.api_keys.create('admin', Role.ADMIN)}"}
        receipts = [record(client, headers, body) for body in scenario()]
        cancelled = record(client, headers, {
            "event_id": "answers-deal", "type": "deal_proposed", "occurred_at": AS_OF,
            "payload": {"title": "Abandoned plant", "format": "processing_facility",
                        "sector": "recycling", "parties": ["tata-motors", "suzuki-motor"]}})
        receipts.append(record(client, headers, {
            "event_id": "answers-cancel", "type": "deal_cancelled", "occurred_at": AS_OF,
            "payload": {"deal_id": cancelled["aggregate_id"], "reason": "site not found"}}))
        yield Demo(client, headers, receipts[-1]["position"])


def record(client: TestClient, headers: dict[str, str], body: dict[str, Any]) -> Any:
    response = client.post("/v1/events", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def paged(page: Page, position: int, limit: int = 50) -> Any:
    return as_json({"items": page.items, "limit": limit, "offset": 0, "total": page.total,
                    "position": position})


def test_totals_now_and_in_the_past(demo: Demo) -> None:
    until = datetime.fromisoformat(AS_OF).astimezone(UTC)
    for dimension in TotalsDimension:
        path = f"/v1/pledges/by-{dimension.value}"
        assert demo.get(path) == as_json(
            {"items": demo.queries.pledge_totals(dimension), "position": demo.head})
        past = demo.queries.pledge_totals_as_of(dimension, PastBound(demo.head, until))
        assert demo.get(path, as_of=AS_OF) == as_json({
            "items": past, "position": demo.head,
            "past": {"clock": "business", "as_of": until.isoformat()}})
    inr = [money for item in demo.get("/v1/pledges/by-sector")["items"]
           for money in item["by_currency"] if money["currency"] == "INR"]
    others = [money for item in demo.get("/v1/pledges/by-sector")["items"]
              for money in item["by_currency"] if money["currency"] != "INR"]
    assert inr and all("crore" in money and "display" in money for money in inr)
    assert others and not any("crore" in money or "display" in money for money in others)


def test_every_deal_now_and_after_each_version(demo: Demo) -> None:
    deals = demo.queries.deals(limit=500)
    assert demo.get("/v1/deals", limit=500) == paged(deals, demo.head, limit=500)
    shapes: set[str] = set()
    for summary in deals.items:
        deal_id = UUID(summary["deal_id"])
        now = demo.queries.deal(deal_id)
        assert now is not None
        assert demo.get(f"/v1/deals/{deal_id}") == as_json({**now, "position": demo.head})
        shapes.update(key for key in ("tech_transfers", "joint_ventures", "facilities")
                      if now[key])
        shapes.update({"cancellation"} if now["cancellation"] else set())
        for version in range(1, summary["version"] + 1):
            at = demo.queries.position_of_version(deal_id, version)
            assert at is not None
            then = demo.queries.deal_as_of(deal_id, PastBound(at))
            assert demo.get(f"/v1/deals/{deal_id}", version=version) == as_json(
                {**then, "past": {"clock": "version", "version": version}, "position": at})
        events = demo.queries.deal_events(deal_id)
        assert events is not None
        assert demo.get(f"/v1/deals/{deal_id}/events") == paged(
            Page([event_for(ADMIN, e) for e in events.items], events.total), demo.head)
    # The demo exercises every agreement shape, so each model met a real one.
    assert shapes == {"tech_transfers", "joint_ventures", "facilities", "cancellation"}


def test_firms_meetings_and_what_was_recorded(demo: Demo) -> None:
    assert demo.get("/v1/firms", limit=500) == paged(demo.queries.firms(limit=500), demo.head,
                                                     limit=500)
    held = demo.queries.meetings()
    assert demo.get("/v1/meetings") == paged(
        Page([meeting_for(ADMIN, m) for m in held.items], held.total), demo.head)
    assert demo.get("/v1/audit/events", limit=500) == paged(
        demo.queries.recorded(limit=500), demo.head, limit=500)
