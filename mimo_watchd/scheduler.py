"""The scheduler thread: settled files become queued jobs, and a full ledger is written again.

Arrivals from the watchers (``offer``, the ``WatchSet``'s sink) go to the ``Settler``; the thread
polls it, woken by each arrival, and admits every ready file (``intake.admit``). A file that
never became whole audio is failed at once through ``fail_now`` (the daemon's one way to run a
job). While the ledger is blocked because the state folder is full (``GuardedLedger.problem``)
nothing is admitted: settled files wait in ``unadmitted`` (in memory: the settler has handed
them out), the pause is announced once, and ``flush`` is called whenever it is due; once it
succeeds the resume is announced, ``changed`` wakes the workers, and the waiting files are
admitted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from mimo_watchd import intake
from mimo_watchd.config import WatchSettings
from mimo_watchd.errors import IncompleteAudioError, LedgerError, LedgerFullError
from mimo_watchd.ledger import Job
from mimo_watchd.ledger.guard import GuardedLedger
from mimo_watchd.settle import Ready, Settler
from mimo_watchd.watcher import Arrival

log = structlog.get_logger("mimo_watchd.scheduler")

_LONGEST_SLEEP = 0.5  # also how soon a due flush of the full ledger is noticed


class Scheduler:
    """Turns settled files into jobs; retries the writes a full ledger holds."""

    def __init__(self, *, ledger: GuardedLedger, settler: Settler,
                 watches: Callable[[], Sequence[WatchSettings]],
                 fail_now: Callable[[Job, IncompleteAudioError], object],
                 on_ledger_error: Callable[[LedgerError], None],
                 changed: Callable[[], None]) -> None:
        self.ledger = ledger
        self.settler = settler
        self._watches = watches  # the current watches (a reload may change them)
        self._fail_now = fail_now
        self._on_ledger_error = on_ledger_error
        self._changed = changed
        self.arrived = threading.Event()  # there are arrivals (or a stop) to look at
        self.admitting = False  # settled files are being turned into jobs right now
        self.unadmitted: dict[Path, Ready] = {}  # settled, but the ledger had no space
        self._announced = False  # the full state folder's pause has been logged

    def offer(self, arrival: Arrival) -> None:
        """The watchers' sink: hand over and wake the thread (never blocks)."""
        self.settler.offer(arrival)
        self.arrived.set()

    def run(self, stop: threading.Event) -> None:
        """The thread's loop, until ``stop`` is set (set ``arrived`` too, to wake it)."""
        while not stop.is_set():
            self.arrived.clear()
            try:
                self._retry_full_ledger()
                if self.ledger.problem is None:
                    self._admit_settled()
            except LedgerError as exc:
                self._on_ledger_error(exc)
            except Exception:
                log.exception("scheduler.error")
            self._changed()
            self.arrived.wait(min(_LONGEST_SLEEP, max(0.005, self.settler.next_check_in())))

    def _retry_full_ledger(self) -> None:
        """Announces a full state folder once, and writes what is held when flush is due."""
        problem = self.ledger.problem
        if problem is None:
            return
        if not self._announced:
            self._announced = True
            answers, writes = self.ledger.held()
            log.error("daemon.paused", reason=problem, paused="intake and API work",
                      held_answers=answers, held_writes=writes,
                      retry_every_seconds=self.ledger.retry_every)
        since = self.ledger.since or time.time()
        if self.ledger.retry_in() == 0 and self.ledger.flush():
            self._announced = False
            log.info("daemon.resumed", paused_seconds=round(time.time() - since),
                     paused="intake and API work")

    def _admit_settled(self) -> None:
        self.admitting = True
        try:
            waiting, self.unadmitted = list(self.unadmitted.values()), {}
            for ready in waiting + self.settler.poll():
                try:
                    self.admit(ready)
                except LedgerFullError:
                    self.unadmitted[ready.path] = ready  # kept until the ledger has space
                except LedgerError:
                    raise  # the ledger itself is in trouble: the daemon decides
                except Exception:
                    # One file must never stop the others of its round; forgotten, it is
                    # offered again by the next scan.
                    log.exception("intake.error", path=str(ready.path))
                    self.settler.forget(ready.path)
        finally:
            self.admitting = False

    def admit(self, ready: Ready) -> None:
        """Queues a settled file (once per identity); fails one that never became whole."""
        if all(w.path != ready.watch.path for w in self._watches()):
            return  # its watch was removed by a reload; a later re-add rescans the folder
        job = intake.admit(self.ledger, ready)
        if job is None or not ready.incomplete_reason:
            return
        claimed = self.ledger.claim_job(job.id)
        if claimed is not None:
            self._fail_now(claimed, IncompleteAudioError(
                f"incomplete audio: {ready.incomplete_reason}"))
