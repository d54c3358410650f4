"""The timestamps mimo-watchd writes: UTC, ISO 8601, ending in ``Z``."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_iso() -> str:
    """Now, to the millisecond: ``2025-01-31T12:00:00.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_seconds(t: float | None = None) -> str:
    """A ``time.time()`` (default: now), to the second: ``2025-01-31T12:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))
