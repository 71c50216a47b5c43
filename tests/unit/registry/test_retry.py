"""Retry policy: backoff bounds, Retry-After parsing and the attempt limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from suture.image.registry.retry import (
    RETRYABLE_STATUS,
    RetryPolicy,
    describe_wait,
    parse_retry_after,
)


def test_delay_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0, random_fraction=lambda: 1.0)
    assert [policy.delay(attempt) for attempt in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_delay_applies_jitter() -> None:
    policy = RetryPolicy(base_delay=1.0, random_fraction=lambda: 0.25)
    assert policy.delay(3) == pytest.approx(1.0)


def test_retry_after_seconds_replaces_backoff() -> None:
    policy = RetryPolicy(random_fraction=lambda: 1.0)
    assert policy.delay(1, "7") == 7.0


def test_retry_after_is_capped() -> None:
    policy = RetryPolicy(max_delay=5.0)
    assert policy.delay(1, "3600") == 5.0


def test_invalid_retry_after_falls_back_to_backoff() -> None:
    policy = RetryPolicy(base_delay=0.5, random_fraction=lambda: 1.0)
    assert policy.delay(2, "soon") == 1.0


def test_parse_retry_after_http_date() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=12), usegmt=True)
    assert parse_retry_after(header, now) == pytest.approx(12.0)


def test_parse_retry_after_past_date_is_zero() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    header = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(header, now) == 0.0


def test_parse_retry_after_rejects_garbage() -> None:
    assert parse_retry_after("-1") is None
    assert parse_retry_after("") is None


def test_attempt_limit() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(1)
    assert policy.should_retry(2)
    assert not policy.should_retry(3)


def test_retryable_statuses() -> None:
    assert {429, 500, 502, 503, 504} <= RETRYABLE_STATUS
    assert not {400, 401, 403, 404} & RETRYABLE_STATUS


def test_describe_wait_units() -> None:
    assert describe_wait(0.0) == "retrying now"
    assert describe_wait(0.25) == "retrying in 250 ms"
    assert describe_wait(2.54) == "retrying in 2.5 s"
    assert describe_wait(1.5, "resuming") == "resuming in 1.5 s"
