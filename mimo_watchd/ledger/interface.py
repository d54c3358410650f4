"""What the rest of mimo-watchd uses of the ledger: the ``Ledger`` protocol, ``Job``, ``State``.

A job moves ``QUEUED -> PROCESSING -> DONE | FAILED``; a transient failure puts it back to
``QUEUED`` with a ``next_attempt_at``. Paid responses are journaled per content (sha256),
variant (model and language) and audio span the moment they arrive, durably, so neither a crash
nor a re-queue pays for the same audio twice. Where a job's outputs go (``plan``) and its result
are recorded *before* they are written, so recovery after a crash finishes the same placement.

Every implementation raises :class:`~mimo_watchd.errors.LedgerError` for a failure of its
storage, and nothing else of its driver's: ``LedgerFullError`` when there is no space left for
a write, ``LedgerLostError`` when the storage is corrupt or was deleted or replaced. A ledger
shared by a fleet (PostgreSQL) also raises :class:`~mimo_watchd.errors.LeaseLostError` from the
calls on a claimed job once this process no longer holds (or cannot show it holds) that job's
claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mimo_watchd.config import ApiSettings, Secret
    from mimo_watchd.ratelimit import RateLimiter


class State(StrEnum):
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    DONE = "DONE"
    FAILED = "FAILED"


@dataclass(frozen=True)
class Job:
    """One file's job as the ledger holds it."""

    id: int
    watch: str
    path: str
    size: int
    mtime_ns: int
    sha256: str
    state: State
    attempts: int
    interruptions: int  # unclean stops of the daemon while this job ran, since its last progress
    next_attempt_at: float
    last_error: str | None
    arrived_at: str | None
    plan: dict[str, Any] | None
    result: dict[str, Any] | None
    final_path: str | None
    outcome: str | None
    updated_at: float


@dataclass(frozen=True)
class Billed:
    """What the paid answers journaled in a period billed: their ``usage.seconds`` summed, how
    many answers, and how many of them did not say (``unknown``: not counted in ``seconds``)."""

    seconds: float
    answers: int
    unknown: int


class Ledger(Protocol):
    """Every file's identity and state, and the journal of paid API responses (thread-safe)."""

    # --- intake
    def active_for_path(self, path: str) -> Job | None:
        """The QUEUED or PROCESSING job of this path, if any."""

    def enqueue(self, *, watch: str, path: str, size: int, mtime_ns: int, sha256: str,
                arrived_at: str) -> Job:
        """A new QUEUED job for a file that arrived, or the path's QUEUED job with the file's
        new identity (the file changed while it waited)."""

    def done_with_content(self, sha256: str, *, exclude_id: int | None = None) -> Job | None:
        """The newest DONE job that transcribed this content (for the duplicate policy)."""

    def taken_elsewhere(self, job: Job) -> Job | None:
        """The job (of another host) that already finished this very file, which is why it is
        gone here; None when nobody else can have taken it (one host)."""

    # --- the work loop
    def claim(self, now: float | None = None, *, one_per_content: bool = True) -> Job | None:
        """Takes the oldest due QUEUED job and marks it PROCESSING (one attempt more).

        With ``one_per_content`` a job waits while another of the same content is processing.
        A job that was running when the daemon died (``interruptions`` > 0) runs alone.
        """

    def claim_job(self, job_id: int) -> Job | None:
        """Marks this QUEUED job PROCESSING, if it still is QUEUED."""

    def next_due_in(self, now: float | None = None) -> float | None:
        """Seconds until the next QUEUED job is due (0 if one is due now), None if none."""

    def requeue(self, job_id: int, *, delay: float = 0.0, error: str | None = None,
                refund_attempt: bool = False) -> None:
        """Back to QUEUED, due after ``delay``; ``refund_attempt`` for pauses.

        The wait never lasts longer than ``delay``, whatever the wall clock does meanwhile."""

    def set_plan(self, job_id: int, plan: dict[str, Any], result: dict[str, Any]) -> None:
        """Records, durably, where the outputs will go and what they hold, before writing."""

    def ensure_held(self, job_id: int, seconds: float = 0.0) -> None:
        """Before a request or a write for a claimed job: raises LeaseLostError unless this
        process holds the job's claim for ``seconds`` more (one host: always)."""

    def finish(self, job_id: int, state: State, *, final_path: str | None, outcome: str,
               error: str | None = None, error_doc: dict[str, Any] | None = None) -> None:
        """Ends a job: DONE or FAILED, where its audio is now, its outcome."""

    def recover(self, *, unclean: bool) -> int:
        """Jobs left PROCESSING go back to QUEUED; at start (``unclean``) each counts one
        interruption more. Returns how many."""

    def reset_retry_times(self) -> None:
        """Makes every queued job due now (after a pause ends or on ``--once``)."""

    # --- the journal
    def record_response(self, *, sha256: str, variant: str, span: str, job_id: int,
                        raw: dict[str, Any]) -> None:
        """Journals a paid response, durably, before anything else happens with it; clears the
        job's interruptions (it made progress)."""

    def lookup_response(self, *, sha256: str, variant: str, span: str,
                        job_id: int | None = None) -> dict[str, Any] | None:
        """A journaled response for this content and span (of this job only, if given)."""

    def billed(self, since: float, until: float) -> Billed:
        """What the answers journaled from ``since`` until before ``until`` (``time.time()``
        values) billed: the bill of a day or a month, whichever job they were for."""

    # --- reporting
    def counts(self) -> dict[str, int]:
        """Jobs per state (every state present)."""

    def failed_files(self) -> int:
        """Files now in a failed folder: failed jobs not moved back by ``retry`` since (a file
        that failed, was retried and failed again counts once)."""

    def recent_failures(self, limit: int = 10) -> list[Job]:
        """The latest of those files' jobs, newest first."""

    def jobs(self, state: State | None = None) -> list[Job]:
        """Every job (in this state), oldest first."""

    def fleet(self) -> dict[str, Any] | None:
        """The hosts sharing this ledger, their jobs in flight and the shared queue (None for
        a ledger of one host)."""

    def shared_limiter(self, api: ApiSettings, key: Secret) -> RateLimiter | None:
        """The rate limiter (at ``api``'s limits) every process of ``key``'s account shares
        through this ledger (None: one host, each client limits itself)."""

    # --- health
    def verify(self) -> None:
        """Raises LedgerLostError when the storage was deleted or replaced since it was opened
        (whatever is written then would be lost)."""

    def close(self) -> None:
        """Releases the storage; the ledger is unusable afterwards."""
