"""The relay's stamps decide what a consumer takes (`stream_order`), and the relay sees a
topic younger than its records from the offsets the broker acknowledges (`RelayStream`)."""

from __future__ import annotations

import pytest

from contracts.stream_v1 import StreamStamp
from services.projections.consumer.stream_order import Verdict, after_taking, judge, start_of
from services.registry.relay.published_position import RelayStream, TopicLoss, TopicReshaped


@pytest.mark.parametrize(("last", "stamp", "verdict"), [
    (None, StreamStamp(1, 0), Verdict.TAKE),  # the first record of a partition
    (None, StreamStamp(1, 5), Verdict.GAP),  # a topic that starts past the relay's first
    (StreamStamp(1, 4), StreamStamp(1, 5), Verdict.TAKE),  # the next one
    (StreamStamp(1, 4), StreamStamp(1, 2), Verdict.TAKE),  # sent again after a failure
    (StreamStamp(1, 4), StreamStamp(1, 6), Verdict.GAP),  # one is missing
    (StreamStamp(2, 4), StreamStamp(1, 9), Verdict.STALE),  # from before the topic was lost
    (StreamStamp(1, 4), StreamStamp(2, 0), Verdict.TAKE),  # the log published again
    (StreamStamp(1, 4), StreamStamp(2, 3), Verdict.REWIND),  # the new epoch began behind
    (start_of(2), StreamStamp(2, 0), Verdict.TAKE),  # read again: the new epoch's start
    (start_of(2), StreamStamp(1, 0), Verdict.STALE),
])
def test_a_record_is_judged_by_its_stamp(last: StreamStamp | None, stamp: StreamStamp,
                                         verdict: Verdict) -> None:
    assert judge(last, stamp) is verdict


def test_a_record_sent_again_does_not_move_the_last_stamp_back() -> None:
    assert after_taking(StreamStamp(1, 7), StreamStamp(1, 3)) == StreamStamp(1, 7)
    assert after_taking(StreamStamp(1, 7), StreamStamp(2, 0)) == StreamStamp(2, 0)
    assert after_taking(None, StreamStamp(1, 0)) == StreamStamp(1, 0)


def test_stamps_travel_as_two_integer_headers() -> None:
    stamp = StreamStamp(3, 41)
    assert StreamStamp.of_headers(stamp.headers()) == stamp
    assert StreamStamp.of_headers([("epoch", b"3")]) is None
    assert StreamStamp.of_headers([("epoch", b"x"), ("seq", b"1")]) is None
    assert StreamStamp.of_headers([("epoch", b"0"), ("seq", b"1")]) is None
    assert StreamStamp.of_headers(None) is None


def test_the_relay_numbers_each_partition_from_where_it_saved() -> None:
    stream = RelayStream(epoch=2, next_seq={0: 5})
    assert [stream.stamp(0), stream.stamp(0), stream.stamp(1)] == [
        StreamStamp(2, 5), StreamStamp(2, 6), StreamStamp(2, 0)]


def test_an_offset_at_or_below_one_acknowledged_before_shows_a_younger_topic() -> None:
    stream = RelayStream(acked={0: 300, 1: 120})
    for offset in (301, 302):
        stream.acknowledged(0, offset)
    stream.acknowledged(1, -1)  # unknown to the client: never taken as proof
    assert stream.younger_topic() is None
    stream.acknowledged(1, 4)  # the broker restarted empty: offsets start again
    assert stream.younger_topic() == TopicLoss(partition=1, offset=4, before=120)
    assert stream.highest_acked() == {0: 302, 1: 120}


def test_a_partition_never_acknowledged_before_shows_nothing() -> None:
    stream = RelayStream(acked={})
    stream.acknowledged(3, 0)
    assert stream.younger_topic() is None


def test_the_relay_remembers_the_partition_count_and_refuses_another() -> None:
    stream = RelayStream()
    stream.check_partitions("events", [0, 1, 2, 3])  # the first time: remembered
    stream.stamp(2)  # a page that touched one partition changes nothing
    stream.check_partitions("events", [0, 1, 2, 3])
    with pytest.raises(TopicReshaped, match="recreate it with 4 partitions"):
        stream.check_partitions("events", [0, 1])
