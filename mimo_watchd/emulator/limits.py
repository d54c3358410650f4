"""Per-account request and token budgets over a sliding window, plus the concurrency cap.

All keys share one account, as on the real service ("per account, all keys together").
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class AccountLimits:
    """RPM / TPM over a sliding ``window`` and a cap on requests in flight; None disables one."""

    def __init__(
        self,
        rpm: int | None = 100,
        tpm: int | None = 10_000,
        max_concurrency: int | None = None,
        *,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.max_concurrency = max_concurrency
        self.window = window
        self._clock = clock
        self._requests: deque[float] = deque()
        self._tokens: deque[tuple[float, int]] = deque()
        self._token_sum = 0
        self._in_flight = 0
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        """Forget what left the window."""
        while self._requests and self._requests[0] <= now - self.window:
            self._requests.popleft()
        while self._tokens and self._tokens[0][0] <= now - self.window:
            self._token_sum -= self._tokens.popleft()[1]

    def enter(self) -> bool:
        """Admit one request (counted against RPM and in flight); False means answer 429.

        Refused requests do not count: a client backing off must be able to get back in.
        """
        with self._lock:
            now = self._clock()
            self._expire(now)
            if self.max_concurrency is not None and self._in_flight >= self.max_concurrency:
                return False
            if self.rpm is not None and len(self._requests) >= self.rpm:
                return False
            self._requests.append(now)
            self._in_flight += 1
            return True

    def leave(self) -> None:
        """The admitted request is answered (whatever the outcome)."""
        with self._lock:
            self._in_flight -= 1

    def spend_tokens(self, tokens: int) -> bool:
        """Charge ``tokens`` to the window if they fit under TPM; False means answer 429."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            if self.tpm is not None and self._token_sum + tokens > self.tpm:
                return False
            self._tokens.append((now, tokens))
            self._token_sum += tokens
            return True

    def reset(self) -> None:
        """Empty both windows (requests in flight stay counted until they finish)."""
        with self._lock:
            self._requests.clear()
            self._tokens.clear()
            self._token_sum = 0

    @property
    def tokens_in_window(self) -> int:
        """Tokens charged within the current window."""
        with self._lock:
            self._expire(self._clock())
            return self._token_sum
