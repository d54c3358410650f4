"""The bill: what a file cost, what the day and the month have cost, and the daily budget.

The API bills ``usage.seconds`` of audio per answer (``api.price_per_hour``, 0.5 CNY published,
per second). What was billed is read from the paid answers themselves, as the journal keeps
them: an answer for a file that failed later, or one journaled before a crash, was paid all the
same. An answer without ``usage.seconds`` is counted as such ("unknown"), never guessed: a cost
built from such answers says it is incomplete (``Cost.complete``).

``Bill`` is the daemon's running tally of today and this month (what the ledger held at start,
plus every answer journaled since) and the budget's decision: once the day's cost reaches
``api.daily_budget``, ``require`` raises ``BudgetReachedError`` with the moment the next day
begins in the operator's zone, and the pause gate waits until then. Requests already in flight
finish, so a day may go over by at most those (``api.max_concurrency`` clips).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any, Protocol

from mimo_watchd import days
from mimo_watchd.config import ApiSettings
from mimo_watchd.errors import BudgetReachedError
from mimo_watchd.ledger import Billed
from mimo_watchd.timestamps import iso_seconds


def amount(seconds: float, price_per_hour: float) -> float:
    """What ``seconds`` of billed audio cost at ``price_per_hour``."""
    return round(seconds * price_per_hour / 3600, 6)


def seconds_of(usage: Mapping[str, Any] | None) -> float | None:
    """An answer's billed seconds, or None when it does not say (never a guess)."""
    value = usage.get("seconds") if isinstance(usage, Mapping) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return value
    return None


@dataclass(frozen=True)
class Price:
    """What an hour of audio costs, and in which currency."""

    per_hour: float
    currency: str

    @classmethod
    def of(cls, api: ApiSettings) -> Price:
        return cls(api.price_per_hour, api.currency)


@dataclass(frozen=True)
class Cost:
    """What a file's transcript cost: ``amount`` of the ``billed_seconds`` the answers reported
    (None: none did); ``complete`` is False when some answer did not say."""

    amount: float | None
    currency: str
    price_per_hour: float
    billed_seconds: float | None
    complete: bool = True

    @classmethod
    def of(cls, usages: Iterable[Mapping[str, Any]], price: Price) -> Cost:
        """The cost of the answers whose usage objects are ``usages``."""
        reported = [seconds_of(u) for u in usages]
        known = [s for s in reported if s is not None]
        complete = len(known) == len(reported)
        billed = sum(known) if known else (0 if complete else None)
        return cls(amount=None if billed is None else amount(billed, price.per_hour),
                   currency=price.currency, price_per_hour=price.per_hour,
                   billed_seconds=billed, complete=complete)

    @classmethod
    def nothing(cls, price: Price) -> Cost:
        """The cost of a transcript reused for a duplicate: nothing was paid for it."""
        return cls(0.0, price.currency, price.per_hour, 0)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Cost:
        return cls(amount=doc["amount"], currency=doc["currency"],
                   price_per_hour=doc["price_per_hour"], billed_seconds=doc["billed_seconds"],
                   complete=doc["complete"])

    def to_json(self) -> dict[str, Any]:
        return {"amount": self.amount, "currency": self.currency,
                "price_per_hour": self.price_per_hour, "billed_seconds": self.billed_seconds,
                "complete": self.complete}

    def text(self) -> str:
        """``0.0434 CNY``; ``at least ...`` when incomplete; ``unknown`` when nothing is."""
        if self.amount is None:
            return "unknown (the API did not report what it billed)"
        money = money_text(self.amount, self.currency)
        return money if self.complete else f"at least {money} (some usage unknown)"


def money_text(value: float, currency: str) -> str:
    """An amount as people read it: 4 decimals below 1, else 2."""
    return f"{value:.4f} {currency}" if abs(value) < 1 else f"{value:.2f} {currency}"


def duration_text(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss``) of a number of seconds."""
    whole = round(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class BillSource(Protocol):
    """Where the bill is read from: the ledger's journal of paid answers."""

    def billed(self, since: float, until: float) -> Billed: ...


def period(source: BillSource, since: float, until: float, price: Price) -> dict[str, Any]:
    """What the answers journaled in [since, until) billed, as ``status`` reports it."""
    b = source.billed(since, until)
    return {"since": iso_seconds(since), "billed_seconds": b.seconds, "answers": b.answers,
            "unknown_answers": b.unknown, "cost": amount(b.seconds, price.per_hour),
            "currency": price.currency, "complete": b.unknown == 0}


def summary(source: BillSource, api: ApiSettings, tz: tzinfo | None,
            now: float | None = None) -> dict[str, Any]:
    """Today's and this month's bill (days in ``tz``) and the daily budget."""
    now = time.time() if now is None else now
    price = Price.of(api)
    return {"today": period(source, days.day_start(now, tz), now + 1, price),
            "month": period(source, days.month_start(now, tz), now + 1, price),
            "daily_budget": api.daily_budget, "currency": api.currency}


def summary_lines(doc: Mapping[str, Any]) -> list[str]:
    """How ``status`` prints a ``summary``."""
    lines = []
    for label, key in (("today", "today"), ("this month", "month")):
        p = doc[key]
        unknown = (f"; {p['unknown_answers']} answer(s) did not say what they billed, so it "
                   "is at least this") if p["unknown_answers"] else ""
        lines.append(f"billed {label}: {duration_text(p['billed_seconds'])} of audio, "
                     f"{money_text(p['cost'], p['currency'])} in {p['answers']} answer(s)"
                     f"{unknown}")
    if doc["daily_budget"] is not None:
        lines.append(f"daily budget: {money_text(doc['daily_budget'], doc['currency'])}")
    return lines


class Bill:
    """Today's billed seconds in the daemon (the ledger's at start, plus each answer journaled
    since) and the daily budget's decision; thread-safe."""

    def __init__(self, tz: tzinfo | None, *, clock: Callable[[], float] = time.time) -> None:
        self.tz = tz
        self._clock = clock
        self._lock = threading.Lock()
        self._day = days.day_start(clock(), tz)
        self._next = days.next_day(clock(), tz)
        self.seconds = 0.0  # billed today
        self.unknown = 0  # answers today that did not say what they billed

    def load(self, source: BillSource, tz: tzinfo | None) -> None:
        """Starts the day afresh from what the ledger holds (at start, and when the zone
        changes at a reload)."""
        now = self._clock()
        day, nxt = days.day_start(now, tz), days.next_day(now, tz)
        billed = source.billed(day, now + 1)
        with self._lock:
            self.tz, self._day, self._next = tz, day, nxt
            self.seconds, self.unknown = float(billed.seconds), billed.unknown

    def _roll(self, now: float) -> None:
        if now >= self._next or now < self._day:
            self._day, self._next = days.day_start(now, self.tz), days.next_day(now, self.tz)
            self.seconds, self.unknown = 0.0, 0

    def add(self, usage: Mapping[str, Any] | None) -> None:
        """Counts a paid answer (its ``usage`` object) into today's bill."""
        seconds = seconds_of(usage)
        with self._lock:
            self._roll(self._clock())
            if seconds is None:
                self.unknown += 1
            else:
                self.seconds += seconds

    def require(self, api: ApiSettings) -> None:
        """Raises BudgetReachedError when today's cost has reached ``api.daily_budget``."""
        if api.daily_budget is None:
            return
        with self._lock:
            now = self._clock()
            self._roll(now)
            spent = amount(self.seconds, api.price_per_hour)
            resume = self._next
        if spent >= api.daily_budget:
            when = days.local(resume, self.tz).isoformat(timespec="seconds")
            raise BudgetReachedError(
                f"the daily budget of {money_text(api.daily_budget, api.currency)} is reached "
                f"({money_text(spent, api.currency)} billed today, "
                f"{duration_text(self.seconds)} of audio); API work resumes at {when}",
                resume_at=resume)
