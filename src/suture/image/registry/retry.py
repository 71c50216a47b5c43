"""Retry policy for registry requests: which failures to retry and how long to wait.

Connection errors, HTTP 429 and the transient 5xx codes are retried a bounded number of times.
The wait doubles each attempt with full jitter (a uniform draw between zero and the exponential
bound, as in the AWS architecture blog's "Exponential Backoff And Jitter"). A `Retry-After`
header, in seconds or as an HTTP date (RFC 9110 section 10.2.3), replaces the computed wait but
is capped, so a registry cannot stall a command for longer than `max_delay`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds on retries: attempts in total, and the base and cap of the wait in seconds."""

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    random_fraction: Callable[[], float] = field(default=random.random, repr=False)

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Return the seconds to wait after failed attempt number `attempt` (1-based)."""
        if retry_after is not None:
            requested = parse_retry_after(retry_after)
            if requested is not None:
                return min(requested, self.max_delay)
        bound = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return bound * self.random_fraction()

    def should_retry(self, attempt: int) -> bool:
        """Return whether another attempt is allowed after attempt number `attempt` failed."""
        return attempt < self.max_attempts


def describe_wait(seconds: float, verb: str = "retrying") -> str:
    """Return the words for a retry after `seconds`: "retrying now", "retrying in 250 ms" or
    "retrying in 2.5 s"."""
    if seconds < 0.0005:
        return f"{verb} now"
    if seconds < 1.0:
        return f"{verb} in {seconds * 1000:.0f} ms"
    return f"{verb} in {seconds:.1f} s"


def parse_retry_after(value: str, now: datetime | None = None) -> float | None:
    """Return the wait a `Retry-After` header requests in seconds, or None if it is invalid."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())
