"""One budget for a fleet: the rate limiter's windows in a real PostgreSQL, shared by every
process of the account (several limiters in-process are several hosts)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mimo_watchd.config import Secret

pytest.importorskip("psycopg", reason="the [postgres] extra is not installed")

from mimo_watchd.ledger.pglimit import SharedRateLimiter, account_of, wait_needed
from mimo_watchd.ledger.postgres import PostgresLedger

KEY = Secret("sk-fleet-account-1")
WINDOW = 2.0


@pytest.fixture
def limiters(pg_dsn: str, tmp_path: Any) -> Iterator[Any]:
    ledger = PostgresLedger(Secret(pg_dsn), host_id="setup", lease_seconds=30,
                            state_dir=tmp_path)  # creates the tables
    made: list[SharedRateLimiter] = []

    def make(rpm: int = 5, tpm: int = 10_000, key: Secret = KEY) -> SharedRateLimiter:
        made.append(SharedRateLimiter(pg_dsn, account_of(key), rpm, tpm,
                                      host=f"h{len(made)}", window_seconds=WINDOW))
        return made[-1]

    yield make
    for limiter in made:
        limiter.close()
    ledger.close()


def test_the_windows_rule_is_the_local_limiters() -> None:
    """Full request window: wait for its oldest; tokens: wait until enough leave; a request
    bigger than the budget goes alone; a hold counts."""
    entries = [(0.0, 10), (1.0, 10)]
    assert wait_needed(entries, 5, 2.0, rpm=2, tpm=100, window=60, held_until=0) == 58.0
    assert wait_needed(entries, 85, 2.0, rpm=9, tpm=100, window=60, held_until=0) == 58.0
    assert wait_needed(entries, 95, 2.0, rpm=9, tpm=100, window=60, held_until=0) == 59.0
    assert wait_needed([], 500, 2.0, rpm=9, tpm=100, window=60, held_until=0) == 0.0
    assert wait_needed([], 5, 2.0, rpm=9, tpm=100, window=60, held_until=7.0) == 5.0


def test_hosts_of_one_account_share_one_request_window(limiters: Any) -> None:
    """Three hosts asking at once get five requests per window between them, not fifteen."""
    hosts = [limiters(rpm=5) for _ in range(3)]
    admitted: list[float] = []
    lock = threading.Lock()

    def ask(limiter: SharedRateLimiter) -> None:
        for _ in range(3):
            assert limiter.acquire(10) is not None
            with lock:
                admitted.append(time.monotonic())

    threads = [threading.Thread(target=ask, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    admitted.sort()
    assert len(admitted) == 9
    for i in range(5, 9):  # the sixth waits until the first has left the window
        assert admitted[i] - admitted[i - 5] >= WINDOW - 0.05


def test_another_account_has_a_budget_of_its_own(limiters: Any) -> None:
    """A second key's requests do not count against the first's window."""
    first, other = limiters(rpm=1), limiters(rpm=1, key=Secret("sk-another-account"))
    assert first.acquire(10) is not None
    started = time.monotonic()
    assert other.acquire(10) is not None
    assert time.monotonic() - started < 0.5


def test_a_settled_reservation_frees_what_was_not_billed(limiters: Any) -> None:
    """An estimate of 90 tokens settled to 10 leaves room for 80 more at once, on any host."""
    a, b = limiters(rpm=100, tpm=100), limiters(rpm=100, tpm=100)
    reservation = a.acquire(90)
    assert reservation is not None
    reservation.settle(10)
    started = time.monotonic()
    assert b.acquire(80) is not None
    assert time.monotonic() - started < 0.5
    assert a.snapshot()["tokens_in_window"] == 90


def test_a_429_on_one_host_holds_the_whole_account(limiters: Any) -> None:
    """``penalize`` on one host holds every host's next request that long."""
    a, b = limiters(rpm=100), limiters(rpm=100)
    a.penalize(1.0)
    started = time.monotonic()
    assert b.acquire(10) is not None
    assert time.monotonic() - started >= 0.9


def test_a_closed_limiter_admits_nothing(limiters: Any) -> None:
    """A waiter is released with None when its limiter closes."""
    a = limiters(rpm=1)
    assert a.acquire(10) is not None
    threading.Timer(0.3, a.close).start()
    assert a.acquire(10) is None
