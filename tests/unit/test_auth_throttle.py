"""The failed-authentication throttle on its own: a token bucket per address, with a clock the
test moves, a bounded memory and IPv6 hosts counted by their /64."""

from __future__ import annotations

import pytest

from services.shared.auth_throttle import FailedAuthThrottle
from services.shared.errors import ApiError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_refused_after_its_failures_and_forgiven_as_time_passes() -> None:
    clock = Clock()
    throttle = FailedAuthThrottle(failures_per_minute=3, max_addresses=10, clock=clock)
    for _ in range(3):
        throttle.refuse_if_throttled("10.0.0.1")
        throttle.failed("10.0.0.1")
    with pytest.raises(ApiError) as refused:
        throttle.refuse_if_throttled("10.0.0.1")
    assert (refused.value.status, refused.value.rule) == (429, "throttled")
    assert refused.value.headers == {"Retry-After": "20"}  # one try back every 60/3 s
    throttle.refuse_if_throttled("10.0.0.2")  # another address is not concerned
    clock.now += 20
    throttle.refuse_if_throttled("10.0.0.1")
    clock.now += 40
    assert throttle.seconds_refused("10.0.0.1") == 0
    assert throttle.tracked() == 0, "a fully refilled address is forgotten"


def test_memory_is_bounded_by_forgetting_the_least_recent_failure() -> None:
    throttle = FailedAuthThrottle(failures_per_minute=1, max_addresses=2, clock=Clock())
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        throttle.failed(address)
    assert throttle.tracked() == 2
    assert throttle.seconds_refused("10.0.0.1") == 0
    assert throttle.seconds_refused("10.0.0.3") > 0


def test_an_ipv6_host_cannot_rotate_addresses_within_its_64() -> None:
    throttle = FailedAuthThrottle(failures_per_minute=2, max_addresses=10, clock=Clock())
    throttle.failed("2001:db8:1:2::1")
    throttle.failed("2001:db8:1:2::ffff")
    assert throttle.seconds_refused("2001:db8:1:2:abcd::9") > 0
    assert throttle.seconds_refused("2001:db8:1:3::1") == 0
