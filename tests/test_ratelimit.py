"""The client's rate limiter as a decision unit, on a fake clock (no network, milliseconds)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from mimo_watchd.ratelimit import RateLimiter, Reservation, prompt_tokens


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limiter(rpm: int = 100, tpm: int = 10_000, counts: str = "total", window: float = 60.0,
            max_in_flight: int | None = None) -> tuple[RateLimiter, Clock]:
    """A limiter on a fake clock."""
    clock = Clock()
    return RateLimiter(rpm, tpm, counts=counts, max_in_flight=max_in_flight,
                       window_seconds=window, clock=clock), clock


def take(lim: RateLimiter, duration: float) -> Reservation:
    """Reserve a request that fits now (fails the test if it would have to wait)."""
    assert wait(lim, duration) == 0
    reservation = lim.acquire(duration)
    assert reservation is not None
    return reservation


def wait(lim: RateLimiter, duration: float) -> float:
    """Seconds the limiter would hold a request of ``duration`` seconds of audio now."""
    with lim._cond:
        return lim._wait_needed(lim._estimate(duration), lim._clock())


def usage(prompt: int, completion: int) -> dict[str, int]:
    """A ``usage`` object of an answer."""
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "seconds": 4}


def test_reserves_what_the_account_charges_under_each_counting_rule() -> None:
    """4 s of audio reserves 46 prompt + 20 completion tokens (Xiaomi's example), or 46 when
    the account counts prompt tokens only."""
    assert prompt_tokens(4) == 25 + 21
    total, _ = limiter()
    prompt, _ = limiter(counts="prompt")
    assert take(total, 4.0).tokens == 66
    assert take(prompt, 4.0).tokens == 46
    with pytest.raises(ValueError, match="counts"):
        limiter(counts="audio")


def test_sliding_windows_hold_requests_and_tokens() -> None:
    """Beyond the request count or the token budget a request waits for the window to slide."""
    lim, clock = limiter(rpm=3, tpm=1000)
    for _ in range(3):
        take(lim, 1.0)
    assert wait(lim, 1.0) == pytest.approx(60)
    clock.now = 61
    take(lim, 100.0)  # 625 + 21 + 500 = 1146 > 1000: alone in an empty window, it still goes
    assert wait(lim, 1.0) == pytest.approx(60)  # the budget is spent until it leaves


def test_settles_to_the_actual_and_learns_the_completion_rate() -> None:
    """An answer replaces the estimate with what was charged, and later estimates use the
    highest completion rate of recent answers (short answers teach nothing)."""
    lim, _ = limiter()
    first = take(lim, 10.0)
    assert first.tokens == 63 + 21 + 50
    lim.settle(first, usage(84, 100))  # 10 completion tokens per second
    assert first.tokens == 184
    assert take(lim, 10.0).tokens == 84 + 100
    lim.settle(take(lim, 1.0), usage(28, 30))  # 30/s on 1 s: rounding, not a rate
    assert take(lim, 10.0).tokens == 184


def test_learns_prompt_tokens_above_the_formula() -> None:
    """When the account counts more prompt tokens than the formula (e.g. encoder padding),
    the excess is reserved from then on."""
    lim, _ = limiter(counts="prompt")
    first = take(lim, 4.0)
    lim.settle(first, usage(47, 20))
    assert take(lim, 4.0).tokens == 47


@pytest.mark.parametrize(
    ("answer", "held"),
    [(None, 66), ({"seconds": 4}, 66), ({"prompt_tokens": 46, "completion_tokens": 30}, 76)],
    ids=["no usage", "no tokens", "no total"],
)
def test_an_answer_without_usable_usage_keeps_the_estimate(answer: dict[str, int] | None,
                                                           held: int) -> None:
    """Unknown usage keeps the (safe) estimate; prompt + completion stand in for a total."""
    lim, _ = limiter()
    reservation = take(lim, 4.0)
    lim.settle(reservation, answer)
    assert reservation.tokens == held


def test_an_uncharged_answer_gives_its_tokens_back_but_still_counts() -> None:
    """An error answer frees its tokens at once; its request stays in the request window."""
    lim, _ = limiter(rpm=10, tpm=140)
    take(lim, 4.0)
    failed = take(lim, 4.0)
    assert wait(lim, 4.0) == pytest.approx(60)  # 3 x 66 > 140
    lim.refund(failed)
    assert failed.tokens == 0 and wait(lim, 4.0) == 0
    lim2, _ = limiter(rpm=2, tpm=1000)
    take(lim2, 1.0)
    lim2.refund(take(lim2, 1.0))
    assert wait(lim2, 1.0) == pytest.approx(60)


def test_a_429_at_a_full_window_holds_until_the_window_frees() -> None:
    """A 429 with our windows full takes the request back and holds every request until the
    oldest reservation leaves the window - not for a fixed back-off."""
    lim, clock = limiter(rpm=3, window=60.0)
    take(lim, 4.0)
    clock.now = 10.0
    take(lim, 4.0)
    clock.now = 30.0
    rejected = take(lim, 4.0)
    lim.rejected(rejected)
    assert rejected not in lim._entries
    assert wait(lim, 4.0) == pytest.approx(30.0)  # the first reservation leaves at 60
    clock.now = 60.0
    assert wait(lim, 4.0) == 0


def test_a_429_with_room_in_the_windows_lowers_the_in_flight_cap() -> None:
    """A 429 our windows cannot explain (the account's cap on requests in flight) holds
    requests a second and lowers the cap below what was in flight, each 429 of the burst by
    one; billed answers raise it again by one per window."""
    lim, clock = limiter(max_in_flight=4)
    sent = [take(lim, 4.0) for _ in range(4)]
    for r in sent[2:]:
        lim.rejected(r)
        lim.release(r)
    assert lim._capacity == 2 and wait(lim, 4.0) == pytest.approx(1.0)
    clock.now = 1.0
    for r in sent[:2]:
        lim.settle(r, usage(46, 20))
        lim.release(r)
    assert lim._capacity == 2  # not before a window without such a 429
    clock.now = 61.0
    lim.settle(take(lim, 4.0), usage(46, 20))
    assert lim._capacity == 3


def test_repeated_429s_back_off_and_retry_after_is_honoured() -> None:
    """429s one after another (each sent after the last came back) back off, doubling; one
    burst of them does not; Retry-After sets the hold; a billed answer ends the streak."""
    lim, clock = limiter()
    burst = [take(lim, 4.0), take(lim, 4.0)]
    for r in burst:
        lim.rejected(r)
    assert wait(lim, 4.0) == pytest.approx(1.0)
    clock.now = 1.0
    lim.rejected(take(lim, 4.0))
    assert wait(lim, 4.0) == pytest.approx(1.0)
    clock.now = 2.0
    lim.rejected(take(lim, 4.0))
    assert wait(lim, 4.0) == pytest.approx(2.0)  # third in a row: 2 s
    clock.now = 4.0
    lim.rejected(take(lim, 4.0), retry_after=7.0)
    assert wait(lim, 4.0) == pytest.approx(7.0)
    clock.now = 11.0
    lim.settle(take(lim, 4.0), usage(46, 20))
    clock.now = 12.0
    lim.rejected(take(lim, 4.0))
    assert wait(lim, 4.0) == pytest.approx(1.0)


def test_blocked_threads_are_admitted_as_the_window_frees() -> None:
    """Concurrent acquirers beyond the budget are held back, then admitted as it frees."""
    lim = RateLimiter(2, 10_000, window_seconds=0.5)
    admitted: list[float] = []
    start = time.monotonic()

    def acquire() -> None:
        assert lim.acquire(1.0) is not None
        admitted.append(time.monotonic() - start)

    threads = [threading.Thread(target=acquire) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    admitted.sort()
    assert len(admitted) == 4 and admitted[1] < 0.3 and admitted[2] >= 0.45


def settled(condition: Callable[[], bool]) -> None:
    """Wait (briefly, for other threads) until ``condition`` holds."""
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.001)


def in_order(lim: RateLimiter, *requests: tuple[str, float]) -> tuple[list[str], list[Any]]:
    """Start one acquiring thread per (name, duration), each after the previous is queued;
    returns the order they are admitted in (filled as they are) and the threads."""
    order: list[str] = []
    threads = []
    for name, duration in requests:
        def acquire(name: str = name, duration: float = duration) -> None:
            assert lim.acquire(duration) is not None
            order.append(name)

        waiting = len(lim._queue) + 1
        thread = threading.Thread(target=acquire)
        thread.start()
        threads.append(thread)
        settled(lambda: len(lim._queue) + len(order) >= waiting)  # noqa: B023 - used at once
    return order, threads


def release_clock(lim: RateLimiter, clock: Clock, now: float) -> None:
    """Move the fake clock and wake the waiters."""
    clock.now = now
    with lim._cond:
        lim._cond.notify_all()


def test_a_later_request_that_would_delay_the_head_waits_behind_it() -> None:
    """First come, first served: a later request that fits now, but would leave the waiting
    head no room at its turn, waits behind it."""
    lim, clock = limiter(tpm=100, counts="prompt")
    take(lim, 4.5)  # 50 tokens, leave at 60
    clock.now = 10.0
    take(lim, 1.25)  # 29, leave at 70
    order, threads = in_order(lim, ("head", 6.0), ("short", 0.0))  # 59 (turn at 60), 21
    assert order == []  # 21 fits now, but 29 + 59 + 21 > 100 at the head's turn
    release_clock(lim, clock, 60.0)
    settled(lambda: order == ["head"])
    release_clock(lim, clock, 70.0)
    for thread in threads:
        thread.join(5)
    assert order == ["head", "short"]


def test_backfilling_uses_room_the_head_cannot_use_yet() -> None:
    """A later, smaller request goes ahead when the head still fits at its turn."""
    lim, clock = limiter(tpm=250, counts="prompt")
    take(lim, 16.0)  # 121 tokens, leave at 60
    order, threads = in_order(lim, ("big", 20.0), ("small", 0.5))  # 146 (turn at 60), 25
    settled(lambda: order == ["small"])
    release_clock(lim, clock, 60.0)
    for thread in threads:
        thread.join(5)
    assert order == ["small", "big"]


def test_close_and_stop_release_waiters() -> None:
    """A waiter returns None when the limiter closes or its stop event is set."""
    lim = RateLimiter(1, 10_000, window_seconds=60.0)
    assert lim.acquire(1.0) is not None
    stop = threading.Event()
    results: list[object] = []
    waiter = threading.Thread(target=lambda: results.append(lim.acquire(1.0, stop)))
    waiter.start()
    stop.set()
    waiter.join(5)
    assert results == [None]
    lim.close()
    assert lim.acquire(1.0) is None
