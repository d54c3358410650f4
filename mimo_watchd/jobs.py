"""How one claimed job runs: transcribe (or reuse), plan, write, move, record; or fail safely.

The loop around it lives in ``daemon``; this module owns the decisions about one file:
duplicate policy, what counts as retryable, when the daemon must pause, and the canonical log
line. Outputs are planned and recorded in the ledger before they are written, so a crash at
any point is finished by running the job again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from mimo_watchd import crashpoints, placement
from mimo_watchd.errors import (
    CrashLoopError,
    IncompleteAudioError,
    JobError,
    MimoWatchdError,
    OperatorError,
)
from mimo_watchd.ledger import Job, State
from mimo_watchd.outputs import error_document, transcript_document
from mimo_watchd.transcription import FileTranscriber

if TYPE_CHECKING:
    from mimo_watchd.daemon import Daemon

log = structlog.get_logger("mimo_watchd.jobs")


@dataclass(frozen=True)
class Outcome:
    job_id: int
    outcome: str  # done | duplicate | skipped | failed | retry | paused | vanished
    paused_reason: str | None = None


class _JobJournal:
    """The pipeline's view of the ledger journal for one job."""

    def __init__(self, daemon: Daemon, job: Job, variant: str, own_only: bool) -> None:
        self.ledger = daemon.ledger
        self.job = job
        self.variant = variant
        self.own_only = own_only

    def lookup(self, key: str) -> dict[str, Any] | None:
        return self.ledger.lookup_response(sha256=self.job.sha256, variant=self.variant,
                                           span=key, job_id=self.job.id if self.own_only else None)

    def record(self, key: str, raw: dict[str, Any]) -> None:
        self.ledger.record_response(sha256=self.job.sha256, variant=self.variant, span=key,
                                    job_id=self.job.id, raw=raw)
        crashpoints.reached("journaled")


class JobRunner:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    def run(self, job: Job) -> Outcome:
        started = time.monotonic()
        try:
            return self._run(job, started)
        except OperatorError as exc:
            self.d.ledger.requeue(job.id, error=exc.reason, refund_attempt=True)
            log.error("job.paused", path=job.path, reason=exc.reason, http_status=exc.status)
            return Outcome(job.id, "paused", paused_reason=exc.reason)
        except MimoWatchdError as exc:
            if exc.retryable and job.attempts < self.d.settings.max_attempts:
                return self._retry(job, exc)
            return self._fail(job, exc, started)
        except OSError as exc:
            # Disk full, permissions, a share gone away: worth another try later.
            err = JobError(f"{type(exc).__name__}: {exc}")
            err.retryable = True
            if job.attempts < self.d.settings.max_attempts:
                return self._retry(job, err)
            return self._fail(job, err, started)
        except Exception as exc:
            log.exception("job.internal_error", path=job.path)
            return self._fail(job, JobError(f"internal error: {type(exc).__name__}: {exc}"),
                              started)

    def _run(self, job: Job, started: float) -> Outcome:
        watch = self.d.watch_for(job.watch)
        if job.plan is not None and job.result is not None:
            crashpoints.reached("claimed", job.path)
            plan = placement.Plan.from_dict(job.plan)
            log.info("job.resume", path=job.path, plan=plan.kind)
            # A crash mid-write may have left temp files beside the planned outputs.
            placement.remove_stale_temps(plan, older_than=self.d.started)
            return self._finish(job, plan, job.result, started, resumed=True)
        limit = self.d.settings.max_interruptions
        if job.interruptions >= limit:
            log.error("job.crash_loop", path=job.path, interruptions=job.interruptions)
            return self._fail(job, CrashLoopError(
                f"the daemon stopped unexpectedly {job.interruptions} times while processing "
                "this file, with no progress in between (a crash, an out-of-memory kill or a "
                "kill -9; see the system journal); it is not tried again automatically "
                f"(max_interruptions: {limit}); `mimo-watchd retry` queues it again"), started)
        crashpoints.reached("claimed", job.path)
        source = Path(job.path)
        if not source.exists():
            self.d.ledger.finish(job.id, State.FAILED, final_path=None, outcome="vanished",
                                 error="the file disappeared before it was processed")
            log.warning("job.vanished", path=job.path)
            return Outcome(job.id, "vanished")
        policy = self.d.settings.on_duplicate
        earlier = self.d.ledger.done_with_content(job.sha256, exclude_id=job.id) \
            if policy != "transcribe" else None
        if earlier is not None and policy == "skip":
            plan = placement.choose(watch, source, "skipped")
            skipped: dict[str, Any] = {"duplicate_of": earlier.final_path}
            self.d.ledger.set_plan(job.id, plan.to_dict(), skipped)
            return self._finish(job, plan, skipped, started)
        doc: dict[str, Any]
        if earlier is not None and earlier.result is not None:
            doc = dict(earlier.result)
            doc["duplicate_of"] = earlier.result.get("source", {}).get("path")
        else:
            doc = self._transcribe(job, watch, source)
        plan = placement.choose(watch, source, "done")
        doc["source"] = {**doc["source"], "path": plan.audio_dest, "original_path": job.path}
        doc.setdefault("timing", {})["arrived_at"] = job.arrived_at
        self.d.ledger.set_plan(job.id, plan.to_dict(), doc)
        return self._finish(job, plan, doc, started)

    def _transcribe(self, job: Job, watch: Any, source: Path) -> dict[str, Any]:
        settings = self.d.settings
        language = watch.language or settings.api.language
        journal = _JobJournal(self.d, job, f"{settings.api.model}|{language}",
                              own_only=settings.on_duplicate == "transcribe")
        runner = FileTranscriber(self.d.client, settings.audio, language=language,
                                 journal=journal,
                                 on_chunk=lambda _c: self.d.note_progress(job.id))
        result = runner.run(source, sha256=job.sha256)
        return transcript_document(result, source_path=source, original_path=source,
                                   arrived_at=job.arrived_at)

    def _finish(self, job: Job, plan: placement.Plan, doc: dict[str, Any], started: float,
                *, resumed: bool = False) -> Outcome:
        where = placement.carry_out(plan, doc)
        state = State.FAILED if plan.kind == "failed" else State.DONE
        outcome = {"done": "duplicate" if "duplicate_of" in doc else "done",
                   "skipped": "skipped", "failed": "failed"}[plan.kind]
        self.d.ledger.finish(job.id, state, final_path=str(where) if where else None,
                             outcome=outcome, error=doc.get("reason") if plan.kind == "failed"
                             else None, error_doc=doc if plan.kind == "failed" else None)
        usage = doc.get("usage") or {}
        log.info("job.done" if state is State.DONE else "job.failed", path=job.path,
                 outcome=outcome, dest=str(where) if where else None,
                 audio_seconds=(doc.get("source") or {}).get("duration_seconds"),
                 billed_seconds=usage.get("seconds"), tokens=usage.get("total_tokens"),
                 chunks=len(doc.get("chunks") or []), attempts=job.attempts,
                 api_calls=sum(c.get("attempts", 0) for c in doc.get("chunks") or []),
                 latency_seconds=round(time.monotonic() - started, 3), resumed=resumed,
                 reason=doc.get("reason") if plan.kind == "failed" else None)
        self.d.metrics.observe_job(outcome, time.monotonic() - started)
        self._hook(job, plan, doc, outcome, where)
        return Outcome(job.id, outcome)

    def _hook(self, job: Job, plan: placement.Plan, doc: dict[str, Any], outcome: str,
              where: Path | None) -> None:
        """Runs the watch's on_success/on_failure hook in the background (never blocks)."""
        watch = self.d.watch_for(job.watch)
        hook = watch.on_failure if plan.kind == "failed" else watch.on_success
        if hook is None:
            return
        paths = {"source": job.path, "audio": str(where or plan.audio_dest),
                 **plan.sidecar_paths}
        self.d.hooks.submit(hook, outcome, doc, paths)

    def _retry(self, job: Job, exc: MimoWatchdError) -> Outcome:
        delay = self.d.settings.retry_delay_seconds * 2 ** max(0, job.attempts - 1)
        self.d.ledger.requeue(job.id, delay=delay, error=exc.reason)
        log.warning("job.retry", path=job.path, attempt=job.attempts, reason=exc.reason,
                    retry_in_seconds=round(delay, 1),
                    max_attempts=self.d.settings.max_attempts)
        return Outcome(job.id, "retry")

    def _fail(self, job: Job, exc: MimoWatchdError, started: float) -> Outcome:
        source = Path(job.path)
        watch = self.d.watch_for(job.watch)
        doc = error_document(exc, source_path=source, original_path=source,
                             attempts=job.attempts, sha256=job.sha256)
        plan = placement.choose(watch, source, "failed")
        doc["source"]["path"] = plan.audio_dest
        self.d.ledger.set_plan(job.id, plan.to_dict(), doc)
        return self._finish(job, plan, doc, started)

    def fail_incomplete(self, job: Job, reason: str) -> Outcome:
        """A file that never became whole audio within the timeout goes to failed_dir."""
        return self._fail(job, IncompleteAudioError(f"incomplete audio: {reason}"),
                          time.monotonic())

