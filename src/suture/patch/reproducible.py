"""The fixed timestamp of reproducible builds (SOURCE_DATE_EPOCH, reproducible-builds.org)."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from suture.errors import UsageError

# Timestamp of generated entries when SOURCE_DATE_EPOCH is unset: 1980-01-01T00:00:00Z, the
# earliest time a ZIP archive can store, so files copied out of the image into ZIPs keep it.
DEFAULT_SOURCE_DATE_EPOCH = 315532800


def source_date_epoch_from_env() -> int | None:
    """Return SOURCE_DATE_EPOCH from the environment, or None when it is unset or empty."""
    text = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError as error:
        raise UsageError(
            f"invalid SOURCE_DATE_EPOCH {text!r}: expected whole seconds since 1970-01-01 UTC"
        ) from error


def resolve_source_date_epoch(value: int | None = None) -> int:
    """Return `value`, else SOURCE_DATE_EPOCH from the environment, else the fixed default."""
    if value is not None:
        return value
    from_env = source_date_epoch_from_env()
    return from_env if from_env is not None else DEFAULT_SOURCE_DATE_EPOCH


def created_timestamp(created: datetime | None = None) -> str:
    """Return `created`, else SOURCE_DATE_EPOCH, else now, as RFC 3339 UTC with whole seconds."""
    if created is None:
        from_env = source_date_epoch_from_env()
        if from_env is not None:
            created = datetime.fromtimestamp(from_env, UTC)
        else:
            created = datetime.now(UTC)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
