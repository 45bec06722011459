"""The stream's pure parts: SSE framing, the bound on open streams, and the position watch
that wakes streams (with a fake read model position, no database)."""

from __future__ import annotations

import asyncio
import json

import pytest

from services.projections.query_api.stream_routes import (
    ReadPositionWatch,
    StreamSlots,
    position_frame,
    recorded_frame,
    sse_frame,
)
from services.projections.read_model.progress import AppliedPosition


def test_an_event_has_its_fields_in_order_and_ends_with_a_blank_line() -> None:
    assert sse_frame('{"a":1}', "recorded", 7) == b'id: 7\nevent: recorded\ndata: {"a":1}\n\n'


def test_retry_and_comment_frames() -> None:
    assert sse_frame(retry_ms=2000) == b"retry: 2000\n\n"
    assert sse_frame(comment="keepalive") == b": keepalive\n\n"


@pytest.mark.parametrize("text", ["one\ntwo", "one\r\ntwo", "one\rtwo"])
def test_a_line_break_in_data_cannot_end_the_event_or_forge_a_field(text: str) -> None:
    assert sse_frame(text + "\n\nid: 99") == b"data: one\ndata: two\ndata: \ndata: id: 99\n\n"


def test_empty_data_is_still_a_data_line() -> None:
    assert sse_frame("") == b"data: \n\n"


def test_an_event_name_is_one_line() -> None:
    with pytest.raises(ValueError):
        sse_frame("x", "recorded\ndata: forged")


def test_a_recorded_event_is_identified_by_its_position() -> None:
    frame = recorded_frame({"position": 12, "type": "firm_registered"}).decode()
    lines = frame.splitlines()
    assert lines[:2] == ["id: 12", "event: recorded"]
    assert json.loads(lines[2].removeprefix("data: ")) == {"position": 12,
                                                           "type": "firm_registered"}
    assert position_frame(14, 13) == b'id: 14\nevent: position\ndata: {"position":13}\n\n'


def test_slots_are_bounded_and_each_is_released_once() -> None:
    slots = StreamSlots()
    first = slots.take(2)
    second = slots.take(2)
    assert first is not None and second is not None
    assert slots.take(2) is None
    first()
    first()  # a second release of the same stream frees nothing more
    assert slots.open == 1
    assert slots.take(2) is not None and slots.take(2) is None


def test_the_watch_wakes_a_stream_when_the_shared_position_moves() -> None:
    applied = AppliedPosition()
    stored = {"position": 0}
    watch = ReadPositionWatch(applied, lambda: stored["position"])

    async def scenario() -> int:
        await watch.moved(watch.changes, 0.2)  # the first look counts as a change
        before = watch.changes
        waiting = asyncio.ensure_future(watch.moved(before, 60))
        await asyncio.sleep(0)
        assert not waiting.done()
        applied.set(5)
        await waiting  # woken by the move, long before its timeout
        return watch.changes - before

    assert asyncio.run(scenario()) == 1


def test_the_watch_sees_a_read_model_another_process_feeds() -> None:
    applied = AppliedPosition()  # never moves: this process's projector is idle
    stored = {"position": 0}
    watch = ReadPositionWatch(applied, lambda: stored["position"])

    async def scenario() -> None:
        await watch.moved(watch.changes, 0.2)
        before = watch.changes
        stored["position"] = 9
        await watch.moved(before, 60)
        assert watch.changes == before + 1

    asyncio.run(scenario())


def test_a_wait_with_no_move_ends_at_its_timeout() -> None:
    watch = ReadPositionWatch(AppliedPosition(), lambda: 0)

    async def scenario() -> None:
        await watch.moved(watch.changes, 0.2)
        before = watch.changes
        await watch.moved(before, 0.1)
        assert watch.changes == before

    asyncio.run(scenario())
