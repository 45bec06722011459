"""As a reader and an auditor would, in a real Chromium against `dealreg up`: sign in with a
pasted key, read the overview (its figures are the read API's), filter deals, open one and
its history, travel back in time, find the audit console closed to readers and open to
auditors, sign out; the key is never in a URL or in the browser's storage."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_docs_in_browser import CHROMIUM, CHROMIUM_FLAGS
from tests.e2e.test_embedded_process import DEALREG, Service

pytestmark = pytest.mark.e2e
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
BEFORE_CHANGES = "2025-08-01"  # before the demo's revision and withdrawal


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    running = Service(tmp_path / "data", tmp_path / "service.log")
    try:
        yield running
    finally:
        running.stop()


def api(service: Service, key: str, path: str, **params: Any) -> Any:
    response = httpx.get(f"{service.url}{path}", params=params, timeout=30,
                         headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()


def record(service: Service, key: str, body: dict[str, Any]) -> int:
    """Record one event through the HTTP API; its log position."""
    response = httpx.post(f"{service.url}/v1/events", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 201, response.text
    return int(response.json()["position"])


def new_pledge(pledge_id: str, deal: dict[str, Any], low: str, high: str) -> dict[str, Any]:
    return {"event_id": f"browser-{pledge_id}", "type": "pledge_made",
            "occurred_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "payload": {"deal_id": deal["deal_id"], "pledge_id": pledge_id,
                        "firm": deal["parties"][0],
                        "amount": {"low": low, "high": high, "currency": "USD"}}}


# In the page: each sector's [low, high] as the Chart.js chart holds it, and the by-sector
# table's, keyed by sector.
CHART_RANGES = """() => {
  const chart = Chart.getChart(document.getElementById("chart-sector"));
  if (!chart) { return null; }
  const data = chart.data.datasets[0].data;
  return Object.fromEntries(chart.data.labels.map((label, i) => [label, data[i]]));
}"""
TABLE_RANGES = """() => Object.fromEntries(
  Array.from(document.querySelectorAll("#table-by-sector tbody tr")).map(row => {
    const cells = row.querySelectorAll("td");
    return [cells[0].dataset.value, [cells[2].dataset.value, cells[3].dataset.value]];
  }))"""
NOT_RELOADED = "() => window.__noReload === true"


def chart_ranges(answer: dict[str, Any]) -> dict[str, list[float]]:
    return {i["sector"]: [float(i["usd"]["low"]), float(i["usd"]["high"])]
            for i in answer["items"]}


def table_ranges(answer: dict[str, Any]) -> dict[str, list[str]]:
    return {i["sector"]: [i["usd"]["low"], i["usd"]["high"]] for i in answer["items"]}


def usd_totals(answer: dict[str, Any]) -> tuple[str, str]:
    low = sum(Decimal(i["usd"]["low"]) for i in answer["items"])
    high = sum(Decimal(i["usd"]["high"]) for i in answer["items"])
    return str(low), str(high)


def no_overflow(page: Any) -> bool:
    return bool(page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"))


def sign_in(page: Any, url: str, key: str) -> None:
    page.goto(f"{url}/")
    page.wait_for_url("**/sign-in?next=%2F")
    page.locator("#key").fill(key)
    page.locator("form.sign-in button[type=submit]").click()
    page.locator("#headline-usd").wait_for()


@pytest.mark.slow
def test_reader_and_auditor_use_the_dashboard(service: Service) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: ./scripts/test.sh installs Debian's chromium")
    keys = service.keys()
    demo = subprocess.run([*DEALREG, "demo", "--url", service.url, "--api-key", keys["partner"]],
                          capture_output=True, text=True, timeout=120)
    assert demo.returncode == 0, demo.stderr
    last = int(demo.stdout.strip().splitlines()[-1].rsplit(" ", 1)[-1])
    reader, auditor = keys["reader"], keys["auditor"]
    sectors = api(service, reader, "/v1/pledges/by-sector", min_position=last)
    earlier = api(service, reader, "/v1/pledges/by-sector", as_of=BEFORE_CHANGES)
    assert usd_totals(earlier) != usd_totals(sectors)
    recycling = api(service, reader, "/v1/deals", sector="recycling")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    urls: list[str] = []
    refused: list[str] = []  # a script error, or what the pages' Content-Security-Policy blocked
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.on("request", lambda r: urls.append(r.url))
            page.on("console", lambda m: refused.append(m.text)
                    if "Content Security Policy" in m.text else None)
            page.on("pageerror", lambda e: refused.append(str(e)))

            # Sign in once; the overview's figures are GET /v1/pledges/by-sector's.
            sign_in(page, service.url, reader)
            headline = page.locator("#headline-usd")
            assert (headline.get_attribute("data-low"), headline.get_attribute("data-high")) \
                == usd_totals(sectors)
            shown = {
                row.locator("td").nth(0).get_attribute("data-value"): (
                    row.locator("td").nth(2).get_attribute("data-value"),
                    row.locator("td").nth(3).get_attribute("data-value"))
                for row in page.locator("#table-by-sector tbody tr").all()}
            assert shown == {i["sector"]: (i["usd"]["low"], i["usd"]["high"])
                             for i in sectors["items"]}
            # The by-sector chart is Chart.js's, drawn from the same [low, high] ranges.
            page.wait_for_function(f"() => ({CHART_RANGES})() !== null")
            assert page.evaluate(CHART_RANGES) == chart_ranges(sectors)
            canvas = page.locator("canvas#chart-sector")
            assert canvas.get_attribute("role") == "img"
            summary = page.locator(f"#{canvas.get_attribute('aria-describedby')}")
            assert summary.inner_text().count("–") == len(sectors["items"])
            assert no_overflow(page)
            page.screenshot(path=str(SCREENSHOTS / "overview.png"), full_page=True)

            # A pledge recorded through the API shows on the open overview within 2 s, figures,
            # table and chart, without a reload (the marker set on this document survives).
            page.evaluate("() => { window.__noReload = true; }")
            deal = recycling["items"][0]
            at = record(service, keys["partner"],
                        new_pledge("browser-overview", deal, "5000000", "7000000"))
            grown = api(service, reader, "/v1/pledges/by-sector", min_position=at)
            assert usd_totals(grown) != usd_totals(sectors)
            low, high = usd_totals(grown)
            page.wait_for_function(
                """([low, high]) => {
                  const shown = document.getElementById("headline-usd");
                  return shown.dataset.low === low && shown.dataset.high === high;
                }""", arg=[low, high], timeout=2000)
            assert page.evaluate(TABLE_RANGES) == table_ranges(grown)
            assert page.evaluate(CHART_RANGES) == chart_ranges(grown)
            assert page.evaluate(NOT_RELOADED)
            assert page.locator("[data-live-state]").inner_text() \
                == f"Updated to log position {at}."
            sectors = grown
            assert page.evaluate("document.cookie").find("dealreg_session") == -1  # HttpOnly

            # The deals, filtered by sector; then one deal and its history with hashes.
            page.locator("nav a", has_text="Deals").click()
            page.locator("#filter-sector").select_option("recycling")
            page.locator("form.filters button[type=submit]").click()
            page.wait_for_url("**/deals?sector=recycling**")
            rows = page.locator("#table-deals tbody tr")
            assert rows.count() == recycling["total"] >= 1
            assert {rows.nth(i).locator("td").nth(1).inner_text()
                    for i in range(rows.count())} == {"recycling"}
            deal_id = recycling["items"][0]["deal_id"]
            page.locator(f'a[href="/deals/{deal_id}"]').click()
            page.wait_for_url(f"**/deals/{deal_id}")
            history = api(service, reader, f"/v1/deals/{deal_id}/events")
            events = page.locator("#table-events tbody tr")
            assert events.count() == history["total"]
            assert page.locator(f'td[data-value="{history["items"][-1]["hash"]}"]').count() == 1
            assert no_overflow(page)

            # The open deal page gains the next event in its history, without a reload.
            page.evaluate("() => { window.__noReload = true; }")
            at = record(service, keys["partner"],
                        new_pledge("browser-deal", recycling["items"][0], "1000000", "2000000"))
            history = api(service, reader, f"/v1/deals/{deal_id}/events", min_position=at)
            newest = history["items"][-1]
            assert newest["position"] == at and newest["type"] == "pledge_made"
            page.locator(f'#table-events td[data-value="{newest["hash"]}"]').wait_for(
                timeout=2000)
            assert events.count() == history["total"]
            assert page.evaluate(NOT_RELOADED)
            page.screenshot(path=str(SCREENSHOTS / "deal.png"), full_page=True)

            # Time travel on the overview: the totals as of an earlier business date.
            page.locator("nav a", has_text="Overview").click()
            page.locator("#travel-clock").select_option("as_of")
            page.locator("#travel-value").fill(BEFORE_CHANGES)
            page.locator("form.travel button[type=submit]").click()
            page.locator("[data-travel-state]", has_text="as of business time").wait_for()
            assert (headline.get_attribute("data-low"), headline.get_attribute("data-high")) \
                == usd_totals(earlier)

            # At phone width nothing scrolls sideways.
            page.set_viewport_size({"width": 390, "height": 844})
            for path in ("/", f"/deals/{deal_id}", "/deals", "/firms", "/meetings"):
                page.goto(f"{service.url}{path}")
                assert no_overflow(page), path
            page.set_viewport_size({"width": 1280, "height": 800})

            # A reader finds no audit console.
            assert page.locator("nav a", has_text="Audit").count() == 0
            answer = page.goto(f"{service.url}/audit")
            assert answer is not None and answer.status == 403
            page.locator("#forbidden").wait_for()
            storage = page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
            assert reader not in storage

            # Sign out ends the session.
            page.locator("form.sign-out button").click()
            page.wait_for_url("**/sign-in")
            page.goto(f"{service.url}/deals")
            page.wait_for_url("**/sign-in?next=%2Fdeals")

            # An auditor opens the console and verifies the log.
            sign_in(page, service.url, auditor)
            page.locator("nav a", has_text="Audit").click()
            page.locator("#verification-status", has_text="Not verified").wait_for()
            page.locator("#verify-now").click()
            page.locator("#verification-status", has_text="OK").wait_for()
            assert page.locator("#table-recorded tbody tr").count() >= 1
            assert auditor not in page.evaluate(
                "JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
        finally:
            browser.close()
    assert urls, "the browser made no requests"
    assert refused == [], "a script failed or the page's policy refused something"
    leaked = [u for u in urls if reader in u or auditor in u]
    assert leaked == []
    assert [u for u in urls if not u.startswith(service.url) and not u.startswith("data:")] \
        == [], "the pages fetched from outside the service"
