"""The claims this process holds in the fleet ledger, and the thread that renews them.

A claim is a lease on one content with a fencing number (``mw_claims``). Locally each held
claim has a deadline on this host's monotonic clock, measured from *before* the query that
last set it: the lease is known valid until then even if the database becomes unreachable,
and a process frozen past it (SIGSTOP, a VM paused) finds its deadline gone when it wakes.
The keeper renews every held claim at a third of the lease and heartbeats the host's row;
a claim it cannot renew before its deadline is lost, and the job stops at its next step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("mimo_watchd.ledger")


@dataclass
class Held:
    """One claim this process holds: the content, its fence, its deadline (monotonic)."""

    sha256: str
    fence: int
    valid_until: float
    lost: bool = False

    def remaining(self) -> float:
        return -1.0 if self.lost else self.valid_until - time.monotonic()


class Holdings:
    """The claims this process holds, by job id (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, Held] = {}

    def add(self, job_id: int, held: Held) -> None:
        with self._lock:
            self._held[job_id] = held

    def get(self, job_id: int) -> Held | None:
        with self._lock:
            return self._held.get(job_id)

    def pop(self, job_id: int) -> Held | None:
        with self._lock:
            return self._held.pop(job_id, None)

    def ids(self) -> list[int]:
        with self._lock:
            return list(self._held)

    def renewed(self, started: float, remaining: dict[tuple[str, int], float]) -> None:
        """A renewal sent at ``started`` (monotonic) found these (sha256, fence) pairs still
        ours for ``remaining`` seconds; every other held claim is lost."""
        with self._lock:
            for held in self._held.values():
                left = remaining.get((held.sha256, held.fence))
                if left is None:
                    held.lost = True
                else:
                    held.valid_until = max(held.valid_until, started + left)

    def expire(self) -> None:
        """Marks lost every claim whose deadline has passed (no renewal reached the database)."""
        now = time.monotonic()
        with self._lock:
            for held in self._held.values():
                if held.valid_until <= now:
                    held.lost = True


class Keeper:
    """Calls ``renew`` every ``interval`` seconds on its own thread until stopped."""

    def __init__(self, renew: Callable[[], None], interval: float) -> None:
        self._renew = renew
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._renew()
            except Exception as exc:  # the next round tries again; deadlines run out meanwhile
                log.warning("ledger.renew_failed", reason=str(exc))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)
