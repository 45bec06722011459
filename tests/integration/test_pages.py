"""The pages over HTTP on the embedded app (SQLite): sessions, CSRF, revoked keys, CSV, and
figures equal to the read API's."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import tomllib
from dataclasses import replace
from decimal import Decimal
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from services.demo.scenario import scenario
from services.shared.api_keys import Role, api_keys, digest
from services.shared.settings import Settings
from tests.integration.test_http_api import Registry, pledge

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(scenario_registry: Registry) -> Registry:
    return scenario_registry


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def sign_in(registry: Registry, role: Role = Role.READER, next_path: str = "/") -> str:
    """Sign the test client in; answers the page's CSRF token."""
    form = registry.client.get("/sign-in")
    assert form.status_code == 200
    answer = registry.client.post(
        "/sign-in", data={"key": registry.keys[role], "csrf": csrf_of(form.text),
                          "next": next_path}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == next_path
    page = registry.client.get(next_path)
    assert page.status_code == 200
    return csrf_of(page.text)


def session_cookie_header(response) -> str:  # type: ignore[no-untyped-def]
    [header] = [h for h in response.headers.get_list("set-cookie")
                if h.startswith("dealreg_session=")]
    return header


def test_pages_stay_out_of_the_openapi_document(registry: Registry) -> None:
    published = registry.client.get("/openapi.json").json()["paths"]
    assert [p for p in published if not p.startswith(("/v1/", "/healthz", "/readyz"))] == []
    for page in ("/", "/deals", "/audit", "/sign-in"):
        assert page not in published
        assert registry.client.get(page, follow_redirects=False).status_code in (200, 303)
    for path in ("/healthz", "/readyz", "/metrics", "/docs"):
        assert registry.client.get(path).status_code == 200, path


def test_a_visitor_without_a_session_is_sent_to_sign_in(registry: Registry) -> None:
    answer = registry.client.get("/deals?sector=recycling", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/sign-in?next=%2Fdeals%3Fsector%3Drecycling"


def test_the_session_cookie_is_signed_httponly_and_samesite(registry: Registry) -> None:
    form = registry.client.get("/sign-in")
    answer = registry.client.post("/sign-in", data={
        "key": registry.keys[Role.READER], "csrf": csrf_of(form.text), "next": "/"},
        follow_redirects=False)
    header = session_cookie_header(answer)
    assert "HttpOnly" in header and "SameSite=lax" in header and "Path=/" in header
    value = header.split(";")[0].split("=", 1)[1]
    assert registry.keys[Role.READER] not in header
    assert digest(registry.keys[Role.READER]) not in value  # signed and encoded, not bare
    assert registry.client.get("/", follow_redirects=False).status_code == 200

    # One character changed in the signed value: refused, and the cookie is cleared.
    tampered = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    registry.client.cookies.set("dealreg_session", tampered)
    refused = registry.client.get("/", follow_redirects=False)
    assert refused.status_code == 303 and refused.headers["location"].startswith("/sign-in")


def test_an_unknown_key_or_a_forged_form_does_not_sign_in(registry: Registry) -> None:
    form = registry.client.get("/sign-in")
    unknown = registry.client.post("/sign-in", data={"key": "drk_nope", "csrf":
                                                     csrf_of(form.text), "next": "/"})
    assert unknown.status_code == 401
    assert "dealreg_session=" not in "".join(unknown.headers.get_list("set-cookie"))
    registry.client.cookies.clear()
    forged = registry.client.post("/sign-in", data={"key": registry.keys[Role.READER],
                                                    "csrf": "made-up", "next": "/"})
    assert forged.status_code == 403
    assert "dealreg_session=" not in "".join(forged.headers.get_list("set-cookie"))


def test_sign_out_needs_the_csrf_token(registry: Registry) -> None:
    token = sign_in(registry)
    forged = registry.client.post("/sign-out", data={"csrf": "not-it"}, follow_redirects=False)
    assert forged.status_code == 403
    assert registry.client.get("/", follow_redirects=False).status_code == 200  # still in
    out = registry.client.post("/sign-out", data={"csrf": token}, follow_redirects=False)
    assert out.status_code == 303
    assert registry.client.get("/", follow_redirects=False).status_code == 303


def test_a_revoked_key_ends_its_session(registry: Registry) -> None:
    sign_in(registry)
    assert registry.client.get("/deals", follow_redirects=False).status_code == 200
    with registry.app.state.api_keys.engine.begin() as conn:
        conn.execute(delete(api_keys).where(
            api_keys.c.digest == digest(registry.keys[Role.READER])))
    assert registry.client.get("/deals", follow_redirects=False).status_code == 303
    assert registry.client.get("/pages/latest.json").status_code == 401


def test_overview_figures_equal_the_read_api(registry: Registry) -> None:
    sign_in(registry)
    api = registry.get("/v1/pledges/by-sector").json()["items"]
    page = registry.client.get("/").text
    assert 'data-low="100000000"' in page and 'data-high="400000000"' in page
    rows = list(csv.DictReader(io.StringIO(
        registry.client.get("/?download=by-sector").text)))
    assert {(r["sector"], r["USD low"], r["USD high"], int(r["pledges"])) for r in rows} == \
        {(i["sector"], i["usd"]["low"], i["usd"]["high"], i["pledge_count"]) for i in api}
    assert "₹" in page and "crore" in page and "¥" in page


def test_every_table_downloads_as_csv(registry: Registry) -> None:
    sign_in(registry, Role.AUDITOR)
    deal_id = registry.get("/v1/deals").json()["items"][0]["deal_id"]
    for path in ("/", "/deals", f"/deals/{deal_id}", "/firms", "/firms/attero", "/meetings",
                 "/audit"):
        page = registry.client.get(path)
        assert page.status_code == 200, path
        names = re.findall(r'data-grid="([a-z-]+)"', page.text)
        assert names, path
        for name in names:
            download = registry.client.get(path, params={"download": name})
            assert download.status_code == 200, (path, name)
            assert download.headers["content-type"].startswith("text/csv")
            assert "attachment" in download.headers["content-disposition"]
            assert next(csv.reader(io.StringIO(download.text)))  # a heading row at least
    events = list(csv.DictReader(io.StringIO(
        registry.client.get("/audit", params={"download": "recorded"}).text)))
    recorded = registry.get("/v1/audit/events", role=Role.AUDITOR).json()["total"]
    assert len(events) == recorded == len(scenario())


def test_the_audit_console_is_for_auditors(registry: Registry) -> None:
    sign_in(registry, Role.READER)
    assert registry.client.get("/audit").status_code == 403
    registry.client.cookies.clear()
    token = sign_in(registry, Role.AUDITOR, "/audit")
    assert "Not verified since" in registry.client.get("/audit").text
    registry.client.post("/audit/verify", data={"csrf": token})
    console = registry.client.get("/audit").text
    assert re.search(r'id="verification-status" class="ok">OK', console), console
    assert registry.client.post("/audit/verify", data={"csrf": "x"}).status_code == 403


def test_time_travel_shows_earlier_totals(registry: Registry) -> None:
    sign_in(registry)
    api = registry.get("/v1/pledges/by-sector", as_of="2025-07-31").json()
    low = sum(int(i["usd"]["low"]) for i in api["items"])
    page = registry.client.get("/", params={"clock": "as_of", "moment": "2025-07-31"}).text
    assert f'data-low="{low}"' in page and "as of business time" in page
    bad = registry.client.get("/", params={"as_of": "soon"})
    assert bad.status_code == 200 and "expected a date" in bad.text


def test_pages_render_for_phone_and_desktop(registry: Registry) -> None:
    sign_in(registry)
    page = registry.client.get("/").text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    css = registry.client.get("/static/pages/site.css")
    assert css.status_code == 200 and "@media (max-width" in css.text


def test_the_live_stream_admits_a_signed_in_browser_and_no_one_else(registry: Registry) -> None:
    limits = registry.app.state.stream_limits
    registry.app.state.stream_limits = replace(limits, lifetime_seconds=0.2)
    assert registry.client.get("/v1/stream", params={"after": 0}).status_code == 401
    sign_in(registry)
    answer = registry.client.get("/v1/stream", params={"after": 0})  # the cookie alone
    assert answer.status_code == 200
    assert answer.text.count("event: recorded") == len(scenario())
    registry.client.post("/sign-out", data={"csrf": csrf_of(registry.client.get("/").text)})
    assert registry.client.get("/v1/stream", params={"after": 0}).status_code == 401


def test_pledges_over_time_end_at_the_live_totals_and_move_with_the_moment(
    registry: Registry,
) -> None:
    sign_in(registry)
    page = registry.client.get("/").text
    assert page.count('class="chart-box chart-band"') == len(registry.get(
        "/v1/pledges/by-sector").json()["items"])

    def last_month(params: dict[str, str]) -> dict[str, tuple[str, str]]:
        rows = list(csv.DictReader(io.StringIO(registry.client.get(
            "/", params={**params, "download": "over-time"}).text)))
        final = max(rows, key=lambda r: r["as of"])
        sectors = {name.rsplit(" USD ", 1)[0] for name in final if " USD " in name}
        return {s: (final[f"{s} USD low"], final[f"{s} USD high"]) for s in sectors
                if final[f"{s} USD high"] != "0"}

    live = registry.get("/v1/pledges/by-sector").json()["items"]
    assert last_month({}) == {i["sector"]: (i["usd"]["low"], i["usd"]["high"]) for i in live}
    past = registry.get("/v1/pledges/by-sector", as_of="2025-08-01").json()["items"]
    assert last_month({"as_of": "2025-08-01"}) == {
        i["sector"]: (i["usd"]["low"], i["usd"]["high"]) for i in past}


def test_demo_data_is_labelled_illustrative_and_partner_data_is_not(
    registry: Registry, tmp_path: Path,
) -> None:
    sign_in(registry)
    assert "Illustrative data" in registry.client.get("/").text  # the scenario is the demo's
    partners_only = Registry(Settings(data_dir=tmp_path / "partners"))
    try:
        assert partners_only.post({
            "event_id": "p-1", "type": "firm_registered",
            "occurred_at": "2025-07-01T10:00:00+05:30",
            "payload": {"code": "real-jp", "name": "Real KK", "country": "JP",
                        "kind": "manufacturer"}}).status_code == 201
        partners_only.get("/v1/firms", min_position=partners_only.head())
        sign_in(partners_only)
        assert "Illustrative data" not in partners_only.client.get("/").text
    finally:
        partners_only.close()


# -- charts and live pages -------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "services" / "projections" / "pages"
VENDORED = "/static/pages/vendor/chartjs"
LIVE_PAGES = ("/", "/deals", "/firms", "/firms/attero", "/meetings")


class ParsedPage(HTMLParser):
    """A page's elements as (tag, attributes) and each <script>'s text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[tuple[dict[str, str], str]] = []
        self._script: dict[str, str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        self.elements.append((tag, found))
        if tag == "script":
            self._script = found
            self.scripts.append((found, ""))

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None

    def by_id(self, wanted: str) -> dict[str, str] | None:
        return next((a for _, a in self.elements if a.get("id") == wanted), None)

    def island(self, wanted: str) -> dict[str, Any]:
        """The JSON island (a chart's spec) with id `wanted`."""
        [text] = [t for a, t in self.scripts if a.get("id") == wanted]
        found: dict[str, Any] = json.loads(text)
        return found


def ranges_of(items: list[dict[str, Any]], label: str) -> dict[str, tuple[Decimal, Decimal]]:
    return {str(i[label]): (Decimal(i["usd"]["low"]), Decimal(i["usd"]["high"])) for i in items}


def test_chart_islands_hold_the_read_apis_ranges(registry: Registry) -> None:
    sign_in(registry)
    page = ParsedPage(registry.client.get("/").text)
    sectors = registry.get("/v1/pledges/by-sector").json()["items"]
    countries = registry.get("/v1/pledges/by-country").json()["items"]

    def drawn(chart_id: str) -> dict[str, tuple[Decimal, Decimal]]:
        spec = page.island(f"{chart_id}-data")
        assert spec["kind"] == "range"
        assert all(len(pair) == 2 for pair in spec["ranges"])  # a range, not a midpoint
        return {label: (Decimal(low), Decimal(high))
                for label, (low, high) in zip(spec["labels"], spec["ranges"], strict=True)}

    assert drawn("chart-sector") == ranges_of(sectors, "sector")
    assert drawn("chart-country") == ranges_of(countries, "country")
    firms = sorted(registry.get("/v1/pledges/by-firm").json()["items"],
                   key=lambda f: (-Decimal(f["usd"]["high"]), f["firm"]["code"]))[:10]
    assert drawn("chart-firms") == {
        f["firm"]["name"] or f["firm"]["code"]: (Decimal(f["usd"]["low"]),
                                                 Decimal(f["usd"]["high"])) for f in firms}
    # Over time: per sector a band whose last low and high are the live totals.
    for item in sectors:
        band = page.island(f"chart-over-time-{item['sector']}-data")
        assert band["kind"] == "band" and len(band["low"]) == len(band["high"])
        assert (Decimal(band["low"][-1]), Decimal(band["high"][-1])) == \
            (Decimal(item["usd"]["low"]), Decimal(item["usd"]["high"]))


def test_every_chart_has_a_name_a_text_summary_and_its_table(registry: Registry) -> None:
    sign_in(registry)
    html = registry.client.get("/").text
    page = ParsedPage(html)
    canvases = [a for tag, a in page.elements if tag == "canvas"]
    assert len(canvases) >= 4
    for canvas in canvases:
        assert canvas["role"] == "img" and canvas["aria-label"], canvas
        summary = page.by_id(canvas["aria-describedby"])
        assert summary is not None and "visually-hidden" in summary["class"], canvas
        assert page.by_id(canvas["data-chart"]) is not None  # its JSON island
    sectors = registry.get("/v1/pledges/by-sector").json()["items"]
    for sector in sectors:
        assert re.search(rf'id="chart-sector-summary"[^>]*>[^<]*{sector["sector"]}: '
                         r'\$[0-9.]+[KMB]?–\$[0-9.]+[KMB]?', html), sector["sector"]
    for table in ("by-sector", "by-country", "top-firms", "over-time"):
        assert page.by_id(f"table-{table}") is not None, table
    # No script of ours inline: the islands are data, the rest loads from /static.
    for attrs, text in page.scripts:
        assert attrs.get("type") == "application/json" or (attrs.get("src") and not
                                                               text.strip()), attrs


def test_the_vendored_chart_library_is_served_from_our_own_static_files(
    registry: Registry,
) -> None:
    bundle = registry.client.get(f"{VENDORED}/chart.umd.min.js")
    assert bundle.status_code == 200
    assert "javascript" in bundle.headers["content-type"]
    assert bundle.content.startswith(b"/*!\n * Chart.js v4.")
    license_file = registry.client.get(f"{VENDORED}/LICENSE.md")
    assert license_file.status_code == 200 and "MIT License" in license_file.text
    # The bytes are the ones the README and scripts/vendor-chartjs.sh pin.
    served = hashlib.sha256(bundle.content).hexdigest()
    assert served in (PAGES / "static/vendor/chartjs/README.md").read_text()
    assert f'BUNDLE_SHA256="{served}"' in (ROOT / "scripts/vendor-chartjs.sh").read_text()
    ours = registry.client.get("/static/pages/charts.js")
    assert ours.status_code == 200 and "javascript" in ours.headers["content-type"]
    # Every static file ships in the package.
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["services.projections.pages"]
    unpackaged = [str(f.relative_to(PAGES)) for f in (PAGES / "static").rglob("*")
                  if f.is_file() and not any(fnmatch(str(f.relative_to(PAGES)), p)
                                             for p in patterns)]
    assert unpackaged == []


def test_no_page_loads_or_links_another_host(registry: Registry) -> None:
    sign_in(registry, Role.AUDITOR)
    deal_id = registry.get("/v1/deals").json()["items"][0]["deal_id"]
    for path in (*LIVE_PAGES, f"/deals/{deal_id}", "/audit"):
        answer = registry.client.get(path)
        assert answer.status_code == 200, path
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "unsafe-inline" not in policy, path
        page = ParsedPage(answer.text)
        elsewhere = [(tag, value) for tag, attrs in page.elements
                     for name, value in attrs.items() if name in ("src", "href", "action")
                     and re.match(r"^(https?:)?//", value.strip(), re.IGNORECASE)]
        assert elsewhere == [], path
        assert any(a.get("src") == "/static/pages/site.js" for a, _ in page.scripts), path
    overview = ParsedPage(registry.client.get("/").text)
    assert any(a.get("src") == f"{VENDORED}/chart.umd.min.js" for a, _ in overview.scripts)


def test_live_pages_name_their_stream_and_position_and_pause_in_the_past(
    registry: Registry,
) -> None:
    sign_in(registry)
    deal_id = registry.get("/v1/deals").json()["items"][0]["deal_id"]
    position = registry.head()
    for path in (*LIVE_PAGES, f"/deals/{deal_id}"):
        html = registry.client.get(path).text
        [main] = [a for tag, a in ParsedPage(html).elements if tag == "main"]
        assert "data-live-page" in main and "data-live-paused" not in main, path
        assert main["data-stream"] == "/v1/stream", path
        assert main["data-poll"] == "/pages/latest.json", path
        assert main["data-position"] == str(position), path
        assert "Updates as events are recorded." in html, path
        past = registry.client.get(path, params={"as_of": "2025-08-01"}).text
        [main] = [a for tag, a in ParsedPage(past).elements if tag == "main"]
        assert "data-live-paused" in main, path
        assert "Live updates are paused while you look at the past." in past, path
    assert registry.client.get("/pages/latest.json").json()["position"] == position

    # A new pledge moves the page's position and its figures: what a refetch replaces.
    before = ParsedPage(registry.client.get("/").text).island("chart-sector-data")
    party = registry.get(f"/v1/deals/{deal_id}").json()["parties"][0]
    assert registry.post(pledge("p-live", deal_id, party, "1000000", "2000000")
                         ).status_code == 201
    registry.get("/v1/deals", min_position=registry.head())
    after_html = registry.client.get("/").text
    [main] = [a for tag, a in ParsedPage(after_html).elements if tag == "main"]
    assert main["data-position"] == str(registry.head()) != str(position)
    assert ParsedPage(after_html).island("chart-sector-data") != before


def test_the_sign_in_form_is_throttled_like_the_authorization_header(
        registry: Registry) -> None:
    form = registry.client.get("/sign-in").text
    limit = registry.app.state.settings.auth_failures_per_minute
    for attempt in range(limit + 1):
        answer = registry.client.post("/sign-in", data={
            "key": f"drk_{'x' * 43}", "csrf": csrf_of(form), "next": "/"})
        form = answer.text
        if answer.status_code == 429:
            break
        assert answer.status_code == 401, attempt
    assert answer.status_code == 429 and attempt == limit
    assert int(answer.headers["retry-after"]) >= 1
    # Throttled, a known key is refused too, and no session starts.
    known = registry.client.post("/sign-in", data={
        "key": registry.keys[Role.READER], "csrf": csrf_of(form), "next": "/"},
        follow_redirects=False)
    assert known.status_code == 429
    assert "dealreg_session=" not in "".join(known.headers.get_list("set-cookie"))
