"""Per-account request and token budgets over a sliding window, plus the concurrency cap.

All keys share one account, as on the real service ("per account, all keys together").

What counts, in this model of an undocumented service: a request answered 429 leaves no trace
in either window (a client backing off must be able to get back in); any other answer after
admission counts one request; tokens stay in the window only for calls the account bills (the
model ran), so a request refused after admission gets its tokens back.

When: a request and its tokens count from the moment the request was received. The tokens are
known only once the audio is decoded, which takes the emulator up to a second for a 5-minute
chunk on a loaded machine; dating the charge at that moment would make the account's windows
depend on the emulator's CPU, which no real account does.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

TPM_COUNTS = ("total", "prompt")  # what the TPM window charges (mimo-api.md s.7: undocumented)


class Entry:
    """One request or one token charge in a window; ``amount`` 0 once withdrawn."""

    __slots__ = ("amount", "at")

    def __init__(self, at: float, amount: int) -> None:
        self.at = at
        self.amount = amount


class AccountLimits:
    """RPM / TPM over a sliding ``window`` and a cap on requests in flight; None disables one."""

    def __init__(
        self,
        rpm: int | None = 100,
        tpm: int | None = 10_000,
        max_concurrency: int | None = None,
        *,
        tpm_counts: str = "total",
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if tpm_counts not in TPM_COUNTS:
            raise ValueError(f"tpm_counts must be one of {', '.join(TPM_COUNTS)}")
        self.rpm = rpm
        self.tpm = tpm
        self.tpm_counts = tpm_counts
        self.max_concurrency = max_concurrency
        self.window = window
        self._clock = clock
        self._requests: deque[Entry] = deque()
        self._request_count = 0
        self._tokens: list[Entry] = []  # sorted by ``at`` (charges arrive out of order)
        self._token_sum = 0
        self._in_flight = 0
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        """Forget what left the window."""
        while self._requests and self._requests[0].at <= now - self.window:
            self._request_count -= self._requests.popleft().amount
        gone = bisect.bisect_right(self._tokens, now - self.window, key=lambda e: e.at)
        self._token_sum -= sum(e.amount for e in self._tokens[:gone])
        del self._tokens[:gone]

    def enter(self) -> Entry | None:
        """Admit one request (counted against RPM and in flight); None means answer 429."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            if self.max_concurrency is not None and self._in_flight >= self.max_concurrency:
                return None
            if self.rpm is not None and self._request_count >= self.rpm:
                return None
            entry = Entry(now, 1)
            self._requests.append(entry)
            self._request_count += 1
            self._in_flight += 1
            return entry

    def leave(self) -> None:
        """The admitted request is answered (whatever the outcome)."""
        with self._lock:
            self._in_flight -= 1

    def charge(self, usage: Mapping[str, Any], admission: Entry) -> Entry | None:
        """Charge a request's tokens (total or prompt, as the account counts) to the window, as
        of its ``admission``, if they fit under TPM now; None means answer 429."""
        tokens = int(usage["total_tokens" if self.tpm_counts == "total" else "prompt_tokens"])
        with self._lock:
            self._expire(self._clock())
            if self.tpm is not None and self._token_sum + tokens > self.tpm:
                return None
            entry = Entry(admission.at, tokens)
            bisect.insort(self._tokens, entry, key=lambda e: e.at)
            self._token_sum += tokens
            return entry

    def withdraw(self, entry: Entry) -> None:
        """Take back a request or a charge: the call was answered 429, or was not billed."""
        with self._lock:
            if entry in self._requests:
                self._request_count -= entry.amount
            elif entry in self._tokens:
                self._token_sum -= entry.amount
            entry.amount = 0

    def reset(self) -> None:
        """Empty both windows (requests in flight stay counted until they finish)."""
        with self._lock:
            self._requests.clear()
            self._request_count = 0
            self._tokens.clear()
            self._token_sum = 0

    @property
    def tokens_in_window(self) -> int:
        """Tokens charged within the current window."""
        with self._lock:
            self._expire(self._clock())
            return self._token_sum

    @property
    def requests_in_window(self) -> int:
        """Requests counted within the current window."""
        with self._lock:
            self._expire(self._clock())
            return self._request_count
