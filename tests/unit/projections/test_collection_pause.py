"""The garbage collector is held off while batches are under way, and only then."""

from __future__ import annotations

import gc
import threading

from services.projections.projectors.collection_pause import collection_paused


def test_collection_resumes_when_the_last_batch_ends() -> None:
    assert gc.isenabled()
    with collection_paused():
        assert not gc.isenabled()
        with collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer batch is still under way
    assert gc.isenabled()


def test_a_batch_in_another_thread_keeps_the_pause() -> None:
    started, finish = threading.Event(), threading.Event()

    def other_batch() -> None:
        with collection_paused():
            started.set()
            finish.wait(10)

    other = threading.Thread(target=other_batch)
    other.start()
    try:
        started.wait(10)
        with collection_paused():
            pass
        assert not gc.isenabled()
    finally:
        finish.set()
        other.join(10)
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_exception_ends_the_pause() -> None:
    try:
        with collection_paused():
            raise ValueError("a failed batch")
    except ValueError:
        pass
    assert gc.isenabled()
