"""The daemon's ledger while the state folder is full: nothing paid is lost, nothing half done.

When a write fails for lack of space (``LedgerFullError``) the ledger is *blocked*: ``problem``
says why and ``since`` since when. What must not be lost is held in memory, in order, and
written when space returns (``flush``): a paid answer (``record_response``: held, and still
raised so that the job stops sending more audio it could not journal), a job put back in the
queue (``requeue``) and a finished job (``finish``: its outputs are already in place). Every
other write is refused at once with the same error while blocked (intake, claims and plans wait:
the daemon takes no new work then), and reads go on, held answers included. ``flush`` retries
with backoff, at most ``retry_every`` seconds apart, and unblocks the ledger once nothing is
held. What is held lives only in memory: a process killed meanwhile loses it, and the answers
are paid again after the restart (the jobs themselves are recovered from the ledger).

This is the one place where a full ledger is decided; the daemon asks ``problem`` before it
takes work and calls ``flush`` when ``retry_in`` says so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from mimo_watchd import backoff
from mimo_watchd.config import ApiSettings, Secret
from mimo_watchd.errors import LedgerFullError
from mimo_watchd.ledger.interface import Billed, Job, Ledger, State
from mimo_watchd.ratelimit import RateLimiter

_FIRST_RETRY = 1.0  # seconds before space is first looked for again

Write = Callable[[Ledger], None]


class GuardedLedger:
    """A ``Ledger`` that holds paid answers, requeues and finishes in memory while it is full."""

    def __init__(self, inner: Ledger, *, retry_every: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.retry_every = retry_every
        self._clock = clock
        self._lock = threading.RLock()
        self._held: list[Write] = []
        self._answers: dict[tuple[str, str, str, int], dict[str, Any]] = {}
        self._problem: str | None = None
        self.since: float | None = None  # wall clock (time.time()) when it became blocked
        self._tries = 0
        self._next_try = 0.0

    @property
    def problem(self) -> str | None:
        """Why writes are held (the state folder is full); None while the ledger is writable."""
        return self._problem

    def held(self) -> tuple[int, int]:
        """(paid answers, other writes) held in memory now."""
        with self._lock:
            return len(self._answers), len(self._held) - len(self._answers)

    def retry_in(self) -> float | None:
        """Seconds until ``flush`` should try again (0: now); None while not blocked."""
        with self._lock:
            if self._problem is None:
                return None
            return max(0.0, self._next_try - self._clock())

    def flush(self) -> bool:
        """Writes what is held, in order; True when that is all done and the ledger writable
        again (it was blocked), False while space is still short."""
        with self._lock:
            if self._problem is None:
                return False
            while self._held:
                try:
                    self._held[0](self.inner)
                except LedgerFullError as exc:
                    self._blocked(exc)
                    return False
                self._held.pop(0)
            self._answers.clear()
            self._problem = None
            self.since = None
            self._tries = 0
            return True

    def _blocked(self, exc: LedgerFullError) -> None:
        if self._problem is None:
            self.since = time.time()
        self._problem = exc.reason
        self._tries += 1
        self._next_try = self._clock() + backoff.delay(
            self._tries, initial=min(_FIRST_RETRY, self.retry_every), cap=self.retry_every)

    def _write(self, write: Write, *, hold: bool) -> None:
        """Makes a write, or (blocked, or blocked by it) holds it when ``hold``, else raises."""
        with self._lock:
            if self._problem is None:
                try:
                    write(self.inner)
                    return
                except LedgerFullError as exc:
                    self._blocked(exc)
                    if not hold:
                        raise
            elif not hold:
                raise LedgerFullError(self._problem)
            self._held.append(write)

    def _refuse_while_blocked(self) -> None:
        if self._problem is not None:
            raise LedgerFullError(self._problem)

    def _guarded(self, call: Callable[[], Any]) -> Any:
        """A write that cannot wait: refused while blocked, and it blocks when refused."""
        with self._lock:
            self._refuse_while_blocked()
            try:
                return call()
            except LedgerFullError as exc:
                self._blocked(exc)
                raise

    # --- writes that are held -----------------------------------------------------------

    def record_response(self, *, sha256: str, variant: str, span: str, job_id: int,
                        raw: dict[str, Any]) -> None:
        """Journals a paid answer; while full it is held (and found by ``lookup_response``),
        and LedgerFullError still raised so that the job sends nothing more."""
        def write(ledger: Ledger) -> None:
            ledger.record_response(sha256=sha256, variant=variant, span=span, job_id=job_id,
                                   raw=raw)

        with self._lock:
            self._write(write, hold=True)
            if self._problem is not None:
                self._answers[(sha256, variant, span, job_id)] = raw
                raise LedgerFullError(self._problem)

    def requeue(self, job_id: int, *, delay: float = 0.0, error: str | None = None,
                refund_attempt: bool = False) -> None:
        self._write(lambda ledger: ledger.requeue(job_id, delay=delay, error=error,
                                                  refund_attempt=refund_attempt), hold=True)

    def finish(self, job_id: int, state: State, *, final_path: str | None, outcome: str,
               error: str | None = None, error_doc: dict[str, Any] | None = None) -> None:
        self._write(lambda ledger: ledger.finish(job_id, state, final_path=final_path,
                                                 outcome=outcome, error=error,
                                                 error_doc=error_doc), hold=True)

    # --- writes that wait for space -----------------------------------------------------

    def enqueue(self, *, watch: str, path: str, size: int, mtime_ns: int, sha256: str,
                arrived_at: str) -> Job:
        job: Job = self._guarded(lambda: self.inner.enqueue(
            watch=watch, path=path, size=size, mtime_ns=mtime_ns, sha256=sha256,
            arrived_at=arrived_at))
        return job

    def claim(self, now: float | None = None, *, one_per_content: bool = True) -> Job | None:
        job: Job | None = self._guarded(
            lambda: self.inner.claim(now, one_per_content=one_per_content))
        return job

    def claim_job(self, job_id: int) -> Job | None:
        job: Job | None = self._guarded(lambda: self.inner.claim_job(job_id))
        return job

    def set_plan(self, job_id: int, plan: dict[str, Any], result: dict[str, Any]) -> None:
        self._guarded(lambda: self.inner.set_plan(job_id, plan, result))

    def recover(self, *, unclean: bool) -> int:
        count: int = self._guarded(lambda: self.inner.recover(unclean=unclean))
        return count

    def reset_retry_times(self) -> None:
        self._guarded(self.inner.reset_retry_times)

    # --- reads --------------------------------------------------------------------------

    def lookup_response(self, *, sha256: str, variant: str, span: str,
                        job_id: int | None = None) -> dict[str, Any] | None:
        with self._lock:
            for (sha, var, sp, jid), raw in self._answers.items():
                if (sha, var, sp) == (sha256, variant, span) and job_id in (None, jid):
                    return raw
        return self.inner.lookup_response(sha256=sha256, variant=variant, span=span,
                                          job_id=job_id)

    def active_for_path(self, path: str) -> Job | None:
        return self.inner.active_for_path(path)

    def done_with_content(self, sha256: str, *, exclude_id: int | None = None) -> Job | None:
        return self.inner.done_with_content(sha256, exclude_id=exclude_id)

    def next_due_in(self, now: float | None = None) -> float | None:
        return self.inner.next_due_in(now)

    def billed(self, since: float, until: float) -> Billed:
        return self.inner.billed(since, until)

    def counts(self) -> dict[str, int]:
        return self.inner.counts()

    def failed_files(self) -> int:
        return self.inner.failed_files()

    def recent_failures(self, limit: int = 10) -> list[Job]:
        return self.inner.recent_failures(limit)

    def jobs(self, state: State | None = None) -> list[Job]:
        return self.inner.jobs(state)

    def taken_elsewhere(self, job: Job) -> Job | None:
        return self.inner.taken_elsewhere(job)

    def ensure_held(self, job_id: int, seconds: float = 0.0) -> None:
        self.inner.ensure_held(job_id, seconds)

    def fleet(self) -> dict[str, Any] | None:
        return self.inner.fleet()

    def shared_limiter(self, api: ApiSettings, key: Secret) -> RateLimiter | None:
        return self.inner.shared_limiter(api, key)

    def verify(self) -> None:
        self.inner.verify()

    def close(self) -> None:
        self.inner.close()
