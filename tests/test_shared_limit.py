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

    def make(rpm: int = 5, tpm: int = 10_000, key: Secret = KEY,
             max_in_flight: int | None = None) -> SharedRateLimiter:
        made.append(SharedRateLimiter(pg_dsn, account_of(key), rpm, tpm,
                                      host=f"h{len(made)}", window_seconds=WINDOW,
                                      max_in_flight=max_in_flight))
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
    """A reservation settled to the 10 tokens billed leaves room at once, on any host, for what
    the estimate had taken."""
    a, b = limiters(rpm=100, tpm=1000), limiters(rpm=100, tpm=1000)
    reservation = a.acquire(60.0)
    assert reservation is not None
    estimate = reservation.tokens
    a.settle(reservation, {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10})
    a.release(reservation)
    started = time.monotonic()
    second = b.acquire(40.0)
    assert second is not None and estimate + second.tokens > 1000
    assert time.monotonic() - started < 0.5
    assert a.snapshot()["tokens_in_window"] == 10 + second.tokens


def test_an_error_answer_keeps_the_request_but_not_its_tokens(limiters: Any) -> None:
    """A refunded reservation still counts as a request in the shared window, with no tokens."""
    a = limiters(rpm=100, tpm=1000)
    reservation = a.acquire(4.0)
    assert reservation is not None
    a.refund(reservation)
    a.release(reservation)
    seen = a.snapshot()
    assert (seen["requests_in_window"], seen["tokens_in_window"]) == (1, 0)


def test_a_429_takes_the_request_out_and_holds_every_host(limiters: Any) -> None:
    """A 429 on one host removes its request from the shared window and holds every host's
    next request for the Retry-After."""
    a, b = limiters(rpm=100), limiters(rpm=100)
    reservation = a.acquire(4.0)
    assert reservation is not None
    a.rejected(reservation, retry_after=1.0)
    a.release(reservation)
    assert a.snapshot()["requests_in_window"] == 0
    started = time.monotonic()
    assert b.acquire(4.0) is not None
    assert time.monotonic() - started >= 0.9


def test_the_cap_in_flight_is_this_hosts(limiters: Any) -> None:
    """``max_in_flight`` holds a host's third request until one of its two ends; another host
    is not held by it."""
    a, b = limiters(rpm=100, max_in_flight=2), limiters(rpm=100, max_in_flight=2)
    first, second = a.acquire(1.0), a.acquire(1.0)
    assert first is not None and second is not None
    assert b.acquire(1.0) is not None
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(a.acquire(1.0)))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and not got
    a.release(first)
    waiter.join(5)
    assert got and got[0] is not None


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


def test_a_withdrawn_request_leaves_the_shared_window(limiters: Any) -> None:
    """A request never sent (its job's claim lost first) leaves the account's window, so
    another host's request of a one-request window goes at once."""
    a, b = limiters(rpm=1), limiters(rpm=1)
    reservation = a.acquire(4.0)
    assert reservation is not None
    a.withdraw(reservation)
    a.release(reservation)
    assert a.snapshot()["requests_in_window"] == 0
    started = time.monotonic()
    assert b.acquire(4.0) is not None
    assert time.monotonic() - started < WINDOW / 2
