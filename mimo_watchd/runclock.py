"""Time the process could run: a clock that stands still while the process is stopped.

A request's deadline means "the API had this long to answer". ``time.monotonic`` keeps counting
while the process is stopped (SIGSTOP, a debugger, a paused VM or container), so a deadline
judged by it expires while nobody could read: the answer that arrived meanwhile, already paid
for, would be thrown away and paid again (issue 12 item 4). No clock of the operating system
leaves out stopped time, so this one is kept by a ticker thread: each tick advances it by the
monotonic time since the previous tick, but by at most ``max_step``. A tick that comes late
because the process was stopped (or not scheduled) counts as ``max_step`` only.

The ticker runs only while someone holds the clock (``with clock:``), so an idle daemon does
not wake ten times a second for nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

TICK_SECONDS = 0.1
MAX_STEP_SECONDS = 1.0


class RunClock:
    """Seconds the process could run (``now``), while at least one holder keeps it ticking."""

    def __init__(self, *, tick: float = TICK_SECONDS, max_step: float = MAX_STEP_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._tick = tick
        self._max_step = max_step
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._base = 0.0  # run time at the last tick
        self._last = monotonic()  # monotonic time of the last tick
        self._holders = 0
        self._ticker: threading.Thread | None = None

    def now(self) -> float:
        """Run time in seconds (an arbitrary origin, never decreasing)."""
        with self._lock:
            return self._base + min(self._monotonic() - self._last, self._max_step)

    def advance(self) -> None:
        """One tick: take the time since the last one into the clock, at most ``max_step``."""
        with self._lock:
            now = self._monotonic()
            self._base += min(now - self._last, self._max_step)
            self._last = now

    def __enter__(self) -> RunClock:
        with self._lock:
            self._holders += 1
            if self._ticker is None:
                self._base += min(self._monotonic() - self._last, self._max_step)
                self._last = self._monotonic()
                self._ticker = threading.Thread(target=self._run, name="run-clock", daemon=True)
                self._ticker.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            self._holders -= 1

    def _run(self) -> None:
        while True:
            time.sleep(self._tick)
            self.advance()
            with self._lock:
                if self._holders == 0:
                    self._ticker = None
                    return


RUN_CLOCK = RunClock()  # the process's one run clock (the client's request deadlines)
