"""`GET /v1/stream` over real HTTP (uvicorn in a thread, httpx reading the stream as it
comes): what is recorded appears in log order with its position as id, and a client that
drops and resumes with Last-Event-ID gets exactly what followed, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
import uvicorn

from services.embedded.app import create_embedded_app
from services.projections.query_api.stream_routes import StreamLimits
from services.shared.api_keys import Role
from services.shared.settings import Settings
from tests.integration.poisoned_log import propose_deal_with_pledge, store_untranslatable_deal

T = "2025-05-20T10:00:00+05:30"
# How long a broken server may keep a test waiting before it fails; never a speed bound.
PATIENCE = 30.0


def firm(code: str, country: str = "IN") -> dict[str, Any]:
    return {
        "event_id": f"f-{code}", "type": "firm_registered", "occurred_at": T,
        "payload": {"code": code, "name": code.title(), "country": country,
                    "kind": "automaker"},
    }


@dataclass(frozen=True)
class Frame:
    """One server-sent event as a client reads it."""

    event: str
    id: int | None
    data: dict[str, Any] | None
    retry: int | None = None


def frames(response: httpx.Response) -> Iterator[Frame]:
    """The events of a stream as they arrive (comments skipped), per the SSE format."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if fields:
                data = fields.get("data")
                yield Frame(fields.get("event", "message"),
                            int(fields["id"]) if "id" in fields else None,
                            None if data is None else json.loads(data),
                            int(fields["retry"]) if "retry" in fields else None)
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        fields[name] = fields[name] + "\n" + value if name == "data" and name in fields \
            else value


class LiveRegistry:
    """The embedded app served by uvicorn on a free local port, with a key per role."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_embedded_app(settings)
        store = self.app.state.api_keys
        self.keys = {role: store.create(f"stream-{role.value}", role) for role in Role}
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(
            self.app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + PATIENCE
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        self.client = httpx.Client(base_url=self.url, timeout=PATIENCE)

    def headers(self, role: Role = Role.READER, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}", **extra}

    def record(self, body: dict[str, Any]) -> int:
        """Record an event through the write API; its log position."""
        response = self.client.post("/v1/events", json=body, headers=self.headers(Role.PARTNER))
        assert response.status_code == 201, response.text
        return int(response.json()["position"])

    @contextmanager
    def stream(self, role: Role = Role.READER, params: dict[str, Any] | None = None,
               **headers: str) -> Iterator[httpx.Response]:
        with self.client.stream("GET", "/v1/stream", params=params,
                                headers=self.headers(role, **headers)) as response:
            yield response

    def wait_visible(self, position: int) -> None:
        """Return once the read model reflects `position` (the read API's own wait)."""
        deadline = time.monotonic() + PATIENCE
        while self.client.get("/v1/firms", params={"min_position": position},
                              headers=self.headers()).status_code != 200:
            assert time.monotonic() < deadline, f"position {position} never became visible"

    def open_streams(self) -> int:
        return int(self.app.state.stream_slots.open)

    def close(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join()


def recorded_until(stream: Iterator[Frame], position: int) -> list[Frame]:
    """The `recorded` events read until a `position` event says the read model reached
    `position`: with none skipped, every event up to it has been sent by then."""
    got: list[Frame] = []
    for frame in stream:
        if frame.event == "recorded":
            got.append(frame)
        elif frame.event == "position" and frame.data and frame.data["position"] >= position:
            return got
    raise AssertionError(f"the stream ended before position {position}: {got}")


def first_recorded(stream: Iterator[Frame], count: int) -> list[Frame]:
    got: list[Frame] = []
    for frame in stream:
        if frame.event == "recorded":
            got.append(frame)
            if len(got) == count:
                return got
    raise AssertionError(f"the stream ended after {got}")


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


# The projector in its own process (the default) or in a thread of the server's process: the
# stream wakes on the position it shares either way. Both workers on SQLite; on PostgreSQL
# the thread (the feed's process on PostgreSQL is tested in
# tests/integration/embedded/test_projection_feed_wakeups.py; here it would add a second or
# two of start per test and nothing the stream sees).
BACKENDS = ["sqlite", "sqlite-thread",
            pytest.param("postgres-thread", marks=pytest.mark.integration)]


def stream_settings(request: pytest.FixtureRequest, data_dir: Path, database: str) -> Settings:
    """The settings of `request.param`'s backend and worker; `database` names the fixture of
    its PostgreSQL database."""
    database_url = None
    if request.param.startswith("postgres"):
        database_url = request.getfixturevalue(database)
    worker = "thread" if request.param.endswith("thread") else "process"
    return Settings(data_dir=data_dir, database_url=database_url, projection_poll_seconds=0.05,
                    projection_worker=worker)


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return stream_settings(request, tmp_path, "postgres_url")


@pytest.fixture(scope="module", params=BACKENDS)
def refusing_live(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    """One running registry per backend for the tests of refused starts: a refusal records
    nothing and opens no stream (each test checks the second), so they need none of their
    own."""
    registry = LiveRegistry(stream_settings(request, tmp_path_factory.mktemp("refusing"),
                                            "module_postgres_url"))
    try:
        yield registry
    finally:
        registry.close()


@pytest.fixture
def live(settings: Settings) -> Iterator[LiveRegistry]:
    registry = LiveRegistry(settings)
    try:
        yield registry
    finally:
        registry.close()


def test_new_events_appear_in_log_order_with_their_positions_as_ids(
        live: LiveRegistry) -> None:
    earlier = live.record(firm("before-the-stream"))
    live.wait_visible(earlier)  # else it is applied after the stream opened, and sent
    with live.stream() as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = frames(response)
        assert next(stream).retry == 2000
        opening = next(stream)  # from now: the read position, nothing recorded before it
        assert (opening.event, opening.data) == ("position", {"position": earlier})
        positions = [live.record(firm(code)) for code in ("tata-motors", "mitsui-co", "ntpc")]
        got = recorded_until(stream, positions[-1])
    assert [frame.id for frame in got] == positions
    assert [frame.data["position"] for frame in got if frame.data] == positions
    summary = got[0].data
    assert summary is not None
    assert summary["type"] == "firm_registered"
    assert summary["aggregate_version"] == 1
    # A reader is not told who recorded it, nor the partner's event id (read_model/visibility).
    assert (summary["recorded_by"], summary["event_id"]) == (None, None)
    assert summary["withheld"] == ["event_id", "recorded_by"]
    assert {"aggregate_id", "occurred_at", "recorded_at", "hash"} <= set(summary)
    assert "payload" not in summary


@pytest.mark.parametrize("role", [Role.PARTNER, Role.AUDITOR])
def test_the_recording_partner_and_auditors_see_who_recorded_an_event(
        live: LiveRegistry, role: Role) -> None:
    with live.stream(role) as response:
        stream = frames(response)
        next(stream), next(stream)  # retry, then the position now
        position = live.record(firm("tata-motors"))
        [got] = recorded_until(stream, position)
    assert got.data is not None
    assert (got.data["recorded_by"], got.data["event_id"]) == ("stream-partner",
                                                                "f-tata-motors")
    assert got.data["withheld"] == []


def test_after_replays_from_a_position(live: LiveRegistry) -> None:
    positions = [live.record(firm(code)) for code in ("a-one", "a-two", "a-three")]
    with live.stream(params={"after": positions[0]}) as response:
        got = recorded_until(frames(response), positions[-1])
    assert [frame.id for frame in got] == positions[1:]


def test_a_dropped_client_resumes_after_its_last_event_with_no_gap_and_no_duplicate(
        live: LiveRegistry) -> None:
    before = [live.record(firm(code)) for code in ("r-one", "r-two", "r-three", "r-four")]
    with live.stream(params={"after": 0}) as response:
        seen = first_recorded(frames(response), 2)  # and the connection drops
    assert [frame.id for frame in seen] == before[:2]
    wait_until(lambda: live.open_streams() == 0, "the server never noticed the drop")
    meanwhile = [live.record(firm(code)) for code in ("r-five", "r-six")]
    # A browser's EventSource reconnects to the same URL, adding its Last-Event-ID: it wins.
    with live.stream(params={"after": 0}, **{"Last-Event-ID": str(seen[-1].id)}) as response:
        resumed = recorded_until(frames(response), meanwhile[-1])
    assert [frame.id for frame in resumed] == before[2:] + meanwhile


def test_a_resume_between_adjacent_positions_misses_nothing(live: LiveRegistry) -> None:
    # One write through the API takes two log positions; a deal saved with its pledge (as
    # the domain can) puts two events at adjacent positions, where an off-by-one shows.
    live.record(firm("tata"))
    pledged = propose_deal_with_pledge(live.app.state.recording_service.store, uuid4(), "tata")
    with live.stream(params={"after": 0}) as response:
        seen = first_recorded(frames(response), 2)  # the firm, the proposal: then a drop
    assert seen[-1].id == pledged - 1
    with live.stream(**{"Last-Event-ID": str(seen[-1].id)}) as response:
        resumed = recorded_until(frames(response), pledged)
    assert [frame.id for frame in resumed] == [pledged]


def test_a_client_resuming_from_a_position_event_misses_nothing(live: LiveRegistry) -> None:
    first = live.record(firm("p-one"))
    with live.stream(params={"after": 0}) as response:
        for frame in frames(response):
            if frame.event == "position" and frame.id is not None and frame.id >= first:
                last_id = frame.id  # the last id this client received
                break
    later = [live.record(firm(code)) for code in ("p-two", "p-three")]
    with live.stream(**{"Last-Event-ID": str(last_id)}) as response:
        resumed = recorded_until(frames(response), later[-1])
    assert [frame.id for frame in resumed] == later


def test_parked_events_do_not_stall_the_stream(live: LiveRegistry) -> None:
    live.wait_visible(live.record(firm("tata")))
    with live.stream() as response:
        stream = frames(response)
        # A proposal an older version stored without its title cannot be projected: it is
        # parked, and the cancellation after it waits; neither is a recorded event.
        parked = store_untranslatable_deal(live.app.state.recording_service.store, uuid4(),
                                           "tata")
        after = live.record(firm("after-the-parked"))
        got = recorded_until(stream, after)
    assert parked < after
    assert [frame.id for frame in got] == [after]
    listed = live.client.get("/v1/admin/parked", headers=live.headers(Role.ADMIN)).json()
    assert listed["total"] >= 1  # they were parked indeed, not merely slow


def test_a_stream_needs_a_key_and_every_role_may_read(live: LiveRegistry) -> None:
    response = live.client.get("/v1/stream")
    assert response.status_code == 401
    assert response.json()["error"]["field"] == "Authorization"
    unknown = live.client.get("/v1/stream", headers={"Authorization": f"Bearer drk_{'n' * 43}"})
    assert (unknown.status_code, unknown.json()["error"]["rule"]) == (401, "known_key")
    for role in Role:  # the read API admits every role, partners too (they read versions)
        with live.stream(role) as stream:
            assert stream.status_code == 200, role
            assert next(frames(stream)).retry is not None


@pytest.mark.parametrize(("where", "value", "field"), [
    ("header", "abc", "Last-Event-ID"),
    ("header", "-1", "Last-Event-ID"),
    ("header", "1" * 19, "Last-Event-ID"),
    ("query", "-1", "after"),
    ("query", "x", "after"),
    ("query", str(2**63), "after"),
])
def test_a_bad_start_is_422_naming_the_field_and_rule(refusing_live: LiveRegistry, where: str,
                                                      value: str, field: str) -> None:
    live = refusing_live
    if where == "header":
        response = live.client.get("/v1/stream",
                                   headers=live.headers(**{"Last-Event-ID": value}))
    else:
        response = live.client.get("/v1/stream", params={"after": value},
                                   headers=live.headers())
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field and error["rule"], error
    assert live.open_streams() == 0


def test_the_stream_is_in_the_openapi_document(refusing_live: LiveRegistry) -> None:
    operation = refusing_live.client.get("/openapi.json").json()["paths"]["/v1/stream"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    for status in ("401", "422", "503"):
        assert "application/json" in operation["responses"][status]["content"], status
    names = {parameter["name"] for parameter in operation["parameters"]}
    assert {"after", "Last-Event-ID"} <= names
    assert operation["security"] == [{"ApiKey": []}]


def test_streams_beyond_the_limit_are_503_with_retry_after(live: LiveRegistry) -> None:
    live.app.state.stream_limits = replace(StreamLimits(), max_streams=1)
    with live.stream() as first:
        assert first.status_code == 200
        wait_until(lambda: live.open_streams() == 1, "the first stream never opened")
        refused = live.client.get("/v1/stream", headers=live.headers())
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "5"
        assert refused.json()["error"]["code"] == "too_many_streams"
    wait_until(lambda: live.open_streams() == 0, "the first stream's slot was never freed")
    with live.stream() as again:
        assert again.status_code == 200


def test_a_stream_ends_after_its_lifetime_and_frees_its_slot(live: LiveRegistry) -> None:
    live.app.state.stream_limits = replace(StreamLimits(), lifetime_seconds=0.2)
    with live.stream() as response:
        assert [frame.event for frame in frames(response)][-1] == "position"  # then it ends
    wait_until(lambda: live.open_streams() == 0, "the ended stream's slot was never freed")
