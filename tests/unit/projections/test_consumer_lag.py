"""The consumer's lag per partition is never shown as 0 while the partition is behind."""

from __future__ import annotations

from services.projections.consumer.kafka_consumer import (
    UNKNOWN_LAG,
    ConsumerStats,
    partition_faults,
    partition_lag,
)


def test_lag_is_the_records_left() -> None:
    assert partition_lag(10, 4) == 6
    assert partition_lag(10, 10) == 0


def test_an_unknown_end_or_position_is_not_shown_as_no_lag() -> None:
    assert partition_lag(None, 4) == UNKNOWN_LAG
    assert partition_lag(10, None) == UNKNOWN_LAG


def test_offsets_past_the_end_count_every_record_the_partition_holds() -> None:
    # A topic recreated: what it holds lies behind the consumer's position.
    assert partition_lag(3, 500) == 3
    assert partition_lag(0, 500) == 0  # empty: nothing to read, indeed


def test_a_partition_behind_without_progress_is_a_fault_once_it_stalls() -> None:
    stats = ConsumerStats(lag={0: 5, 1: 0, 2: UNKNOWN_LAG}, progressed_at={0: 100.0, 1: 0.0,
                                                                          2: 100.0})
    assert partition_faults(stats, now=105.0, stall_seconds=10) == []  # busy, not stuck
    faults = partition_faults(stats, now=111.0, stall_seconds=10)
    assert [f.split(":")[0] for f in faults] == ["partition 0", "partition 2"]
    assert "5 records behind" in faults[0] and "unknown lag" in faults[1]


def test_offsets_past_the_end_are_a_fault_at_once() -> None:
    stats = ConsumerStats(past_end={3: 497})
    (fault,) = partition_faults(stats, now=0.0)
    assert fault.startswith("partition 3") and "past its end" in fault
