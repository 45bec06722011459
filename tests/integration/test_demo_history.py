"""`dealreg demo --history` against the embedded service over HTTP: the scenario and a year of
history are recorded once, a second run records nothing, and the read side shows the totals
the bodies add up to, every event marked illustrative by its id."""

from __future__ import annotations

import io
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.cli import build_parser
from services.demo.client import run_demo
from services.demo.history import history, is_fictional_firm_name, is_illustrative
from services.demo.scenario import expected_totals, scenario
from services.embedded.app import create_embedded_app
from services.shared.api_keys import Role
from services.shared.settings import Settings
from tests.integration.test_http_api import in_thread_unless_chosen


class Demo:
    def __init__(self, settings: Settings) -> None:
        self.app = create_embedded_app(in_thread_unless_chosen(settings))
        self.client = TestClient(self.app)
        self.client.__enter__()
        keys = self.app.state.api_keys
        self.partner = keys.create("demo-partner", Role.PARTNER)
        self.auditor = keys.create("demo-auditor", Role.AUDITOR)

    def run(self) -> tuple[dict[str, Any], list[str], str]:
        lines: list[str] = []
        progress = io.StringIO()
        summary = run_demo(str(self.client.base_url), self.partner, history=True,
                           out=lines.append, progress=progress, client=self.client)
        return summary, lines, progress.getvalue()

    def head(self) -> int:
        return int(self.app.state.recording_service.store.head_position())

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params,
                                   headers={"Authorization": f"Bearer {self.auditor}"})
        assert response.status_code == 200, response.text
        return response.json()

    def close(self) -> None:
        self.client.__exit__(None, None, None)


class DemoHistoryContract:
    @pytest.fixture
    def settings(self) -> Settings:
        raise NotImplementedError

    @pytest.fixture
    def demo(self, settings: Settings) -> Iterator[Demo]:
        running = Demo(settings)
        yield running
        running.close()

    def test_history_twice_records_nothing_twice(self, demo: Demo) -> None:
        bodies = scenario() + history()
        first, lines, progress = demo.run()
        assert first["events"] == len(bodies)
        assert first["history_recorded"] == len(history()) and first["history_replayed"] == 0
        assert len(lines) == len(scenario())
        assert progress.splitlines()[-1].startswith(f"history: {len(history())}/")
        head = demo.head()
        assert head == len(bodies) == first["last_position"]  # receipts are beside the log

        again, lines, _ = demo.run()
        assert (again["history_recorded"], again["history_replayed"]) == (0, len(history()))
        assert all(line.endswith("(replayed)") for line in lines)
        assert again["last_position"] == first["last_position"]
        assert demo.head() == head

    def test_read_side_shows_the_totals_and_marks_everything_illustrative(
        self, demo: Demo
    ) -> None:
        summary, _, _ = demo.run()
        position = summary["last_position"]
        by_sector = demo.get("/v1/pledges/by-sector", min_position=position)
        got = {item["sector"]: (Decimal(item["usd"]["low"]), Decimal(item["usd"]["high"]))
               for item in by_sector["items"]}
        want = {sector: (t["low"], t["high"])
                for sector, t in summary["expected_totals"]["by_sector"].items() if t["pledges"]}
        assert got == want
        assert summary["expected_totals"] == expected_totals(scenario() + history())

        recorded = demo.get("/v1/audit/events", limit=500, min_position=position)
        assert recorded["total"] == len(scenario() + history())
        assert all(is_illustrative(item["event_id"]) for item in recorded["items"])
        firms = demo.get("/v1/firms", country="JP", limit=500, min_position=position)
        invented = [f for f in firms["items"] if is_fictional_firm_name(f["name"])]
        assert len(invented) >= 70


class TestDemoHistoryOnSQLite(DemoHistoryContract):
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return Settings(data_dir=tmp_path, projection_poll_seconds=0.05)


@pytest.mark.integration
class TestDemoHistoryOnPostgres(DemoHistoryContract):
    @pytest.fixture
    def settings(self, tmp_path: Path, postgres_url: str) -> Settings:
        return Settings(data_dir=tmp_path, database_url=postgres_url,
                        projection_poll_seconds=0.05)


def test_demo_takes_history_as_a_flag() -> None:
    assert build_parser().parse_args(["demo", "--api-key", "k"]).history is False
    assert build_parser().parse_args(["demo", "--api-key", "k", "--history"]).history is True
