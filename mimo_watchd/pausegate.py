"""The pause decision: whether workers may take API work now.

An error whose ``pauses`` is set (a bad key, no balance, the API unreachable, ...: see
``errors``) closes the gate: no job is taken, except one probe job at a time, the first a
second after the pause, then at doubling intervals up to ``probe_every`` seconds apart (an
outage that lasts seconds is over in seconds; one that lasts hours costs a probe a minute).
The first probe that ends without such an error opens it again; ``probe_now`` (a reload that
may have fixed the key) lets the next one through at once. Which errors pause is decided by
the errors themselves, so a new reason to pause is a new error class with ``pauses = True``.
An error that knows when its pause ends (``resume_at``, a ``time.time()``: the daily budget
until the next day) sets the next probe then, instead of backing off.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from mimo_watchd import backoff
from mimo_watchd.errors import MimoWatchdError

_FIRST_PROBE = 1.0  # seconds after a pause before the first probe (at most probe_every)


class _HasId(Protocol):
    @property
    def id(self) -> int: ...


J = TypeVar("J", bound=_HasId)


@dataclass(frozen=True)
class Change:
    """The gate closed (``paused``) or opened again."""

    paused: bool
    reason: str | None  # why it closed (None when it opened)
    paused_seconds: float  # how long it had been closed (0 when it closed)


class PauseGate:
    """Open, or closed by a pausing error with one probe job let through at a time."""

    def __init__(self, probe_every: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.probe_every = probe_every
        self._clock = clock
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._since = 0.0
        self.since: float | None = None  # wall clock (time.time()) when it closed
        self._probes = 0  # probes that failed since it closed: the backoff's attempt
        self._next_probe = 0.0
        self._probe: int | None = None  # the id of the probe job in flight

    @property
    def reason(self) -> str | None:
        """Why the gate is closed; None while it is open."""
        return self._reason

    @property
    def probe(self) -> int | None:
        """The id of the probe job in flight, if any."""
        return self._probe

    def next_probe_in(self) -> float | None:
        """Seconds until a probe may be taken (0: now); None while the gate is open."""
        with self._lock:
            if self._reason is None:
                return None
            return max(0.0, self._next_probe - self._clock())

    def probe_now(self) -> None:
        """Lets the next probe through without waiting (something that may end the pause
        changed: a reload)."""
        with self._lock:
            self._next_probe = self._clock()

    def take(self, claim: Callable[[], J | None]) -> J | None:
        """``claim()``'s job while open; while closed, at most one probe job when one is due."""
        with self._lock:
            if self._reason is None:
                return claim()
            if self._probe is not None or self._clock() < self._next_probe:
                return None
            job = claim()
            if job is not None:
                self._probe = job.id
            return job

    def finished(self, job_id: int, error: BaseException | None) -> Change | None:
        """Notes how a job ended; returns the change of the gate it caused, if any."""
        with self._lock:
            was_probe = self._probe == job_id
            if was_probe:
                self._probe = None
            now = self._clock()
            if isinstance(error, MimoWatchdError) and error.pauses:
                closing = self._reason is None
                if closing:
                    self._since, self.since, self._probes = now, time.time(), 0
                    self._next_probe = now + self._probe_wait(error)
                elif was_probe:
                    self._probes += 1
                    self._next_probe = now + self._probe_wait(error)
                self._reason = error.reason
                return Change(True, error.reason, 0.0) if closing else None
            if self._reason is not None and was_probe:
                self._reason, self.since = None, None
                return Change(False, None, now - self._since)
            return None

    def _probe_wait(self, error: MimoWatchdError) -> float:
        resume_at: float | None = getattr(error, "resume_at", None)
        if resume_at is not None:
            return max(0.0, resume_at - time.time())
        return backoff.delay(self._probes + 1, initial=min(_FIRST_PROBE, self.probe_every),
                             cap=self.probe_every)
