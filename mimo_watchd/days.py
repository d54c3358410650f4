"""Days in the operator's time zone: where a day and a month begin, and when the next begins.

The daily budget, the bill's "today" and "this month" and the ``{arrived:...}`` field of path
templates all count days the way the operator does: in the ``timezone`` option's zone, or the
system's local zone when it is unset. Days are computed on the calendar, not as 86,400 s, so a
day with a daylight-saving change is 23 or 25 hours long, as it is on the operator's wall.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(name: str | None) -> tzinfo | None:
    """The zone called ``name`` (IANA, e.g. ``Asia/Shanghai``); None for the system's own.

    Raises ValueError naming the zone when there is no such zone on this system."""
    if name is None:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Asia/Shanghai or "
                         "Europe/Berlin; the system's tzdata must have it)") from exc


def check_zone(name: str) -> None:
    """The config check of ``timezone``: ValueError when it names no zone."""
    zone(name)


def local(t: float, tz: tzinfo | None) -> datetime:
    """The wall-clock time ``t`` (``time.time()``) in ``tz`` (None: the system's zone)."""
    if tz is None:
        return datetime.fromtimestamp(t).astimezone()
    return datetime.fromtimestamp(t, tz)


def _midnight(day: datetime, tz: tzinfo | None) -> float:
    start = datetime(day.year, day.month, day.day)
    return (start.replace(tzinfo=tz) if tz is not None else start.astimezone()).timestamp()


def day_start(t: float, tz: tzinfo | None) -> float:
    """When the day holding ``t`` began, as a ``time.time()``."""
    return _midnight(local(t, tz), tz)


def next_day(t: float, tz: tzinfo | None) -> float:
    """When the day after the one holding ``t`` begins, as a ``time.time()``."""
    today = local(t, tz)
    return _midnight(datetime(today.year, today.month, today.day) + timedelta(days=1), tz)


def month_start(t: float, tz: tzinfo | None) -> float:
    """When the month holding ``t`` began, as a ``time.time()``."""
    return _midnight(local(t, tz).replace(day=1), tz)
