"""How one claimed job runs: transcribe (or reuse), plan, write, move, record; or fail safely.

A job is a plain unit: :class:`JobRunner` gets a :class:`JobContext` holding everything it
may use (the ledger, the settings the job started with, a transcriber, its watch, hooks,
metrics, a clock, a progress callback) and nothing else; the loop around it lives in
``daemon``. This module owns the decisions about one file: the duplicate policy, what a
failed attempt leads to (pause, retry or fail: one path fails a job), and the canonical log
line. Outputs are planned and recorded in the ledger before they are written, so a crash at
any point is finished by running the job again.

The file is opened once, at the start, without following any symlink below the watch root
(``inputs``), and checked against what was queued (size, mtime, then its hash): the
transcriber reads that descriptor, and placement moves that inode, never whatever a name in
the inbox leads to by then. A file that is no longer as queued (gone, replaced, a symlink now)
ends the job as ``vanished`` with nothing done to what is there.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from mimo_watchd import backoff, claimguard, crashpoints, placement, records
from mimo_watchd.billing import Price
from mimo_watchd.config import ApiSettings, HookSettings, NotifySettings, Settings, WatchSettings
from mimo_watchd.errors import (
    CrashLoopError,
    JobError,
    LeaseLostError,
    MimoWatchdError,
    SourceChangedError,
)
from mimo_watchd.inputs import InputFile
from mimo_watchd.ledger import Job, Ledger, State
from mimo_watchd.records import Failed, Record, Skipped, Transcribed
from mimo_watchd.transcription import Journal, TranscriptResult

log = structlog.get_logger("mimo_watchd.jobs")


class Transcriber(Protocol):
    """Turns an opened file into a transcript, keeping every paid answer in ``journal`` first
    (reading ``source`` through its descriptor, never by its name); ``subtitles`` cuts its
    clips for subtitle cues."""

    def transcribe(self, source: InputFile, *, sha256: str, language: str, journal: Journal,
                   on_chunk: Callable[[], None], subtitles: bool) -> TranscriptResult: ...


class HookSink(Protocol):
    """Where finished jobs' hooks are handed over (``HookRunner``); must never block."""

    def submit(self, hook: HookSettings, outcome: str, payload: Mapping[str, Any],
               paths: Mapping[str, str]) -> bool: ...


class MessageSink(Protocol):
    """Where finished jobs' messages are handed over (``messaging.Messenger``); never blocks."""

    def submit(self, notify: NotifySettings, record: Record, watch: str) -> bool: ...


class BillSink(Protocol):
    """The day's bill (``billing.Bill``): counts each paid answer, and says when the daily
    budget stops API work (``BudgetReachedError``)."""

    def add(self, usage: Mapping[str, Any] | None) -> None: ...

    def require(self, api: ApiSettings) -> None: ...


class JobMetrics(Protocol):
    def observe_job(self, outcome: str, seconds: float | None = None,
                    fields: Mapping[str, Any] | None = None) -> None: ...


def _no_progress() -> None:
    """The default progress callback: nobody watches for hung jobs."""


@dataclass(frozen=True)
class JobContext:
    """Everything one job may use, fixed when it is claimed (a reload never changes it)."""

    settings: Settings
    watch: WatchSettings  # the job's watch: where its outputs go, its hooks, its language
    ledger: Ledger
    transcriber: Transcriber
    hooks: HookSink
    metrics: JobMetrics
    started_at: float  # time.time() the daemon started: older temp files are a crash's
    clock: Callable[[], float] = time.monotonic
    progress: Callable[[], None] = _no_progress  # the job moved forward (a chunk finished)
    messages: MessageSink | None = None  # None: no watch sends messages (tests)
    bill: BillSink | None = None  # None: no budget, nothing tallied (tests)


@dataclass(frozen=True)
class Outcome:
    job_id: int
    # done | duplicate | skipped | failed | retry | paused | vanished; in a fleet also
    # elsewhere (another host finished the file) and lost (this process lost the job's claim)
    outcome: str
    error: MimoWatchdError | None = None  # what ended the attempt (pause, retry, failure)


class _JobJournal:
    """The transcriber's view of the ledger journal for one job."""

    def __init__(self, ledger: Ledger, job: Job, variant: str, own_only: bool,
                 bill: BillSink | None = None, api: ApiSettings | None = None) -> None:
        self.ledger = ledger
        self.job = job
        self.variant = variant
        self.own_only = own_only
        self.bill = bill
        self.api = api

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The journaled answer for ``key``; when there is none a request follows, so the
        daily budget is asked first (BudgetReachedError when it is spent)."""
        raw = self.ledger.lookup_response(sha256=self.job.sha256, variant=self.variant,
                                          span=key, job_id=self.job.id if self.own_only else None)
        if raw is None and self.bill is not None and self.api is not None:
            self.bill.require(self.api)
        return raw

    def record(self, key: str, raw: dict[str, Any]) -> None:
        try:
            self.ledger.record_response(sha256=self.job.sha256, variant=self.variant, span=key,
                                        job_id=self.job.id, raw=raw)
        finally:
            if self.bill is not None:  # paid, even when the ledger could not keep it
                self.bill.add(raw.get("usage"))
        crashpoints.reached("journaled")


class JobRunner:
    """Runs claimed jobs to their outcome with what its context gives it, and nothing else."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx

    def run(self, job: Job) -> Outcome:
        """Runs the job; every attempt ends in an outcome, whatever is raised inside."""
        return self._held(job, lambda: self._attempt(job, self.ctx.clock()))

    def fail(self, job: Job, error: MimoWatchdError) -> Outcome:
        """Fails the job now: its file goes to failed_dir with ``NAME.error.json``."""
        return self._held(job, lambda: self._fail(job, error, self.ctx.clock()))

    def _held(self, job: Job, body: Callable[[], Outcome]) -> Outcome:
        """``body()`` in the job's context: its path and id in every log line, its requests
        sent only while its claim holds. A job whose claim is lost (a fleet's ledger) ends
        ``lost`` with nothing more sent or written: whoever takes it over next finishes it."""
        with (structlog.contextvars.bound_contextvars(path=job.path, job=job.id),
              claimguard.bound(lambda seconds: self.ctx.ledger.ensure_held(job.id, seconds))):
            try:
                return body()
            except LeaseLostError as exc:
                log.warning("job.lease_lost", reason=exc.reason)
                return Outcome(job.id, "lost", exc)

    def _attempt(self, job: Job, started: float) -> Outcome:
        try:
            return self._run(job, started)
        except LeaseLostError:
            raise
        except MimoWatchdError as exc:
            return self._attempt_failed(job, exc, started)
        except OSError as exc:
            # Disk full, permissions, a share gone away: worth another try later.
            err = JobError(f"{type(exc).__name__}: {exc}")
            err.retryable = True
            return self._attempt_failed(job, err, started)
        except Exception as exc:
            log.exception("job.internal_error")
            return self._fail(job, JobError(f"internal error: {type(exc).__name__}: {exc}"),
                              started)

    def _run(self, job: Job, started: float) -> Outcome:
        ctx = self.ctx
        if job.plan is not None and job.result is not None:
            crashpoints.reached("claimed", job.path)
            plan = placement.Plan.from_dict(job.plan)
            log.info("job.resume", plan=plan.kind)
            # A crash mid-write may have left temp files beside the planned outputs.
            placement.remove_stale_temps(plan, older_than=ctx.started_at)
            with self._reopened(job) as source:
                return self._finish(job, plan, records.from_json(plan.kind, job.result), started,
                                    source, resumed=True)
        limit = ctx.settings.max_interruptions
        if job.interruptions >= limit:
            log.error("job.crash_loop", interruptions=job.interruptions)
            return self._fail(job, CrashLoopError(
                f"the daemon stopped unexpectedly {job.interruptions} times while processing "
                "this file, with no progress in between (a crash, an out-of-memory kill or a "
                "kill -9; see the system journal); it is not tried again automatically "
                f"(max_interruptions: {limit}); `mimo-watchd retry` queues it again"), started)
        crashpoints.reached("claimed", job.path)
        try:
            source = self._open(job, check_hash=True)
        except SourceChangedError as exc:
            return self._vanished(job, exc.reason)
        with source:
            policy = ctx.settings.on_duplicate
            earlier = (ctx.ledger.done_with_content(job.sha256, exclude_id=job.id)
                       if policy != "transcribe" else None)
            kind = "done"
            naming = self._naming(job)
            record: Record
            if earlier is not None and policy == "skip":
                kind = "skipped"
                record = Skipped(duplicate_of=earlier.final_path)
            elif earlier is not None and earlier.result is not None:
                record = Transcribed.from_json(earlier.result).reused(
                    path="", original_path=job.path, arrived_at=job.arrived_at,
                    price=Price.of(ctx.settings.api))
            else:
                # Where it goes is rendered first: a template that cannot name this file fails
                # it before anything is paid.
                placement.layout(ctx.watch, source.path, kind, naming)
                result = self._transcribe(job, source)
                record = Transcribed.from_result(result, path="", original_path=job.path,
                                                 arrived_at=job.arrived_at,
                                                 price=Price.of(ctx.settings.api))
            # Names are chosen once the transcript exists: free now, and written right away.
            plan = placement.choose(ctx.watch, source.path, kind, identity=source.identity,
                                    sha256=job.sha256, naming=naming)
            record = records.moved_to(record, plan.audio_dest)
            ctx.ledger.set_plan(job.id, plan.to_dict(), record.to_json())
            return self._finish(job, plan, record, started, source)

    def _naming(self, job: Job) -> placement.Naming:
        """What the watch's path templates get for this file."""
        settings = self.ctx.settings
        return placement.Naming(language=self.ctx.watch.language or settings.api.language,
                                arrived_at=job.arrived_at, timezone=settings.timezone)

    def _open(self, job: Job, *, check_hash: bool) -> InputFile:
        """The job's file, opened safely and checked to be what was queued (its size and
        mtime; with ``check_hash`` its content too); SourceChangedError if it is not."""
        source = InputFile.open(self.ctx.watch.path, Path(job.path))
        try:
            same = (source.identity.size, source.identity.mtime_ns) == (job.size, job.mtime_ns)
            if same and check_hash:
                same = source.sha256() == job.sha256 and source.unchanged()
            if not same:
                raise SourceChangedError("it changed after it was queued; the new content is "
                                         "queued as its own job")
        except BaseException:
            source.close()
            raise
        return source

    @contextlib.contextmanager
    def _reopened(self, job: Job) -> Iterator[InputFile | None]:
        """The job's file opened again for a resumed plan, or None when it cannot be (moved
        before the crash, gone, or a symlink now); placement checks it is the same file."""
        try:
            source = InputFile.open(self.ctx.watch.path, Path(job.path))
        except SourceChangedError:
            yield None
            return
        with source:
            yield source

    def _vanished(self, job: Job, reason: str, **fields: Any) -> Outcome:
        """Ends a job whose file is no longer there as it was: nothing is touched. A file
        another host of the fleet finished meanwhile is no failure here."""
        other = self.ctx.ledger.taken_elsewhere(job)
        if other is not None:
            self.ctx.ledger.finish(job.id, State.DONE, final_path=other.final_path,
                                   outcome="elsewhere")
            log.info("job.elsewhere", dest=other.final_path, by_job=other.id)
            return Outcome(job.id, "elsewhere")
        self.ctx.ledger.finish(job.id, State.FAILED, final_path=None, outcome="vanished",
                               error=reason)
        log.warning("job.vanished", reason=reason, **fields)
        return Outcome(job.id, "vanished")

    def _transcribe(self, job: Job, source: InputFile) -> TranscriptResult:
        settings = self.ctx.settings
        language = self.ctx.watch.language or settings.api.language
        journal = _JobJournal(self.ctx.ledger, job, f"{settings.api.model}|{language}",
                              own_only=settings.on_duplicate == "transcribe",
                              bill=self.ctx.bill, api=settings.api)
        return self.ctx.transcriber.transcribe(source, sha256=job.sha256, language=language,
                                               journal=journal, on_chunk=self.ctx.progress,
                                               subtitles=self.ctx.watch.subtitles)

    def _finish(self, job: Job, plan: placement.Plan, record: Record, started: float,
                source: InputFile | None, *, resumed: bool = False) -> Outcome:
        ctx = self.ctx

        def record_plan(step: placement.Plan, document: dict[str, Any]) -> None:
            ctx.ledger.set_plan(job.id, step.to_dict(), document)

        placed = placement.carry_out(plan, record, source, resuming=job.plan is not None,
                                     record_plan=record_plan,
                                     before_write=lambda: ctx.ledger.ensure_held(job.id))
        if placed.audio is None:
            return self._vanished(job, (
                "it was rewritten while it was processed: the audio as processed exists "
                "nowhere any more, so no outputs were written (the result is kept in the "
                "ledger); the new content is its own job") if source is not None else (
                "it disappeared before it was moved; no outputs were written"))
        dest = str(placed.audio)
        failed = isinstance(record, Failed)
        ctx.ledger.finish(job.id, State.FAILED if failed else State.DONE, final_path=dest,
                          outcome=record.outcome,
                          error=record.reason if isinstance(record, Failed) else None,
                          error_doc=placed.document if failed else None)
        latency = ctx.clock() - started
        line = {"outcome": record.outcome, "dest": dest, "reason": None, **record.log_fields(),
                "attempts": job.attempts, "latency_seconds": round(latency, 3),
                "resumed": resumed}
        if failed:
            log.error("job.failed", **line)
        else:
            log.info("job.done", **line)
        ctx.metrics.observe_job(record.outcome, latency, record.log_fields())
        hook = ctx.watch.on_failure if failed else ctx.watch.on_success
        if hook is not None:
            paths = {"source": job.path, "audio": dest,
                     **{k: str(v) for k, v in placed.files.items()}}
            ctx.hooks.submit(hook, record.outcome, placed.document, paths)
        if ctx.watch.notify is not None and ctx.messages is not None:
            ctx.messages.submit(ctx.watch.notify, records.moved_to(record, dest),
                                ctx.watch.path.name)
        return Outcome(job.id, record.outcome)

    def _attempt_failed(self, job: Job, exc: MimoWatchdError, started: float) -> Outcome:
        """An attempt ended with ``exc``: pause (the attempt does not count), retry, or fail."""
        settings = self.ctx.settings
        if exc.pauses:
            self.ctx.ledger.requeue(job.id, error=exc.reason, refund_attempt=True)
            log.error("job.paused", reason=exc.reason, http_status=getattr(exc, "status", None))
            return Outcome(job.id, "paused", exc)
        if exc.retryable and job.attempts < settings.max_attempts:
            delay = backoff.delay(job.attempts, initial=settings.retry_delay_seconds)
            self.ctx.ledger.requeue(job.id, delay=delay, error=exc.reason)
            log.warning("job.retry", attempt=job.attempts, reason=exc.reason,
                        retry_in_seconds=round(delay, 1), max_attempts=settings.max_attempts)
            return Outcome(job.id, "retry", exc)
        return self._fail(job, exc, started)

    def _fail(self, job: Job, exc: MimoWatchdError, started: float) -> Outcome:
        """The one way a job fails: plan the failed folder, record, write the error, move."""
        try:
            source = self._open(job, check_hash=False)
        except SourceChangedError as gone:
            return self._vanished(job, gone.reason, failure=exc.reason)
        with source:
            plan = placement.choose(self.ctx.watch, source.path, "failed",
                                    identity=source.identity, sha256=job.sha256)
            record = Failed.from_error(exc, path=plan.audio_dest, original_path=job.path,
                                       attempts=job.attempts, sha256=job.sha256)
            self.ctx.ledger.set_plan(job.id, plan.to_dict(), record.to_json())
            return self._finish(job, plan, record, started, source)
