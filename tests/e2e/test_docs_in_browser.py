"""As a new partner would, in a real Chromium: open /docs (served without a CDN), Authorize with
a partner key, record an event with "Try it out", and find it recorded."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_embedded_process import Service

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root in a closed network: no sandbox, and nothing that phones home (see the env notes).
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    running = Service(tmp_path / "data", tmp_path / "service.log")
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.slow
def test_a_partner_records_an_event_from_the_docs_page(service: Service, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: ./scripts/test.sh installs Debian's chromium")
    key = service.keys()["partner"]
    event = {"event_id": "docs-1", "type": "firm_registered",
             "occurred_at": "2026-03-01T10:30:00+05:30",
             "payload": {"code": "attero", "name": "Attero Recycling", "country": "IN",
                         "kind": "recycler"}}
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            offline = []
            page.on("request", lambda r: offline.append(r.url)
                    if not r.url.startswith(service.url) and not r.url.startswith("data:")
                    else None)
            page.goto(f"{service.url}/docs")
            page.locator("button.authorize").first.click()
            page.locator(".auth-container input").first.fill(key)
            page.locator(".auth-btn-wrapper button.authorize").first.click()
            page.locator(".auth-btn-wrapper button.btn-done").first.click()

            operation = page.locator("#operations-write-record_event_v1_events_post")
            operation.locator(".opblock-summary").first.click()
            operation.locator("button.try-out__btn").click()
            operation.locator("textarea.body-param__text").fill(json.dumps(event))
            operation.locator("button.execute").click()
            status = operation.locator(
                ".live-responses-table tr.response .response-col_status").first
            status.wait_for()
            assert status.inner_text().strip().startswith("201"), \
                operation.locator(".live-responses-table").inner_text()
            page.screenshot(path=str(tmp_path / "docs.png"))
        finally:
            browser.close()
    assert offline == [], "the docs page fetched from outside the service"
    firms = httpx.get(f"{service.url}/v1/firms", headers={"Authorization": f"Bearer {key}"},
                      params={"min_position": 1}).json()
    assert [f["code"] for f in firms["items"]] == ["attero"]
