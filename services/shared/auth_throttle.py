"""Throttling of failed authentications, per client address.

Without it, anyone can try keys as fast as the service answers, each unknown key costing a
database lookup (2,000 random keys at ~630 req/s were each answered after one).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from services.shared.errors import ApiError
from services.shared.settings import Settings


@dataclass
class _Bucket:
    tokens: float
    updated: float


class FailedAuthThrottle:
    """A token bucket of failed authentications per client address: `failures_per_minute`
    may fail at once, then one more every 60/`failures_per_minute` seconds. An address out of
    tokens is refused before its key is read, so it costs no lookup, whatever key it sends.

    Addresses that never fail are never tracked, so successful authentications cost one
    dictionary miss. At most `max_addresses` are tracked: the one that failed least recently is
    forgotten first. Used on the event loop only, so it takes no lock."""

    def __init__(self, failures_per_minute: int, max_addresses: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(failures_per_minute)
        self.refill_per_second = failures_per_minute / 60.0
        self.max_addresses = max_addresses
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings) -> FailedAuthThrottle:
        return cls(settings.auth_failures_per_minute, settings.auth_throttle_max_addresses)

    def tracked(self) -> int:
        return len(self._buckets)

    def seconds_refused(self, address: str) -> float:
        """How long `address` stays refused: 0 while it may still try a key."""
        bucket = self._refilled(_tracked_as(address))
        if bucket is None or bucket.tokens >= 1:
            return 0.0
        return (1 - bucket.tokens) / self.refill_per_second

    def refuse_if_throttled(self, address: str) -> None:
        """Raise the 429 of an address out of tokens, naming when to retry."""
        wait = self.seconds_refused(address)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            refusal = ApiError(
                429, "too_many_failed_authentications",
                f"too many failed authentications from this address; retry in {retry_after} s",
                field="Authorization", rule="throttled",
            )
            refusal.headers = {"Retry-After": str(retry_after)}
            raise refusal

    def failed(self, address: str) -> None:
        """Take a token for a failed authentication from `address`."""
        tracked_as = _tracked_as(address)
        bucket = self._refilled(tracked_as)
        if bucket is None:
            bucket = self._buckets[tracked_as] = _Bucket(self.capacity, self.clock())
            if len(self._buckets) > self.max_addresses:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(tracked_as)
        bucket.tokens = max(0.0, bucket.tokens - 1)

    def _refilled(self, tracked_as: str) -> _Bucket | None:
        bucket = self._buckets.get(tracked_as)
        if bucket is None:
            return None
        now = self.clock()
        bucket.tokens = min(self.capacity,
                            bucket.tokens + (now - bucket.updated) * self.refill_per_second)
        bucket.updated = now
        if bucket.tokens >= self.capacity:
            del self._buckets[tracked_as]  # forgiven: back to untracked
            return None
        return bucket


def _tracked_as(address: str) -> str:
    # One IPv6 host commonly holds a whole /64: per address, it could rotate past any limit.
    if ":" in address:
        try:
            return str(ipaddress.ip_network(f"{address}/64", strict=False))
        except ValueError:
            return address
    return address


def client_address(connection: HTTPConnection) -> str:
    """The client's address: the TCP peer, or, when `client_address_header` names a header a
    trusted proxy sets (X-Forwarded-For), that header's last entry: the one the proxy added."""
    settings: Settings | None = getattr(connection.app.state, "settings", None)
    header = settings.client_address_header if settings is not None else None
    if header:
        forwarded = connection.headers.get(header, "").rsplit(",", 1)[-1].strip()
        if forwarded:
            return forwarded
    return connection.client.host if connection.client is not None else "unknown"


def throttle_of(connection: HTTPConnection) -> FailedAuthThrottle:
    """The app's throttle, made on first use from its settings (every service has them; an app
    assembled by hand in a test gets the defaults), so no app checks keys unthrottled."""
    state = connection.app.state
    throttle: FailedAuthThrottle | None = getattr(state, "auth_throttle", None)
    if throttle is None:
        settings = getattr(state, "settings", None) or Settings()
        throttle = state.auth_throttle = FailedAuthThrottle.from_settings(settings)
    return throttle
