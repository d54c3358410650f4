"""One budget for a fleet: the rate limiter's sliding windows kept in PostgreSQL.

Every process of the account (the fleet's daemons; an account is told apart by a hash of its
key) reserves its requests in one table, ``mw_window``, by the database's clock, so the hosts'
requests together stay within ``requests_per_minute`` and ``tokens_per_minute``. The rules are
the local limiter's (``ratelimit``): a request reserves its estimated tokens when it is let go,
its answer settles the reservation to the tokens billed (an error answer to none), a request
bigger than the whole budget goes alone in an empty window, and a 429 takes the request out of
the window and holds every request of the account (``mw_hold``). Each process still caps its
own requests in flight and learns its own estimates.
Admission is one short transaction under an advisory lock of the account (so two hosts never
both take the last place); a caller that does not fit sleeps until the oldest reservation in
its way leaves the window, or half a second (to notice ``stop``), and asks again. Connection
failures make ``acquire`` wait and retry: no request is sent while the budget cannot be
checked.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
import structlog

from mimo_watchd.config import Secret, redact
from mimo_watchd.ratelimit import FULL, RateLimiter, Reservation

log = structlog.get_logger("mimo_watchd.ratelimit")

_ADMIT = """
SELECT extract(epoch from clock_timestamp()) AS now,
       coalesce((SELECT extract(epoch from held_until) FROM mw_hold WHERE account = %(acc)s),
                0) AS held_until
"""


def account_of(key: Secret) -> str:
    """The account a key belongs to, as the shared window names it (never the key)."""
    return hashlib.sha256(key.reveal().encode()).hexdigest()[:16]


def wait_needed(entries: list[tuple[float, int]], tokens: int, now: float, *, rpm: int,
                tpm: int, window: float, held_until: float) -> float:
    """Seconds until a request of ``tokens`` fits windows holding ``entries`` (time, tokens;
    oldest first, all inside the window): the local limiter's rule."""
    wait = max(0.0, held_until - now)
    if len(entries) >= rpm:
        wait = max(wait, entries[len(entries) - rpm][0] + window - now)
    used = sum(t for _at, t in entries)
    if used and used + tokens > tpm:  # bigger than the budget: alone in an empty window
        need, freed = used + tokens - tpm, 0
        for at, t in entries:
            freed += t
            if freed >= need:
                wait = max(wait, at + window - now)
                break
    return wait


class SharedReservation(Reservation):
    """One admitted request: the local bookkeeping, and its row in the shared window."""

    __slots__ = ("row",)

    def __init__(self, at: float, duration: float, tokens: int, row: int) -> None:
        super().__init__(at, duration, tokens)
        self.row = row


class SharedRateLimiter(RateLimiter):
    """The ``RateLimiter`` whose windows every process of the account shares (PostgreSQL).

    What stays local: the estimate of a request's tokens and what it learns from answers, the
    cap on this process's requests in flight (lowered by a 429 the windows do not explain, as
    the local limiter does). What is shared: the windows, and the hold after a 429."""

    def __init__(self, dsn: str, account: str, requests_per_minute: int,
                 tokens_per_minute: int, *, host: str, counts: str = "total",
                 max_in_flight: int | None = None, window_seconds: float = 61.0) -> None:
        super().__init__(requests_per_minute, tokens_per_minute, counts=counts,
                         max_in_flight=max_in_flight, window_seconds=window_seconds)
        self._dsn = dsn
        self.account = account
        self.host = host
        self._db_lock = threading.Lock()
        self._db: psycopg.Connection[Any] | None = None
        self._stopping = threading.Event()

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """The limiter's own connection (never the ledger's: a slow query there must not hold
        requests back), in a transaction; reconnects after a connection failure."""
        with self._db_lock:
            if self._db is None or self._db.closed:
                self._db = psycopg.connect(self._dsn, autocommit=True)
            try:
                with self._db.transaction():
                    yield self._db
            except psycopg.OperationalError:
                self._db.close()
                self._db = None
                raise

    def _run(self, sql: str, args: dict[str, Any]) -> list[tuple[Any, ...]]:
        with self._transaction() as db:
            return db.execute(sql, args).fetchall()

    def acquire(self, duration: float, stop: threading.Event | None = None
                ) -> Reservation | None:
        """Waits for a place in flight here, then until the request fits the account's shared
        windows, and reserves it (hand it to ``release`` when it is over); None when closed or
        ``stop`` is set meanwhile."""
        with self._cond:
            while self._capacity is not None and self._in_flight >= self._capacity:
                if self._closed or (stop is not None and stop.is_set()):
                    return None
                self._cond.wait(0.5)
            if self._closed:
                return None
            self._in_flight += 1  # held while the shared windows are asked
            tokens = self._estimate(duration)
        row_id = self._admit(tokens, stop)
        if row_id is None:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()
            return None
        return SharedReservation(self._clock(), duration, tokens, row_id)

    def _admit(self, tokens: int, stop: threading.Event | None) -> int | None:
        """The new reservation's row once the request fits the shared windows; None when
        closed or ``stop`` is set meanwhile."""
        args = {"acc": self.account, "tokens": tokens, "host": self.host,
                "window": self.window}
        while not self._stopping.is_set() and not (stop is not None and stop.is_set()):
            try:
                wait, row_id = self._try(args, tokens)
            except psycopg.Error as exc:
                log.warning("ratelimit.shared_unreachable", reason=redact(str(exc)))
                wait, row_id = 1.0, None
            if row_id is not None:
                return row_id
            self._stopping.wait(min(max(wait, 0.01), 0.5))
        return None

    def _try(self, args: dict[str, Any], tokens: int) -> tuple[float, int | None]:
        """One admission: (0, the new reservation's row) or (seconds to wait, None)."""
        with self._transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(hashtextextended(%(acc)s, 1))", args)
            db.execute("DELETE FROM mw_window WHERE account = %(acc)s AND at < "
                       "clock_timestamp() - make_interval(secs => %(window)s)", args)
            now, held_until = db.execute(_ADMIT, args).fetchone()  # type: ignore[misc]
            entries = db.execute("SELECT extract(epoch from at), tokens FROM mw_window WHERE "
                                 "account = %(acc)s ORDER BY at, id", args).fetchall()
            wait = wait_needed([(float(a), int(t)) for a, t in entries], tokens, float(now),
                               rpm=self.rpm, tpm=self.tpm, window=self.window,
                               held_until=float(held_until))
            if wait > 0:
                return wait, None
            (row_id,) = db.execute(  # type: ignore[misc]
                "INSERT INTO mw_window (account, at, tokens, host) VALUES (%(acc)s, "
                "clock_timestamp(), %(tokens)s, %(host)s) RETURNING id", args).fetchone()
            return 0.0, int(row_id)

    def settle(self, reservation: Reservation, usage: Mapping[str, Any] | None) -> None:
        """The answer was billed: learn from it here, and keep what it charged in the shared
        window (the estimate stays if that write fails)."""
        super().settle(reservation, usage)
        if isinstance(reservation, SharedReservation):
            self._set_tokens(reservation.row, reservation.tokens)

    def refund(self, reservation: Reservation) -> None:
        """An error answer charged no tokens: the row keeps the request, not its tokens."""
        super().refund(reservation)
        if isinstance(reservation, SharedReservation):
            self._set_tokens(reservation.row, 0)

    def rejected(self, reservation: Reservation, retry_after: float | None = None) -> None:
        """A 429: the request leaves the shared window, and every request of the account is
        held (``Retry-After`` when sent, else a second); the in-flight cap here adjusts as the
        local limiter's does."""
        super().rejected(reservation, retry_after)
        self._delete(reservation)
        self.penalize(retry_after if retry_after is not None else 1.0)

    def withdraw(self, reservation: Reservation) -> None:
        """Never sent (the job's claim was lost first): the request leaves the shared window."""
        super().withdraw(reservation)
        self._delete(reservation)

    def _delete(self, reservation: Reservation) -> None:
        if isinstance(reservation, SharedReservation):
            try:
                self._run("DELETE FROM mw_window WHERE id = %(id)s RETURNING id",
                          {"id": reservation.row})
            except psycopg.Error as exc:
                log.warning("ratelimit.shared_unreachable", reason=redact(str(exc)))

    def _window_full(self, reservation: Reservation) -> bool:
        """Whether the account's shared windows are nearly at the limits (a 429 is then the
        window's doing; with room in them, the cap in flight here is lowered instead)."""
        try:
            seen = self.snapshot()
        except psycopg.Error:
            return True  # unknown: do not lower the cap on a guess
        return (seen["requests_in_window"] >= FULL * self.rpm
                or seen["tokens_in_window"] >= FULL * self.tpm)

    def penalize(self, seconds: float) -> None:
        """Holds every request of the account back for ``seconds`` (after a 429)."""
        try:
            self._run("INSERT INTO mw_hold VALUES (%(acc)s, clock_timestamp() + make_interval("
                      "secs => %(s)s)) ON CONFLICT (account) DO UPDATE SET held_until = "
                      "greatest(mw_hold.held_until, EXCLUDED.held_until) RETURNING account",
                      {"acc": self.account, "s": seconds})
        except psycopg.Error as exc:
            log.warning("ratelimit.shared_unreachable", reason=redact(str(exc)))

    def _set_tokens(self, row_id: int, tokens: int) -> None:
        try:
            self._run("UPDATE mw_window SET tokens = %(tokens)s WHERE id = %(id)s RETURNING id",
                      {"tokens": tokens, "id": row_id})
        except psycopg.Error as exc:
            log.warning("ratelimit.settle_failed", reason=redact(str(exc)))

    def close(self) -> None:
        self._stopping.set()
        super().close()
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def snapshot(self) -> dict[str, float]:
        rows = self._run("SELECT count(*), coalesce(sum(tokens), 0), coalesce((SELECT "
                         "greatest(0, extract(epoch from held_until - clock_timestamp())) FROM "
                         "mw_hold WHERE account = %(acc)s), 0) FROM mw_window WHERE account = "
                         "%(acc)s AND at >= clock_timestamp() - make_interval(secs => "
                         "%(window)s)", {"acc": self.account, "window": self.window})
        n, used, held = rows[0]
        return {"requests_in_window": float(n), "tokens_in_window": float(used),
                "blocked_for_seconds": float(held)}
