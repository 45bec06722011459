"""The pages' lists in the past, a deal page's chain check, and the console's export
download, on the embedded app (SQLite), with the article's scenario recorded."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from services.registry.audit.export import verify_export
from services.shared.api_keys import Role
from tests.integration.test_http_api import Registry
from tests.integration.test_pages import csrf_of, sign_in

pytestmark = pytest.mark.integration

# Between the scenario's steps (see services/demo/scenario.py): firms registered on May 12,
# the meeting on May 20, five deals proposed June 3-16, the consortium cancelled later on.
BEFORE_THE_DEALS = "2025-05-25"
AFTER_TWO_DEALS = "2025-06-06"


@pytest.fixture
def registry(scenario_registry: Registry) -> Registry:
    return scenario_registry


def rows_of(html: str, table: str) -> list[str]:
    """The body rows of table `table` (its grid name), as raw HTML."""
    found = re.search(rf'<table[^>]*data-grid="{table}"[^>]*>(.*?)</table>', html, re.S)
    assert found, f"no table {table}"
    body = found.group(1).split("<tbody>", 1)[-1]
    return [row for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
            if 'class="empty"' not in row]


def test_the_deal_list_in_the_past_holds_the_deals_proposed_by_then(registry: Registry) -> None:
    sign_in(registry)
    now = registry.get("/v1/deals").json()
    page = registry.client.get("/deals").text
    assert len(rows_of(page, "deals")) == now["total"] == 5

    early = registry.client.get(f"/deals?as_of={AFTER_TWO_DEALS}").text
    titles = [d["title"] for d in sorted(now["items"], key=lambda d: d["proposed_at"])[:2]]
    assert len(rows_of(early, "deals")) == 2
    assert all(title in early for title in titles)
    assert "2 deals" in early
    assert len(rows_of(registry.client.get(f"/deals?as_of={BEFORE_THE_DEALS}").text,
                       "deals")) == 0

    # Filters apply to the deals as they were: every deal was only proposed then.
    agreed_now = registry.get("/v1/deals", status="agreed").json()["total"]
    assert agreed_now > 0
    assert len(rows_of(registry.client.get(
        f"/deals?status=agreed&as_of={AFTER_TWO_DEALS}").text, "deals")) == 0
    assert len(rows_of(registry.client.get(
        f"/deals?status=proposed&as_of={AFTER_TWO_DEALS}").text, "deals")) == 2

    # By recorded position: up to the second deal's proposal, the first two deals.
    proposals = sorted(registry.get(f"/v1/deals/{d['deal_id']}/events").json()["items"][0]
                       ["position"] for d in now["items"])
    recorded = registry.client.get(f"/deals?recorded_as_of={proposals[1]}").text
    assert len(rows_of(recorded, "deals")) == 2


def test_firms_and_meetings_in_the_past(registry: Registry) -> None:
    sign_in(registry)
    assert len(rows_of(registry.client.get("/firms").text, "firms")) == 12
    before = registry.client.get("/firms?as_of=2025-05-01").text
    assert len(rows_of(before, "firms")) == 0
    firm = registry.client.get("/firms/attero?as_of=2025-05-01")
    assert firm.status_code == 200 and 'id="not-yet"' in firm.text
    then = registry.client.get(f"/firms/attero?as_of={BEFORE_THE_DEALS}").text
    assert 'id="not-yet"' not in then and len(rows_of(then, "deals")) == 0
    assert len(rows_of(registry.client.get("/firms/attero").text, "deals")) > 0

    assert len(rows_of(registry.client.get("/meetings").text, "meetings")) == 1
    assert len(rows_of(registry.client.get("/meetings?as_of=2025-05-19").text,
                       "meetings")) == 0
    held = registry.client.get("/meetings?as_of=2025-05-21").text
    assert len(rows_of(held, "meetings")) == 1 and 'id="meeting-count"' in held


def first_deal(registry: Registry) -> dict:
    return min(registry.get("/v1/deals").json()["items"], key=lambda d: d["proposed_at"])


def test_a_deal_page_says_its_chain_verifies_and_names_an_altered_event(
        registry: Registry) -> None:
    sign_in(registry)
    deal = first_deal(registry)
    page = registry.client.get(f"/deals/{deal['deal_id']}").text
    assert 'id="chain-status" class="ok"' in page
    assert f"{deal['version']} events, each hash recomputed" in page

    # Someone with write access to the database edits the deal's second stored event.
    events = registry.get(f"/v1/deals/{deal['deal_id']}/events").json()["items"]
    target = events[1]["position"]
    with sqlite3.connect(registry.settings.data_dir / "events.db") as db:
        [table] = [n for (n,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE '%event%'")
            if db.execute(f"SELECT count(*) FROM {n} WHERE rowid=?", (target,)).fetchone()[0]
            and "state" in [c[1] for c in db.execute(f"PRAGMA table_info({n})")]]
        state = bytes(db.execute(f"SELECT state FROM {table} WHERE rowid=?",
                                 (target,)).fetchone()[0])
        marker = b'"recorded_by":"'
        at = state.index(marker) + len(marker)
        db.execute(f"UPDATE {table} SET state=? WHERE rowid=?",
                   (state[:at] + bytes([state[at] + 1]) + state[at + 1:], target))
    broken = registry.client.get(f"/deals/{deal['deal_id']}").text
    assert 'id="chain-status" class="failed"' in broken
    assert f"(position {target})" in broken and "altered after recording" in broken


def test_an_auditor_downloads_an_export_that_checks_offline(registry: Registry) -> None:
    sign_in(registry, Role.AUDITOR, "/audit")
    console = registry.client.get("/audit").text
    forged = registry.client.post("/audit/checkpoint", data={"csrf": "not-it"},
                                  follow_redirects=False)
    assert forged.status_code == 403
    taken = registry.client.post("/audit/checkpoint", data={"csrf": csrf_of(console)},
                                 follow_redirects=False)
    assert taken.status_code == 303, taken.text
    last = registry.head()
    console = registry.client.get("/audit").text
    assert f'id="export-to" value="{last}"' in console

    download = registry.client.get(f"/audit/export?from=1&to={last}&proofs=1")
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("application/x-ndjson")
    assert f'filename="dealreg-export-1-{last}.ndjson"' in \
        download.headers["content-disposition"]
    lines = download.text.splitlines()
    assert len(lines) == last + 1 and json.loads(lines[0])["record"] == "header"
    check = verify_export(lines)
    assert check.ok and check.events == last, check.message
    # One byte of an exported event changed: the offline check names its line.
    altered = lines[:]
    at = next(n for n, line in enumerate(altered) if '"recorded_by":"' in line)
    altered[at] = altered[at].replace('"recorded_by":"', '"recorded_by":"x', 1)
    assert verify_export(altered).line == at + 1

    for query, field, rule in ((f"from=0&to={last}", "from", "exportable_range"),
                               ("from=1&to=x", "from", "position"),
                               (f"from={last + 1}&to={last + 5}", "from", "exportable_range"),
                               ("from=1&to=100001", "to", "max_range")):
        refused = registry.client.get(f"/audit/export?{query}")
        assert refused.status_code == 422, query
        error = refused.json()["error"]
        assert (error["field"], error["rule"]) == (field, rule), query


def test_a_reader_cannot_download_an_export(registry: Registry) -> None:
    sign_in(registry)
    registry.client.post("/v1/audit/checkpoints", headers=registry.headers(Role.AUDITOR))
    assert registry.client.get("/audit/export?from=1&to=2").status_code == 403


def test_the_overview_counts_what_existed_then(registry: Registry) -> None:
    sign_in(registry)

    def count(page: str, what: str) -> int:
        found = re.search(rf'id="count-{what}">(\d+)<', page)
        assert found, what
        return int(found.group(1))

    now = registry.client.get("/").text
    assert (count(now, "deals"), count(now, "firms"), count(now, "meetings")) == (5, 12, 1)
    then = registry.client.get(f"/?as_of={AFTER_TWO_DEALS}").text
    assert (count(then, "deals"), count(then, "firms"), count(then, "meetings")) == (2, 12, 1)
    early = registry.client.get("/?as_of=2025-05-01").text
    assert (count(early, "deals"), count(early, "firms"), count(early, "meetings")) == (0, 0, 0)
