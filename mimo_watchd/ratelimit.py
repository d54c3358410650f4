"""The client-side budget shared by every request: requests/minute, tokens/minute, concurrency.

The MiMo account limits are sliding 60-second windows counted by the server, so the limiter
keeps a sliding window too (a token bucket would allow a full burst plus a full refill inside
one server window and earn 429s). The window is a little longer than 60 s to absorb the time a
request spends between leaving here and being counted there.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

AUDIO_TOKENS_PER_SECOND = 6.25
PROMPT_OVERHEAD_TOKENS = 21


def estimate_tokens(duration_seconds: float) -> int:
    """Prompt tokens the API will count for this much audio (~6.25/s plus the gateway prompt)."""
    return math.ceil(AUDIO_TOKENS_PER_SECOND * max(0.0, duration_seconds)) + PROMPT_OVERHEAD_TOKENS


@dataclass
class _Entry:
    at: float
    tokens: int


class Reservation:
    """One admitted request; ``settle`` replaces the estimate with the tokens actually billed."""

    def __init__(self, limiter: RateLimiter, entry: _Entry) -> None:
        self._limiter = limiter
        self._entry = entry

    def settle(self, actual_tokens: int | None) -> None:
        if actual_tokens is not None and actual_tokens >= 0:
            with self._limiter._cond:
                self._entry.tokens = actual_tokens
                self._limiter._cond.notify_all()


class RateLimiter:
    """Blocks callers until a request fits the requests/minute and tokens/minute windows."""

    def __init__(
        self,
        requests_per_minute: int,
        tokens_per_minute: int,
        *,
        window_seconds: float = 61.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self.window = window_seconds
        self._clock = clock
        self._entries: deque[_Entry] = deque()
        self._blocked_until = 0.0
        self._cond = threading.Condition()
        self._closed = False

    def close(self) -> None:
        """Wakes every waiter; later ``acquire`` calls return None at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def penalize(self, seconds: float) -> None:
        """Holds every request back for ``seconds`` (after a 429: slow the whole client down)."""
        with self._cond:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    def _expire(self, now: float) -> None:
        while self._entries and self._entries[0].at <= now - self.window:
            self._entries.popleft()

    def _wait_needed(self, tokens: int, now: float) -> float:
        self._expire(now)
        wait = max(0.0, self._blocked_until - now)
        if len(self._entries) >= self.rpm:
            wait = max(wait, self._entries[0].at + self.window - now)
        used = sum(e.tokens for e in self._entries)
        # A request bigger than the whole budget still goes, alone in an empty window.
        if used and used + tokens > self.tpm:
            need = used + tokens - self.tpm
            freed = 0
            for e in self._entries:
                freed += e.tokens
                if freed >= need:
                    wait = max(wait, e.at + self.window - now)
                    break
        return wait

    def acquire(self, tokens: int, stop: threading.Event | None = None) -> Reservation | None:
        """Waits until the request fits; returns None when closed or ``stop`` is set meanwhile."""
        with self._cond:
            while True:
                if self._closed or (stop is not None and stop.is_set()):
                    return None
                now = self._clock()
                wait = self._wait_needed(tokens, now)
                if wait <= 0:
                    entry = _Entry(now, tokens)
                    self._entries.append(entry)
                    return Reservation(self, entry)
                # Wake at least every 0.5 s to notice ``stop``.
                self._cond.wait(min(wait, 0.5))

    def snapshot(self) -> dict[str, float]:
        """Current use of the windows, for status and metrics."""
        with self._cond:
            now = self._clock()
            self._expire(now)
            return {
                "requests_in_window": len(self._entries),
                "tokens_in_window": sum(e.tokens for e in self._entries),
                "blocked_for_seconds": max(0.0, self._blocked_until - now),
            }
