"""Readers waiting for a position are released by the projector's commit, or time out."""

from __future__ import annotations

import asyncio
import time

from services.projections.query_api.freshness import PositionWaiters
from services.projections.read_model.progress import AppliedPosition


def test_waiters_are_released_when_their_position_is_committed() -> None:
    applied = AppliedPosition()
    applied.set(5)
    waiters = PositionWaiters(applied)

    async def scenario() -> list[tuple[bool, float]]:
        async def commit_later() -> None:
            await asyncio.sleep(0.2)
            applied.set(10)  # as a projector (maybe in another process) does after commit

        started = time.perf_counter()

        async def timed(wanted: int) -> tuple[bool, float]:
            reached = await waiters.wait(wanted, timeout=1.0)
            return reached, time.perf_counter() - started

        committing = asyncio.create_task(commit_later())
        outcomes = await asyncio.gather(*(timed(wanted) for wanted in (3, 7, 10, 11)))
        await committing
        return outcomes

    (at_once, now), (seven, t7), (ten, t10), (eleven, t11) = asyncio.run(scenario())
    # 3 at once, 7 and 10 at the commit, 11 never: it waits out its timeout.
    assert (at_once, seven, ten, eleven) == (True, True, True, False)
    assert now < 0.1 and 0.2 <= t7 < 0.5 and 0.2 <= t10 < 0.5 and t11 >= 1.0


def test_a_reached_position_does_not_wait_and_leaves_no_waiter() -> None:
    applied = AppliedPosition()
    applied.set(4)
    waiters = PositionWaiters(applied)

    async def quick() -> float:
        started = time.perf_counter()
        assert await waiters.wait(4, timeout=5.0)
        assert not await waiters.wait(5, timeout=0.01)
        return time.perf_counter() - started

    assert asyncio.run(quick()) < 0.5
    assert waiters._waiting == []
