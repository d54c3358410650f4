"""The daemon: intake (watch -> settle -> ledger), a worker pool, pause/resume, reload, stop.

Threads: watchdog observers feed the ``Settler``; one scheduler thread turns settled files into
ledger jobs (``intake``) and, while the state folder is full, tries to write what the ledger
holds; ``max_concurrency`` workers claim due jobs, through the ``PauseGate``, and run each with
a ``JobRunner`` given the job's own ``JobContext``. The main thread waits for signals, checks
that the ledger file is still the one opened, and writes the status. Every state change goes
through the ledger first, so a ``kill -9`` at any moment is recovered at the next start without
loss or a second payment.

What stops the daemon, what pauses it and how it says so: a ledger deleted, replaced or found
corrupt stops it (exit 78); a full state folder pauses intake and work (``ledger.guard``); an
operator problem or an outage pauses API work (``PauseGate``). Logs, ``status.json`` (so
``mimo-watchd status``), ``/healthz`` and the systemd STATUS line all give the reason and since
when (``runstatus``).
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import io
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from mimo_watchd import audio, days, logsetup, retention, runstatus
from mimo_watchd.billing import Bill
from mimo_watchd.client import MimoClient
from mimo_watchd.clients import Clients
from mimo_watchd.config import (
    Secret,
    Settings,
    WatchSettings,
    load,
    require_consistent,
    resolve_api_key,
)
from mimo_watchd.config.changes import applied, changed
from mimo_watchd.config.checks import hook_problems
from mimo_watchd.errors import (
    ConfigError,
    LedgerError,
    LedgerFullError,
    LedgerLostError,
    MimoWatchdError,
)
from mimo_watchd.exitcodes import ExitCode, killed_by
from mimo_watchd.fsutil import remove_stale_temps
from mimo_watchd.health import Health
from mimo_watchd.hooks import HookRunner
from mimo_watchd.inputs import probe_below
from mimo_watchd.instance import InstanceLock
from mimo_watchd.jobs import JobContext, JobRunner, Outcome
from mimo_watchd.ledger import Job, open_ledger
from mimo_watchd.ledger.guard import GuardedLedger
from mimo_watchd.messaging import Messenger
from mimo_watchd.metrics import Metrics, MetricsServer, serve
from mimo_watchd.notify import Notifier, WatchdogPinger
from mimo_watchd.pausegate import PauseGate
from mimo_watchd.prepgate import PrepareGate
from mimo_watchd.scheduler import Scheduler
from mimo_watchd.settle import Settler
from mimo_watchd.transcription import ClientTranscriber
from mimo_watchd.watcher import WatchSet

log = structlog.get_logger("mimo_watchd.daemon")

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
# Outcomes after which the file has left its watch: the settler may take that path again
# ("elsewhere": another host of a fleet took it).
_GONE_FROM_WATCH = frozenset({"done", "duplicate", "skipped", "failed", "vanished",
                              "elsewhere"})


class Daemon:
    """Owns every long-lived part; ``run`` blocks until a signal (or, with ``once``, idle).

    Made after the instance lock is taken: it resolves the key, binds the metrics address and
    opens the ledger (every page read) before anything runs, so each of those problems ends the
    start with one line and its exit code."""

    def __init__(self, settings: Settings, *, once: bool = False,
                 config_path: Path | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.once = once
        self.key = resolve_api_key(settings.api)
        self.metrics = Metrics()
        self.health = Health(stall_seconds=lambda: self.settings.worker_stall_seconds,
                             watchers_alive=lambda: self.watchset.alive(),
                             stopping=lambda: self.stop_intake.is_set(),
                             paused=lambda: self.status.paused())
        self.metrics_server = self._listen(settings)
        try:
            self.ledger = GuardedLedger(open_ledger(settings.state_dir, settings.ledger,
                                                    thorough=True),
                                        retry_every=settings.pause_probe_seconds)
        except BaseException:
            if self.metrics_server is not None:
                self.metrics_server.stop()
            raise
        self.bill = Bill(days.zone(settings.timezone))
        self.clients = Clients(self._new_client(settings, self.key))
        # Every job's clips are decoded through one gate: the CPUs' share (prepgate).
        self.prepare_gate = PrepareGate()
        # Held while a reload swaps settings and client, and while a job's context is taken.
        self.config_lock = threading.Lock()
        self.gate = PauseGate(settings.pause_probe_seconds)
        self.stop_intake = threading.Event()
        self.stop_workers = threading.Event()
        self.wake = threading.Condition()
        # Every watch ever configured: a job queued before a reload removed its watch still
        # needs to know where its outputs go.
        self.watches = {str(w.path): w for w in settings.watches}
        # The container probe reads each file through a descriptor opened below its watch
        # root, so a folder swapped for a symlink while the file settles is never followed.
        self.settler = Settler(probe=self._probe,
                               incomplete_timeout=settings.incomplete_timeout_seconds)
        self.scheduler = Scheduler(ledger=self.ledger, settler=self.settler,
                                   watches=lambda: self.settings.watches,
                                   fail_now=self._execute, on_ledger_error=self._ledger_failed,
                                   changed=self._changed)
        self.watchset = WatchSet(settings.watches, self.scheduler.offer,
                                 rescan_interval=settings.rescan_interval_seconds,
                                 on_ignored=self._ignored)
        self.signals = 0
        self.exit_code = ExitCode.OK
        self.failed_files = 0  # files that went to a failed folder in this run (--once: exit 1)
        self.started = time.time()
        self.scan_done = threading.Event()
        self.notifier = Notifier.from_env()
        self.pinger = WatchdogPinger(self.notifier, self.health.alive)
        self.hooks = HookRunner(strip_env={settings.api.api_key_env},
                                on_failure=self.metrics.observe_hook_failure)
        self.messenger = Messenger(on_sent=self.metrics.observe_message)
        self.prune_due = threading.Event()  # retention runs now (start, reload, stop: wake)
        self.status = runstatus.StatusWriter(self)

    def _listen(self, settings: Settings) -> MetricsServer | None:
        """Binds /metrics and /healthz first: a taken address ends the start right away."""
        if not settings.metrics.listen:
            return None
        try:
            return serve(settings.metrics.listen, self.metrics, self.health.healthy)
        except OSError as exc:
            raise ConfigError([f"metrics.listen: cannot listen on {settings.metrics.listen}: "
                               f"{exc.strerror or exc}"], self._source()) from exc

    def _new_client(self, settings: Settings, key: Secret) -> MimoClient:
        # A fleet's daemons share one budget: the windows live in the shared ledger.
        limiter = self.ledger.shared_limiter(settings.api, key)
        client = MimoClient(settings.api, key, limiter=limiter)
        client.on_attempt = self._on_api_attempt
        return client

    def _on_api_attempt(self, status: str, usage: dict[str, Any] | None, retry: bool) -> None:
        self.metrics.observe_api(status, usage, retry=retry)
        if status == "200":
            api = self.settings.api
            self.metrics.observe_cost(usage, api.price_per_hour, api.currency)

    # --- life cycle ---------------------------------------------------------------------

    def prepare_folders(self) -> None:
        problems = []
        for i, w in enumerate(self.settings.watches):
            if not w.path.is_dir():
                # An unmounted share at boot must not stop the service for good: the watcher
                # retries every second, status shows why, and the log says it loudly.
                log.error("watch.missing", watch=f"watches[{i}]", path=str(w.path))
            for key in ("processed_dir", "failed_dir", "output_dir"):
                folder = getattr(w, key)
                if folder is None:
                    continue
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    problems.append(f"watches[{i}].{key}: cannot create {folder}: "
                                    f"{exc.strerror}")
        if problems:
            raise ConfigError(problems, self._source())
        for problem in hook_problems(self.settings):
            log.warning("config.hook_unusable", problem=problem)

    def _source(self) -> str | None:
        return str(self.config_path) if self.config_path else None

    def run(self) -> int:
        """Runs until stopped; returns the process exit code."""
        try:
            require_consistent(self.settings, self._source())
            self.prepare_folders()
            recovered = self.ledger.recover(unclean=True)
            self.bill.load(self.ledger, days.zone(self.settings.timezone))
            remove_stale_temps(self.settings.state_dir, older_than=self.started)  # status.json's
            if self.once:
                self.ledger.reset_retry_times()
        except BaseException:
            if self.metrics_server is not None:
                self.metrics_server.stop()
            self.clients.close()
            self.ledger.close()
            raise
        log.info("daemon.start", pid=os.getpid(), watches=list(self.watches),
                 recovered_jobs=recovered, once=self.once,
                 concurrency=self.settings.api.max_concurrency)
        try:
            faulthandler.enable()  # a watchdog SIGABRT then prints every thread's stack
            self._install_signals()
            self._start_thread("scheduler", lambda: self.scheduler.run(self.stop_intake))
            for i in range(self.settings.api.max_concurrency):
                self._start_thread(f"worker-{i}", self._worker)
            self._start_thread("retention", self._retention)
            self.notifier.extend_timeout(600)  # the initial scan of a huge backlog may take long
            self.watchset.start()
            self.scan_done.set()
            self.health.serving.set()
            self.pinger.start()  # only now: its first health check must see the watchers up
            self.status.write()
            self.notifier.ready(self.status.line())
            log.info("daemon.ready", watches=len(self.settings.watches),
                     startup_seconds=round(time.time() - self.started, 3))
            while not self.stop_intake.is_set():
                self.stop_intake.wait(1.0)
                self._verify_ledger()
                self.status.write()
                if self.once and self._idle():
                    log.info("daemon.once_done")
                    self.stop_intake.set()
                    self.scheduler.arrived.set()
        finally:
            self._shutdown()
        if self.once and self.exit_code == ExitCode.OK and self.failed_files:
            self.exit_code = ExitCode.FAILED
        return self.exit_code

    def _idle(self) -> bool:
        if self.gate.reason is not None:
            self.exit_code = ExitCode.API
            log.error("daemon.once_paused", reason=self.gate.reason)
            return True
        counts = self.ledger.counts()
        return (self.scan_done.is_set() and self.settler.pending() == 0
                and not self.scheduler.unadmitted and self.ledger.problem is None
                and counts["QUEUED"] == 0 and counts["PROCESSING"] == 0 and self.health.jobs == 0)

    def _start_thread(self, name: str, target: Any) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self.health.threads.append(t)

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(
            target=self.reload, name="reload", daemon=True).start())

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals > 1:
            # Second signal: leave now. PROCESSING jobs are recovered at the next start.
            os.write(1, b'{"event": "daemon.exit_now", "level": "warning"}\n')
            os._exit(killed_by(signum))
        log.info("daemon.stopping", signal=signal.Signals(signum).name)
        self.stop_intake.set()
        self.scheduler.arrived.set()

    def _shutdown(self) -> None:
        self.notifier.stopping("stopping: finishing in-flight jobs")
        self.watchset.stop()
        deadline = time.monotonic() + self.settings.shutdown_timeout_seconds
        self.stop_workers.set()
        self.prune_due.set()
        with self.wake:
            self.wake.notify_all()
        threads = self.health.threads
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        self.clients.close()
        for t in threads:
            t.join(5.0)
        self.hooks.close(max(1.0, deadline - time.monotonic()))
        self.messenger.close(max(1.0, deadline - time.monotonic()))
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self.ledger.problem is not None and not self.ledger.flush():
            answers, writes = self.ledger.held()
            log.error("ledger.held_lost", reason=self.ledger.problem, answers=answers,
                      writes=writes, consequence="these answers are paid again after the "
                      "restart; the jobs themselves are recovered from the ledger")
        try:
            requeued: int | None = self.ledger.recover(unclean=False)
        except LedgerError as exc:
            log.error("ledger.error", reason=exc.reason)
            requeued = None
        log.info("daemon.stopped", requeued_jobs=requeued, abandoned_threads=stuck)
        self.status.write(stopped=True)
        self.pinger.stop()
        self.ledger.close()

    # --- the ledger's health ------------------------------------------------------------

    def _verify_ledger(self) -> None:
        try:
            self.ledger.verify()
        except LedgerError as exc:
            self._ledger_failed(exc)

    def _ledger_failed(self, exc: LedgerError) -> None:
        """The one policy for a ledger that fails outside a job: lost -> stop; full -> the
        guard holds and pauses (the scheduler announces it and retries); else logged."""
        if isinstance(exc, LedgerLostError):
            if not self.stop_intake.is_set():
                log.error("ledger.lost", reason=exc.reason, exit_code=int(ExitCode.CONFIG))
            self.exit_code = ExitCode.CONFIG
            self.stop_intake.set()
            self.scheduler.arrived.set()
        elif not isinstance(exc, LedgerFullError):
            log.error("ledger.error", reason=exc.reason)

    # --- intake -------------------------------------------------------------------------

    def _probe(self, path: Path) -> object:
        """The settler's container probe, through a descriptor opened below the file's watch."""
        return probe_below([w.path for w in self.watches.values()], audio.probe, path)

    def _ignored(self, path: Path, reason: str) -> None:
        log.debug("intake.ignored", path=str(path), reason=reason)
        self.metrics.observe_ignored(reason)

    def _changed(self) -> None:
        """Something workers wait for may have happened: wake them."""
        with self.wake:
            self.wake.notify_all()

    # --- work ---------------------------------------------------------------------------

    def _worker(self) -> None:
        while not self.stop_workers.is_set():
            try:
                job = self._next_job()
            except LedgerError as exc:
                self._ledger_failed(exc)
                job = None
            if job is None:
                with self.wake:
                    self.wake.wait(self._idle_wait())
                continue
            self._execute(job)

    def _context(self, job: Job) -> tuple[JobContext, MimoClient]:
        """The job's context: the settings, client and watch of now, for the whole job (the
        client is the caller's to release)."""
        with self.config_lock:
            watch = self.watch_for(job.watch)
            settings, client = self.settings, self.clients.acquire()
        ctx = JobContext(
            settings=settings, watch=watch, ledger=self.ledger,
            transcriber=ClientTranscriber(client, settings.audio, self.prepare_gate),
            hooks=self.hooks, metrics=self.metrics, started_at=self.started,
            progress=lambda: self.health.progressed(job.id), messages=self.messenger,
            bill=self.bill)
        return ctx, client

    def _execute(self, job: Job, failure: MimoWatchdError | None = None) -> Outcome:
        """Runs a claimed job, or fails it with ``failure`` (worker and scheduler alike), inside
        the progress accounting, then lets the pause gate and the status see its outcome."""
        self.health.job_started(job.id)
        client: MimoClient | None = None
        try:
            ctx, client = self._context(job)
            runner = JobRunner(ctx)
            outcome = runner.run(job) if failure is None else runner.fail(job, failure)
        except LedgerLostError as exc:
            self._ledger_failed(exc)  # the job stays PROCESSING: the next start recovers it
            outcome = Outcome(job.id, "retry")
        except LedgerFullError as exc:
            # A write that cannot wait (a plan) found no space: the job waits in the queue.
            log.warning("job.held", path=job.path, reason=exc.reason)
            self._requeue(job, exc.reason, refund=True)
            outcome = Outcome(job.id, "paused", exc)
        except Exception:
            # Even failing could not be recorded (e.g. the failed folder is unwritable):
            # keep the job queued rather than lose track of the file.
            log.exception("worker.error", path=job.path)
            self._requeue(job, "internal error while finishing the job")
            outcome = Outcome(job.id, "retry")
        finally:
            self.health.job_ended(job.id)
            if client is not None:
                self.clients.release(client)
        self._after(job, outcome)
        return outcome

    def _retention(self) -> None:
        """The retention thread: prunes at start, every ``retention.INTERVAL`` and whenever
        ``prune_due`` is set (a reload), until the workers stop."""
        self.prune_due.set()
        while True:
            self.prune_due.wait(retention.INTERVAL)
            if self.stop_workers.is_set():
                return
            self.prune_due.clear()
            try:
                retention.prune(self.settings.watches, self.ledger,
                                on_deleted=self.metrics.observe_pruned)
            except LedgerError as exc:
                self._ledger_failed(exc)
            except Exception:
                log.exception("retention.error")

    def _requeue(self, job: Job, error: str, *, refund: bool = False) -> None:
        delay = 0.0 if refund else self.settings.retry_delay_seconds
        try:
            self.ledger.requeue(job.id, delay=delay, error=error, refund_attempt=refund)
        except LedgerError as exc:  # left PROCESSING: recovered at the next start
            self._ledger_failed(exc)

    def _idle_wait(self) -> float:
        if self.ledger.problem is not None:
            return 1.0  # nothing is taken until the scheduler has written what is held
        due = self.ledger.next_due_in()
        wait = 1.0 if due is None else min(1.0, due)
        probe_in = self.gate.next_probe_in()
        if probe_in is not None:
            wait = min(wait, max(0.05, probe_in))
        return max(0.02, wait)

    def _next_job(self) -> Job | None:
        if self.stop_intake.is_set() and not self.once:
            return None  # a stop was asked: finish in-flight jobs only
        if self.ledger.problem is not None:
            return None  # the state folder is full: no new work until it has space
        one_per_content = self.settings.on_duplicate != "transcribe"
        job = self.gate.take(lambda: self.ledger.claim(one_per_content=one_per_content))
        if job is not None and self.gate.probe == job.id:
            log.info("pause.probe", path=job.path)
        return job

    def _after(self, job: Job, outcome: Outcome) -> None:
        if outcome.outcome in _GONE_FROM_WATCH:
            # The file left its path: whatever appears there next (moved back by `retry` or
            # by hand, the same inode and all) is a new arrival.
            self.settler.forget(Path(job.path))
        if outcome.outcome == "failed":
            self.failed_files += 1
        # A full ledger is the guard's pause, not the API's: it has no probe job to wait for.
        error = None if isinstance(outcome.error, LedgerError) else outcome.error
        change = self.gate.finished(outcome.job_id, error)
        if change is not None and change.paused:
            log.error("daemon.paused", reason=change.reason, paused="API work",
                      first_probe_in_seconds=round(self.gate.next_probe_in() or 0.0, 1),
                      probe_every_seconds=self.gate.probe_every)
        elif change is not None:
            log.info("daemon.resumed", paused_seconds=round(change.paused_seconds),
                     paused="API work")
            self._reset_retry_times()
        self.status.write()

    def _reset_retry_times(self) -> None:
        try:
            self.ledger.reset_retry_times()
        except LedgerError as exc:
            self._ledger_failed(exc)

    # --- reload -------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-reads the config and the key; an invalid one is rejected and the old kept.

        Jobs already running keep the settings (and client) they started with. A new key, or
        new API settings, make a new client; while API work is paused the next probe goes at
        once. Options that shape what is built at start keep their values until a restart,
        and the log names them (``config.changes``)."""
        if self.config_path is None:
            return
        self.notifier.reloading()
        try:
            new, waiting = applied(self.settings, load(self.config_path))
            key = resolve_api_key(new.api)
        except ConfigError as exc:
            log.error("reload.rejected", problems=exc.problems, config=str(self.config_path))
            self.notifier.ready(self.status.line())
            return
        for warning in new.warnings:
            log.warning("config.retired_option", detail=warning)
        with self.config_lock:
            old = self.settings
            new_key = key.reveal() != self.key.reveal()
            self.settings = new
            self.watches.update({str(w.path): w for w in new.watches})
            self.gate.probe_every = new.pause_probe_seconds
            self.ledger.retry_every = new.pause_probe_seconds
            if new.api != old.api or new_key:
                self.key = key
                self.clients.replace(self._new_client(new, key))
        if new.log != old.log:
            logsetup.configure(new.log.level, new.log.format, stream=sys.stdout)
        self.watchset.reconfigure(new.watches)
        log.info("reload.done", watches=[str(w.path) for w in new.watches],
                 added=sorted({str(w.path) for w in new.watches} -
                              {str(w.path) for w in old.watches}),
                 removed=sorted({str(w.path) for w in old.watches} -
                                {str(w.path) for w in new.watches}),
                 changed=changed(old, new), api_key="new" if new_key else "unchanged")
        if waiting:
            log.warning("reload.restart_needed", settings=waiting,
                        detail="these keep their old values until the daemon restarts")
        for problem in hook_problems(new):
            log.warning("config.hook_unusable", problem=problem)
        if new.timezone != old.timezone:
            self.bill.load(self.ledger, days.zone(new.timezone))
        self.prune_due.set()  # retention may have changed
        if self.gate.reason is not None:
            self.gate.probe_now()  # the reload may have fixed what paused it
            with self.wake:
                self.wake.notify_all()
        self.status.write()
        self.notifier.ready(self.status.line())

    def watch_for(self, watch_path: str) -> WatchSettings:
        return self.watches[watch_path]


def bound_native_memory() -> None:
    """Keeps multi-MB buffers (encoded chunks, request bodies) out of glibc's heaps.

    glibc raises its mmap threshold after the first large free (up to 32 MB), so the 2-10 MB
    buffers of a long recording are then carved from per-thread heaps that fragment and are not
    given back: +50 MB peak RSS for a 3-hour file at max_concurrency 4 (``python -m bench
    long``). A fixed 1 MiB threshold maps each such buffer and unmaps it when freed.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 1 << 20)


def run(config_path: Path, *, once: bool = False) -> int:
    """``mimo-watchd run``: one daemon per state folder, logging JSON lines to stdout.

    Logs go to stdout (journald and container runtimes collect it; the container issue asks
    for it); stdout carries nothing else here. One-line start errors go to stderr, like every
    command's."""
    settings = load(config_path)
    bound_native_memory()
    if isinstance(sys.stdout, io.TextIOWrapper):
        # As stderr does: a name that is not UTF-8 is logged as \udcXX escapes (still JSON)
        # instead of failing the line.
        sys.stdout.reconfigure(errors="backslashreplace")
    logsetup.configure(settings.log.level, settings.log.format, stream=sys.stdout)
    for warning in settings.warnings:
        log.warning("config.retired_option", detail=warning)
    try:
        lock = InstanceLock.acquire(settings.state_dir)
    except OSError as exc:
        raise ConfigError([f"state_dir: cannot use {settings.state_dir}: "
                           f"{exc.strerror or exc}"], str(config_path)) from exc
    try:
        return Daemon(settings, once=once, config_path=config_path).run()
    finally:
        lock.release()
