"""Whether the daemon is alive (systemd's watchdog pings) and healthy (``/healthz``).

*Alive*: startup is over, every thread the daemon started runs, every folder observer runs, and
no job went without progress (a claim, a chunk done) for ``worker_stall_seconds``. This gates
the watchdog pings, so it leaves pauses out: a restart cures neither a bad key nor a full disk.
*Healthy*: alive and not paused; ``/healthz`` answers 503 with the reason otherwise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Health:
    """Tracks the daemon's threads and jobs in progress; answers alive and healthy."""

    def __init__(self, *, stall_seconds: Callable[[], float], watchers_alive: Callable[[], bool],
                 stopping: Callable[[], bool], paused: Callable[[], str | None]) -> None:
        self._stall_seconds = stall_seconds
        self._watchers_alive = watchers_alive
        self._stopping = stopping
        self._paused = paused
        self.serving = threading.Event()  # the watchers run and the first scan is done
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._progress: dict[int, float] = {}  # job id -> monotonic time of its last progress
        self.jobs = 0  # jobs running now (worker and scheduler alike)

    def job_started(self, job_id: int) -> None:
        with self._lock:
            self.jobs += 1
            self._progress[job_id] = time.monotonic()

    def progressed(self, job_id: int) -> None:
        """A job moved forward (a chunk finished): it is not hung."""
        with self._lock:
            if job_id in self._progress:
                self._progress[job_id] = time.monotonic()

    def job_ended(self, job_id: int) -> None:
        with self._lock:
            self.jobs -= 1
            self._progress.pop(job_id, None)

    def alive(self) -> tuple[bool, str]:
        """True while startup is over and the threads, the observers and every job are going."""
        if not self.serving.is_set():
            return False, "starting: recovering the ledger and scanning the watches"
        dead = [t.name for t in self.threads if not t.is_alive()]
        if dead and not self._stopping():
            return False, f"threads died: {', '.join(dead)}"
        if not self._watchers_alive():
            return False, "a folder observer died"
        limit = self._stall_seconds()
        now = time.monotonic()
        with self._lock:
            stalled = [j for j, t in self._progress.items() if now - t > limit]
        if stalled:
            return False, f"{len(stalled)} job(s) made no progress for {limit:g} s"
        return True, "ok"

    def healthy(self) -> tuple[bool, str]:
        """/healthz: alive, and not paused (an operator problem, an outage, a full disk)."""
        ok, reason = self.alive()
        paused = self._paused() if ok else None
        return (False, paused) if paused is not None else (ok, reason)
