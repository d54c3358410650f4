"""The client-side budget shared by every request: requests/minute, tokens/minute, in flight.

The MiMo account limits are sliding 60-second windows counted by the server (mimo-api.md s.5),
so the limiter keeps sliding windows too (a token bucket would allow a full burst plus a full
refill inside one server window and earn 429s). Each request reserves, when it is sent, what
the account will charge for it:

- one request, and the tokens the account counts (``counts``): prompt tokens, plus - when the
  account counts total tokens - completion tokens estimated per second of audio from recent
  answers, starting from Xiaomi's example (4 s of speech -> 20 completion tokens);
- the answer settles the reservation to the tokens actually charged (its ``usage``);
- an answer the account did not charge (an error) gives the tokens back; a 429 gives the
  request back too, and holds every request until the window has room again.

The window is a little longer than the account's (``WINDOW_MARGIN``) to absorb the time between
a request leaving here and the server counting it.

Requests in flight are capped too (``max_in_flight``, the configured ``max_concurrency``). The
account has an unpublished cap of its own (mimo-api.md s.5): a 429 that our windows cannot
explain (they have room) lowers the cap to one below what was in flight, and it creeps back up
by one per window without such a 429.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

ACCOUNT_WINDOW_SECONDS = 60.0  # mimo-api.md s.5: limits per minute, sliding
# The server counts a request after its upload (and its tokens after decoding the audio); a
# later request must not be counted less than 60 s after it. Measured by ``python -m bench
# pacing`` (BENCHMARKS.md): see there for why this margin and not more.
WINDOW_MARGIN = 0.5
AUDIO_TOKENS_PER_SECOND = 6.25  # mimo-api.md s.1 [OBS]: 4 s -> 25 audio tokens
PROMPT_OVERHEAD_TOKENS = 21  # mimo-api.md s.2 [OBS]: gateway prompt tokens around the audio
COMPLETION_TOKENS_PER_SECOND = 5.0  # mimo-api.md s.2 and s.7 [DOC]: 4 s -> 20 completion tokens
TPM_COUNTS = ("total", "prompt")  # what the account's TPM counts: undocumented (s.7)
LEARN_FROM = 32  # recent answers the completion rate is learned from
LEARN_MIN_SECONDS = 2.0  # shorter answers are mostly rounding: they teach nothing about rates
MAX_HOLD_SECONDS = ACCOUNT_WINDOW_SECONDS
# A 429 with our windows at least this full is the window's doing: the account's is fuller.
FULL = 0.9


def prompt_tokens(duration_seconds: float) -> int:
    """Prompt tokens the API counts for this much audio (~6.25/s plus the gateway prompt)."""
    return math.ceil(AUDIO_TOKENS_PER_SECOND * max(0.0, duration_seconds)) + PROMPT_OVERHEAD_TOKENS


class Reservation:
    """What one request holds in the windows, from the moment it was let go."""

    __slots__ = ("at", "duration", "in_flight", "tokens")

    def __init__(self, at: float, duration: float, tokens: int) -> None:
        self.at = at
        self.duration = duration
        self.tokens = tokens  # the estimate until the answer settles it
        self.in_flight = True


class _Waiter:
    """A caller in the queue, with the tokens it needs."""

    __slots__ = ("tokens",)

    def __init__(self) -> None:
        self.tokens = 0


class RateLimiter:
    """Blocks callers, first come first served, until a request fits the requests/minute and
    tokens/minute windows and the cap on requests in flight.

    A later caller may go ahead of the head of the queue only when that cannot delay the head
    (backfilling): it fits now, and the head will still fit at the moment it would have.
    """

    def __init__(
        self,
        requests_per_minute: int,
        tokens_per_minute: int,
        *,
        counts: str = "total",
        max_in_flight: int | None = None,
        window_seconds: float = ACCOUNT_WINDOW_SECONDS + WINDOW_MARGIN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if counts not in TPM_COUNTS:
            raise ValueError(f"counts must be one of {', '.join(TPM_COUNTS)}")
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self.counts = counts
        self.max_in_flight = max_in_flight
        self.window = window_seconds
        self._clock = clock
        self._in_flight = 0
        self._capacity = max_in_flight  # the cap now: lowered by 429s the windows do not explain
        self._lowered_at = 0.0
        self._entries: deque[Reservation] = deque()
        self._held_until = 0.0
        self._rejections = 0  # 429s since the last billed answer
        self._rejected_at = float("-inf")  # when the last 429 came in
        self._rates: deque[float] = deque(maxlen=LEARN_FROM)  # completion tokens per second
        self._prompt_excess: deque[int] = deque(maxlen=LEARN_FROM)  # actual - formula
        self._queue: deque[_Waiter] = deque()  # waiting callers, in arrival order
        self._cond = threading.Condition()
        self._closed = False

    def close(self) -> None:
        """Wakes every waiter; later ``acquire`` calls return None at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _estimate(self, duration: float) -> int:
        """Tokens the account will charge for ``duration`` seconds of audio, as far as recent
        answers tell: the highest recent rates, so an estimate errs on the safe side."""
        excess = max(self._prompt_excess, default=0)
        tokens = prompt_tokens(duration) + max(0, excess)
        if self.counts == "total":
            rate = max(self._rates, default=COMPLETION_TOKENS_PER_SECOND)
            tokens += max(1, math.ceil(rate * max(0.0, duration) - 1e-9))
        return tokens

    def acquire(self, duration: float, stop: threading.Event | None = None) -> Reservation | None:
        """Waits until a request for ``duration`` seconds of audio fits, and reserves it (hand
        it to ``release`` when the request is over); None when closed or ``stop`` is set
        meanwhile."""
        waiter = _Waiter()
        with self._cond:
            self._queue.append(waiter)
            try:
                while True:
                    if self._closed or (stop is not None and stop.is_set()):
                        return None
                    now = self._clock()
                    tokens = waiter.tokens = self._estimate(duration)
                    wait = self._wait_needed(tokens, now)
                    full = self._capacity is not None and self._in_flight >= self._capacity
                    # First come, first served (a long chunk waiting for room is not overtaken
                    # for ever by short ones that fit the leftover budget), but a short one may
                    # use room the head cannot use before its turn.
                    head = self._queue[0]
                    if wait <= 0 and not full and (
                        head is waiter or self._spares(head, tokens, now)
                    ):
                        reservation = Reservation(now, duration, tokens)
                        self._entries.append(reservation)
                        self._in_flight += 1
                        return reservation
                    # Wake at least every 0.5 s to notice ``stop`` (releases and answers wake
                    # waiters too).
                    self._cond.wait(min(wait, 0.5) if wait > 0 else 0.5)
            finally:
                self._queue.remove(waiter)
                self._cond.notify_all()

    def _spares(self, head: _Waiter, tokens: int, now: float) -> bool:
        """Whether ``tokens`` reserved now leave the head of the queue room at its turn."""
        turn = self._wait_needed(head.tokens, now)
        if turn <= 0:
            return False  # the head goes now (or waits for a place in flight): it goes first
        staying = [e for e in self._entries if e.at > now + turn - self.window]
        return (len(staying) + 2 <= self.rpm
                and sum(e.tokens for e in staying) + head.tokens + tokens <= self.tpm)

    def release(self, reservation: Reservation) -> None:
        """The request is over, whatever its outcome: its place in flight is free."""
        with self._cond:
            if reservation.in_flight:
                reservation.in_flight = False
                self._in_flight -= 1
                self._cond.notify_all()

    def settle(self, reservation: Reservation, usage: Mapping[str, Any] | None) -> None:
        """The account billed the request: hold what its ``usage`` says it charged (the
        estimate stays when the answer carries no usable usage) and learn from it."""
        with self._cond:
            self._rejections = 0
            charged = _charged(usage, self.counts)
            if charged is not None:
                reservation.tokens = charged
                self._learn(reservation.duration, usage or {})
            now = self._clock()
            cap, ceiling = self._capacity, self.max_in_flight
            if cap is not None and ceiling is not None and cap < ceiling \
                    and now - self._lowered_at >= self.window:
                self._capacity, self._lowered_at = cap + 1, now  # probe one more per window
            self._cond.notify_all()

    def refund(self, reservation: Reservation) -> None:
        """The account answered without charging (an error): its tokens go back; the request
        still counts."""
        with self._cond:
            reservation.tokens = 0
            self._cond.notify_all()

    def withdraw(self, reservation: Reservation) -> None:
        """The request was never sent (its job's claim was found lost first): it and its
        tokens leave the windows, as if never reserved."""
        with self._cond:
            if reservation in self._entries:
                self._entries.remove(reservation)
            self._cond.notify_all()

    def rejected(self, reservation: Reservation, retry_after: float | None = None) -> None:
        """The account answered 429: the request and its tokens go back, and every request is
        held. With our windows (nearly) full, the account's is evidently fuller and fullest
        now: until our oldest reservation leaves it. With room in them, something else limits
        us (the account's cap on requests in flight, or another client of the account): the
        in-flight cap drops below what was in flight, and requests wait a second. Retry-After,
        when sent, decides; a second 429 in a row (no billed answer between, and sent after
        the first came back: not one burst) adds a doubling back-off."""
        with self._cond:
            now = self._clock()
            self._expire(now)
            window_full = self._window_full(reservation)
            if reservation in self._entries:
                self._entries.remove(reservation)
            if reservation.at > self._rejected_at:
                self._rejections += 1
            self._rejected_at = now
            backoff = 0.0 if self._rejections == 1 else 2.0 ** (self._rejections - 2)
            if retry_after is not None:
                until = now + retry_after
            elif window_full and self._entries:
                until = max(self._entries[0].at + self.window, now + backoff)
            else:
                until = now + max(1.0, backoff)
                if not window_full and self._capacity is not None:
                    self._capacity = max(1, min(self._capacity, self._in_flight) - 1)
                    self._lowered_at = now
            self._held_until = max(self._held_until, min(until, now + MAX_HOLD_SECONDS))
            self._cond.notify_all()

    def _window_full(self, reservation: Reservation) -> bool:
        """Whether our windows, this reservation included, are nearly at the limits."""
        used = sum(e.tokens for e in self._entries)
        if reservation not in self._entries:
            used += reservation.tokens
        return len(self._entries) >= FULL * self.rpm or used >= FULL * self.tpm

    def _learn(self, duration: float, usage: Mapping[str, Any]) -> None:
        completion, prompt = usage.get("completion_tokens"), usage.get("prompt_tokens")
        if isinstance(prompt, int):
            self._prompt_excess.append(prompt - prompt_tokens(duration))
        if isinstance(completion, int) and duration >= LEARN_MIN_SECONDS:
            self._rates.append(completion / duration)

    def _expire(self, now: float) -> None:
        while self._entries and self._entries[0].at <= now - self.window:
            self._entries.popleft()

    def _wait_needed(self, tokens: int, now: float) -> float:
        """Seconds until a request of ``tokens`` fits both windows (0: now)."""
        self._expire(now)
        wait = max(0.0, self._held_until - now)
        entries = self._entries
        if len(entries) >= self.rpm:
            wait = max(wait, entries[len(entries) - self.rpm].at + self.window - now)
        used = sum(e.tokens for e in entries)
        # A request bigger than the whole budget still goes, alone in an empty window.
        if used and used + tokens > self.tpm:
            need = used + tokens - self.tpm
            freed = 0
            for e in entries:
                freed += e.tokens
                if freed >= need:
                    wait = max(wait, e.at + self.window - now)
                    break
        return wait


def _charged(usage: Mapping[str, Any] | None, counts: str) -> int | None:
    """The tokens a ``usage`` says the account charged under ``counts`` (None: not known)."""
    if not isinstance(usage, Mapping):
        return None
    if counts == "prompt":
        value = usage.get("prompt_tokens")
    else:
        value = usage.get("total_tokens")
        if value is None and isinstance(usage.get("prompt_tokens"), int) and isinstance(
            usage.get("completion_tokens"), int
        ):
            value = usage["prompt_tokens"] + usage["completion_tokens"]
    return value if isinstance(value, int) and value >= 0 else None
